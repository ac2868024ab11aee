"""The notebook helpers on hand-made run directories (no training: fast and exact)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from explainable_ser.analysis import curves, explore
from explainable_ser.config import load_config, to_yaml
from explainable_ser.evaluation import emotion, significance
from explainable_ser.evaluation.report import compute_metrics
from explainable_ser.model.prompts import caption_attributes

LABELS = ["neutral", "happy", "sad", "angry"]
REF_ATTRS = {"gender": "male", "pitch": "low", "volume": "high", "speed": "slow", "emphasis": "ball"}
GOOD_CAPTION = 'A male speaker with low pitch and high volume speaks at a slow pace, emphasizing the word "ball".'
BAD_CAPTION = 'A male speaker with high pitch and high volume speaks at a slow pace, emphasizing the word "ball".'


def row(
    utt: str, emotion_ref: str, emotion: str | None, caption: str | None = GOOD_CAPTION, task: str = "ser_sed"
) -> dict:
    return {
        "id": utt,
        "task": task,
        "corpus": "synthcraft",
        "transcript_ref": "the dog found a ball",
        "caption_ref": GOOD_CAPTION,
        "emotion_ref": emotion_ref,
        "attributes_ref": REF_ATTRS,
        "annotator_emotions": None,
        "raw": "",
        "transcript": None,
        "caption": caption,
        "emotion": emotion,
        "parsed": emotion is not None,
        "caption_attributes": caption_attributes(caption),
    }


def make_run(root: Path, name: str, seed: int, rows: list[dict], corpus: str = "synthcraft") -> Path:
    """A run directory as fit writes it: config.yaml, predictions.jsonl, metrics.json."""
    run = root / name / f"seed{seed}"
    run.mkdir(parents=True)
    cfg = load_config(["offline", f"name={name}", f"seed={seed}", f"data.corpora.0.name={corpus}"])
    (run / "config.yaml").write_text(to_yaml(cfg))
    (run / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    # No caption references in the scored rows: the Java caption scorers are not needed here.
    metrics = compute_metrics([{**r, "caption_ref": None} for r in rows], LABELS)
    metrics["attribute_accuracy"] = emotion.attribute_accuracy(
        [r["attributes_ref"] for r in rows], [r["caption_attributes"] for r in rows]
    )
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run


def rows_with_accuracy(correct: list[bool]) -> list[dict]:
    refs = LABELS * (len(correct) // 4 + 1)
    return [row(f"u{i:02d}", refs[i], refs[i] if ok else refs[i - 1]) for i, ok in enumerate(correct)]


@pytest.fixture
def runs(tmp_path):
    """sys7 right on 15 of 16 utterances, sys4 on 8 (two seeds each, same utterances)."""
    for seed in (0, 1):
        make_run(tmp_path, "sys7", seed, rows_with_accuracy([True] * 15 + [seed == 0]))
        make_run(tmp_path, "sys4", seed, rows_with_accuracy([True, False] * 8))
    return tmp_path


def test_load_run_reads_identity_metrics_and_rows(runs):
    run = explore.load_run(runs / "sys7" / "seed1")
    assert (run.name, run.corpus, run.seed) == ("sys7", "synthcraft", 1)
    assert run.metrics["ua"] == pytest.approx(15 / 16 * 1.0, abs=0.05)
    assert len(run.rows) == 16 and run.labels == LABELS
    with pytest.raises(FileNotFoundError):
        explore.load_run(runs / "sys7")


def test_find_runs_lists_runs_and_treats_a_crossval_as_one(runs, tmp_path):
    assert len(explore.find_runs(str(runs))) == 4
    cv = tmp_path / "cv"
    for k in (1, 2):
        (cv / f"fold{k}").mkdir(parents=True)
        (cv / f"fold{k}" / "metrics.json").write_text("{}")
    (cv / "metrics.json").write_text("{}")
    (cv / "crossval.json").write_text("{}")
    assert explore.find_runs([str(cv)]) == [cv]
    assert cv / "fold1" not in explore.find_runs([str(tmp_path)])
    with pytest.raises(FileNotFoundError):
        explore.find_runs(["/nonexistent/run"])


def test_run_specs_from_env(monkeypatch):
    monkeypatch.setenv(explore.RUNS_ENV, "runs/a, runs/b")
    assert explore.run_specs() == ["runs/a", "runs/b"]
    assert explore.run_specs("x") == ["x"]
    monkeypatch.delenv(explore.RUNS_ENV)
    assert explore.run_specs() == ["runs/demo"]


def test_per_class_recall_and_attribute_accuracy(runs):
    run = explore.load_run(runs / "sys4" / "seed0")
    recall = {r["emotion"]: r for r in explore.per_class_recall(run)}
    assert [recall[label]["n"] for label in LABELS] == [4, 4, 4, 4]
    assert recall["neutral"]["recall"] == 1.0 and recall["happy"]["recall"] == 0.0
    acc = {r["attribute"]: r["accuracy"] for r in explore.attribute_accuracy(run)}
    assert acc["pitch"] == 1.0 and acc["mean"] == 1.0


def test_caption_label_disagreements():
    rows = [
        row("both-right", "sad", "sad"),
        row("label-wrong", "sad", "angry"),
        row("caption-wrong", "sad", "sad", BAD_CAPTION),
        row("both-wrong", "sad", "angry", BAD_CAPTION),
        row("asr-only", "sad", None, None, task="asr"),
    ]
    out = {r["id"]: r for r in explore.caption_label_disagreements(rows)}
    assert set(out) == {"label-wrong", "caption-wrong"}
    assert out["label-wrong"]["kind"] == "caption right, label wrong"
    assert out["caption-wrong"]["descriptors_wrong"] == "pitch: high (ref low)"


def test_caption_samples_sorted_and_limited():
    rows = [row(f"u{i}", "sad", "sad") for i in (3, 1, 2)] + [row("u0", "sad", None, None, task="asr")]
    out = explore.caption_samples(rows, n=2)
    assert [r["id"] for r in out] == ["u1", "u2"]
    assert out[0]["caption_ref"] == GOOD_CAPTION


def test_system_table_marks_significant_improvements(runs):
    loaded = [explore.load_run(d) for d in explore.find_runs(str(runs))]
    table = {r["name"]: r for r in explore.system_table(loaded, ("ua",))}
    assert list(table) == ["sys4", "sys7"]  # paper order
    assert table["sys4"]["ID"] == "4" and table["sys4"]["synthcraft runs"] == 2
    assert table["sys4"]["synthcraft ua"] == "50.0 ± 0.0"
    assert table["sys7"]["synthcraft ua"].endswith("*"), "sys7 is significantly better than sys4"
    # The mark is exactly the paired one-tailed t-test over both seeds' utterances.
    a = [
        s
        for d in ("seed0", "seed1")
        for s in significance.per_utterance_scores(explore.load_run(runs / "sys7" / d).rows, "ua")
    ]
    b = [
        s
        for d in ("seed0", "seed1")
        for s in significance.per_utterance_scores(explore.load_run(runs / "sys4" / d).rows, "ua")
    ]
    assert significance.paired_t_test(a, b)["significant"]
    sig = explore.significance_table(loaded, "sys7")
    assert sig[0]["B"] == "sys4" and sig[0]["pairs"] == 32 and sig[0]["significant"] == "yes"


def test_paper_table_has_the_papers_numbers():
    table = {r["name"]: r for r in explore.paper_table()}
    assert table["sys7"]["iemocap ua"] == "77.6" and table["sys7"]["meld wer"] == "25.3"
    assert table["sys6"]["iemocap wer"] == "/"


def write_events(run: Path, stage: str, values: dict[str, list[float]]) -> None:
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(run / "tensorboard" / stage)) as w:
        for tag, vs in values.items():
            for step, v in enumerate(vs):
                w.add_scalar(tag, v, step)


def test_curves_and_layer_weights_from_event_files(runs):
    run = runs / "sys7" / "seed0"
    write_events(
        run,
        "stage1",
        {
            "train/loss_asr": [3.0, 2.0, 1.0],
            "layer_weights/content/00": [0.5, 0.7],
            "layer_weights/content/01": [0.5, 0.3],
        },
    )
    write_events(
        run,
        "stage2",
        {
            "train/loss_asr": [0.9, 0.8],
            "layer_weights/content/00": [0.6],
            "layer_weights/content/01": [0.4],
            "layer_weights/descriptor/00": [0.2],
            "layer_weights/descriptor/01": [0.8],
        },
    )
    scalars = curves.read_scalars(run)
    assert list(scalars) == ["stage1", "stage2"]  # training order from config.yaml
    joined, bounds = curves.concatenated_curves(scalars)
    steps, values = zip(*joined["train/loss_asr"])  # float32 in the event files
    assert steps == (0, 1, 2, 3, 4) and values == pytest.approx((3.0, 2.0, 1.0, 0.9, 0.8))
    assert bounds == [3]
    assert curves.layer_weights(run) == {"content": pytest.approx([0.6, 0.4]), "descriptor": pytest.approx([0.2, 0.8])}
    fig = curves.curves_figure({"a": run, "b": run}, ("train/loss_asr", "val/ua", "lr-AdamW"))
    assert [ax.get_title() for ax in fig.axes if ax.get_title()] == ["train/loss_asr"]
    bars = [[p.get_height() for p in c] for c in curves.layer_weights_figure(run).axes[0].containers]
    assert bars == [pytest.approx([0.6, 0.4]), pytest.approx([0.2, 0.8])]  # content, descriptor
    assert curves.tensorboard_runs([str(runs / "sys7")]) == {f"{runs / 'sys7'}/seed0": run}
    with pytest.raises(ValueError):
        curves.curves_figure({"a": run}, ("nope",))


def test_markdown_table():
    text = explore.markdown_table([{"a": 0.12345, "b": None}, {"a": "x|y", "c": 1}])
    assert text.splitlines() == ["| a | b | c |", "|---|---|---|", "| 0.123 |  |  |", "| x\\|y |  | 1 |"]
    assert explore.markdown_table([]) == "_(nothing to show)_"


def test_a_crossval_reports_its_mean_over_folds(tmp_path):
    run = make_run(tmp_path, "sys7", 0, rows_with_accuracy([True] * 8), corpus="iemocap")
    (run / "crossval.json").write_text(json.dumps({"folds": [1, 2], "mean": {"ua": 0.75}}))
    loaded = explore.load_run(run)
    assert loaded.corpus == "iemocap" and loaded.crossval["folds"] == [1, 2]
    (row,) = explore.system_table([loaded], ("ua", "wa"))
    assert row["iemocap ua"] == "75.0", "the mean over folds, not the pooled UA (100.0)"
    assert row["iemocap wa"] == "100.0", "metrics without a fold mean come from the pooled metrics"
    assert explore.runs_overview([loaded])[0]["folds"] == "1,2"
