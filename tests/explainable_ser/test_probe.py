"""The information ladder (python -m explainable_ser.probe) on the tiny stack."""

from __future__ import annotations

import json
import random
import shutil

import pytest
import torch

from data_modules.datamodule import SpeechDataModule
from explainable_ser import probe
from explainable_ser.analysis import ladder
from explainable_ser.config import load_config
from explainable_ser.training.assembly import build
from explainable_ser.training.preparation import prepare

from conftest import tiny_config


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A tiny model and SynthCraft clips whose ``volume`` label is planted in the audio (every
    second clip scaled down 30x, labelled low) while ``pitch`` gets labels drawn at random."""
    from data_modules.synthcraft import generate

    tmp = tmp_path_factory.mktemp("probe")
    generate(tmp / "corpus", n_train=48, n_dev=2, n_test=32, seed=11, progress=False)
    cfg = tiny_config(
        f"data.corpora.0.dir={tmp / 'corpus'}", f"run_dir={tmp / 'run'}", "model.branch.utterance_context=[descriptor]"
    )
    dm, module = build(cfg, tmp / "run", prepare(cfg, tmp / "run"))
    rng = random.Random(0)

    def plant(clips):
        out = []
        for i, (wave, rec) in enumerate(clips):
            quiet = i % 2 == 1
            rec = {
                **rec,
                "attributes": {
                    **rec["attributes"],
                    "volume": "low" if quiet else "high",
                    "pitch": rng.choice(["low", "high"]),
                },
            }
            out.append((wave * (1 / 30 if quiet else 1.0), rec))
        return out

    train, _ = SpeechDataModule(cfg.data).usable_clips("train_split")
    test, _ = SpeechDataModule(cfg.data).usable_clips("test_split")
    return module.model, plant(train), plant(test)


def test_a_planted_attribute_is_found_and_a_random_one_is_not(planted):
    model, train, test = planted
    s_tr = ladder.model_states(model, train)
    s_te = ladder.model_states(model, test)
    # Every rung of both branches is there, one row per clip, tokens as wide as the LLM.
    for branch in ("content", "descriptor"):
        for rung in ("input", "z", "tokens"):
            assert len(s_tr[f"{branch}/{rung}"]) == len(train)
    assert s_te["descriptor/tokens"][0].shape == (2 * model.llm.get_input_embeddings().weight.shape[1],)
    y = {
        t: ([ladder.target_labels(r)[t] for _, r in train], [ladder.target_labels(r)[t] for _, r in test])
        for t in ("volume", "pitch")
    }
    level = ladder.fit_probe(
        "linear", s_tr["encoder/layer_00"], y["volume"][0], s_te["encoder/layer_00"], y["volume"][1], "volume"
    )
    assert level["score"] >= 0.95 and level["n_test"] == len(test)
    noise = ladder.fit_probe(
        "linear", s_tr["encoder/layer_00"], y["pitch"][0], s_te["encoder/layer_00"], y["pitch"][1], "pitch"
    )
    assert noise["score"] <= 0.75  # random labels: about chance (0.5), nothing to find


def test_unlabelled_targets_are_reported_not_scored():
    res = ladder.fit_probe("linear", [[0.0], [1.0]], [None, None], [[0.5]], ["a"], "emotion")
    assert res["score"] is None and res["n_train"] == 0 and "two classes" in res["reason"]
    res = ladder.fit_probe("trees", [[0.0], [1.0], [float("nan")]], ["a", "b", "a"], [[0.5]], [None], "pitch")
    assert res["score"] is None and res["reason"] == "no labelled test clip"


def test_utterance_context_puts_the_whole_utterance_in_every_frame():
    from explainable_ser.model.bottleneck import DisentanglementBlock

    torch.manual_seed(0)
    block = DisentanglementBlock(2, 4, 8, 3, utterance_context=True).eval()
    layers = torch.randn(2, 1, 10, 4)
    z, _ = block(layers, torch.tensor([10]), sample=False)
    changed = layers.clone()
    changed[:, :, 9] += 5.0  # only the last frame differs
    z2, _ = block(changed, torch.tensor([10]), sample=False)
    assert not torch.allclose(z[0, 0], z2[0, 0])  # the first frame now sees the last one
    plain = DisentanglementBlock(2, 4, 8, 3).eval()
    a, _ = plain(layers, torch.tensor([10]), sample=False)
    b, _ = plain(changed, torch.tensor([10]), sample=False)
    assert torch.allclose(a[0, 0], b[0, 0])  # the paper's block is per frame
    # padding does not leak into the statistics
    padded = torch.cat([layers, torch.randn(2, 1, 3, 4)], dim=2)
    z3, _ = block(padded, torch.tensor([10]), sample=False)
    assert torch.allclose(z3[0, :10], z[0], atol=1e-5)


def test_the_command_writes_the_ladder(trained_run, tmp_path, capsys):
    run_dir, _ = trained_run
    dm = SpeechDataModule(load_config([str(run_dir / "config.yaml")]).data)
    test, _ = dm.usable_clips("test_split")
    # the model's answers, written beside a copy of the run: every emotion right, no pitch stated
    rows = [
        {"id": r["id"], "task": "ser_sed", "emotion": r["emotion"], "caption": "A speaker talks.", "raw": ""}
        for _, r in test
    ]
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    (copy / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert probe.main([str(copy), "--workers", "1", "--out", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "probe.json").read_text())
    assert (tmp_path / "out" / "probe.png").stat().st_size > 0
    assert report["n_test"] == len(test)
    assert "measurements" in report["rungs"] and "descriptor/tokens" in report["rungs"]
    assert report["teacher_forced_task"] == "ser_sed"
    assert report["rungs"]["llm/teacher_forced"]["pitch"]["n_test"] == len(test)
    assert report["rungs"]["answer"]["emotion"]["score"] == 1.0
    assert report["rungs"]["answer"]["pitch"]["score"] == 0.0  # the caption states no pitch
    assert "lost between the best encoder layer and the answer" in capsys.readouterr().out
    assert torch.is_grad_enabled()  # the probe leaves the process as it found it


def test_a_missing_run_directory_is_named(tmp_path, capsys):
    assert probe.main([str(tmp_path / "nope")]) == 2
    assert "run directory not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert probe.main([str(tmp_path / "empty")]) == 2
    assert "final.ckpt" in capsys.readouterr().err


def test_value_slots_find_each_value_and_keep_its_capitalisation():
    target = (
        "Description: High pitch and low volume, a female speaker at a slow pace, emphasizing "
        'the word "ball".\nEmotion: sad'
    )
    slots = ladder.value_slots(target, ["neutral", "happy", "sad", "angry"])
    before, cands, said = slots["pitch"]
    assert before == "Description: " and cands == ["Low", "Normal", "High"] and said == "high"
    before, cands, said = slots["volume"]
    assert before.endswith("High pitch and ") and cands == ["low", "normal", "high"] and said == "low"
    assert slots["gender"][2] == "female" and slots["speed"][2] == "slow"
    before, cands, said = slots["emotion"]
    assert before.endswith("\nEmotion: ") and said == "sad" and cands[2] == "sad"
    # a target that states neither an attribute nor a known label has no slot
    assert ladder.value_slots("Emotion: bored", ["sad"]) == {}


def test_teacher_forced_choice_is_the_most_probable_value_by_a_plain_forward(trained_run):
    from explainable_ser.model.prompts import get_task, render_target
    from explainable_ser.training.assembly import load_trained

    run_dir, _ = trained_run
    cfg, dm, module, _ = load_trained(run_dir / "stage2" / "final.ckpt", [])
    model = module.model.eval()
    clips, _ = dm.usable_clips("test_split")
    labels = list(cfg.training.labels)
    with torch.no_grad():
        got = ladder.teacher_forced_choices(model, clips, "ser_sed", labels)
        task = get_task("ser_sed")
        checked = 0
        for (wave, rec), choice in zip(clips, got):
            slots = ladder.value_slots(render_target(task, rec), labels)
            assert set(choice) == set(slots) and slots  # every stated value got a choice
            lens = torch.tensor([wave.shape[0]])
            speech = model.speech_tokens(
                wave[None], lens, sample_content=False, sample_descriptor=False, zero_descriptor=False
            )
            for name, (before, cands, _) in slots.items():
                # one utterance, one candidate at a time, the whole sequence's log-probability
                scores = []
                for c in cands:
                    t_ids = model.prompts._ids(before + c)
                    embeds, mask, labels_t = model.build_inputs(speech, task, [t_ids])
                    logits = model.llm(inputs_embeds=embeds, attention_mask=mask).logits[0, :-1].float()
                    lab = labels_t[0, 1:]
                    lp = torch.log_softmax(logits, -1)[lab != -100].gather(1, lab[lab != -100][:, None])
                    scores.append(float(lp.sum()))
                best = max(scores)
                assert scores[[c.lower() for c in cands].index(choice[name])] >= best - 1e-4, (name, scores)
                checked += 1
        assert checked >= 2 * len(clips)
    scored = ladder.teacher_forced_scores(got, [ladder.target_labels(r) for _, r in clips])
    assert all(scored[t]["n_test"] == len(clips) for t in ("emotion", "pitch", "volume", "speed", "gender"))


def test_measured_cue_directions_are_targets_scored_where_a_rationale_states_them(tmp_path):
    def rec(i, **directions):
        ev = {cue: {"direction": d, "value": 0.0} for cue, d in directions.items()}
        return {"id": f"u{i}", "emotion": "angry", "attributes": {"evidence": ev}}

    recs = [
        rec(0, volume="high", speed="fast", pitch="normal"),
        rec(1, volume="normal", speed="fast"),
        rec(2, volume="low"),
    ]
    labels = [ladder.target_labels(r) for r in recs]
    assert labels[0]["cue.volume"] == "high" and labels[1]["cue.pitch"] is None and labels[0]["pitch"] is None
    assert ladder.present_targets(labels) == ["emotion", "cue.pitch", "cue.volume", "cue.speed"]
    rows = [
        {"id": "u0", "emotion": "angry", "rationale": "A loud voice and a fast pace: the speaker is angry."},
        {"id": "u1", "emotion": "angry", "rationale": "With a loud voice, the voice sounds angry."},
        {"id": "u2", "emotion": "sad", "rationale": "A slow pace makes the voice sound sad."},
    ]
    preds = tmp_path / "predictions.jsonl"
    preds.write_text("".join(json.dumps(r) + "\n" for r in rows))
    scores = ladder.answer_scores(preds, ["u0", "u1", "u2"], labels, ladder.present_targets(labels))
    assert scores["cue.volume"] == {"score": 0.5, "n_test": 2}  # u0 right, u1 wrong, u2 states none
    assert scores["cue.speed"] == {"score": 1.0, "n_test": 1}  # u2's speed is not measured
    assert scores["cue.pitch"]["score"] is None and scores["emotion"]["n_test"] == 3
    report = {"targets": ladder.present_targets(labels), "rungs": {"answer": scores}, "ladder": {}}
    assert "cue.volume" in ladder.table(report).splitlines()[0]
    # a rationale task states no caption: its attributes are not scored, not counted as misses
    labelled = [{**y, "pitch": "high"} for y in labels]
    assert ladder.answer_scores(preds, ["u0", "u1", "u2"], labelled, ["pitch"])["pitch"]["score"] is None
