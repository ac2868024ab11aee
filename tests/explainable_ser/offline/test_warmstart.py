"""The demo's alignment warm start: targets, CTC onto frozen LLM embeddings, fit wiring."""

from __future__ import annotations

import pytest
import torch
from lhotse import CutSet

from data_modules.records import record_of
from data_modules.synthcraft import generate
from explainable_ser.model.build import build_model
from explainable_ser.offline.tokenizer import build_word_tokenizer
from explainable_ser.offline.warmstart import (
    CTCHead,
    descriptor_words,
    field_classes,
    field_hits,
    warm_start,
)

from conftest import tiny_config

REC = {
    "emotion": "angry",
    "transcript": "the dog ran",
    "attributes": {"gender": "male", "pitch": "low", "volume": "high", "speed": "fast", "emphasis": "dog"},
}


def test_descriptor_words_spell_the_fields_in_order():
    fields = ["gender", "pitch", "volume", "speed", "emphasis", "emotion"]
    assert descriptor_words(REC, fields) == "male low pitch high volume fast speed dog angry"
    assert descriptor_words(REC, ["emotion"]) == "angry"
    assert descriptor_words({**REC, "emotion": None}, fields) is None
    assert descriptor_words({"emotion": "sad", "attributes": {}}, ["pitch"]) is None


def test_value_words_give_each_value_a_word_of_its_own():
    own = {"volume": {"high": "loud", "low": "quiet"}, "speed": {"fast": "fast"}}
    fields = ["gender", "pitch", "volume", "speed", "emotion"]
    assert descriptor_words(REC, fields, own) == "male low pitch loud fast angry"
    # a value the mapping lacks keeps the default spelling
    assert (
        descriptor_words({**REC, "attributes": {**REC["attributes"], "volume": "normal"}}, ["volume"], own)
        == "normal volume"
    )
    assert field_hits(REC, ["volume", "pitch"], "male low pitch loud", own) == {"volume": True, "pitch": True}
    assert field_hits(REC, ["volume"], "male low pitch high volume", own) == {"volume": False}


def test_ctc_head_scores_the_nearest_embedding_row_highest():
    torch.manual_seed(0)
    rows = torch.randn(5, 8)
    head = CTCHead(rows, scale=10.0)
    logits = head(3.0 * rows[None])  # [1, 5, 6]: each row against blank + the 5 rows
    assert logits.argmax(-1)[0].tolist() == [1, 2, 3, 4, 5]  # index 0 is the blank


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("sc")
    generate(root, n_train=24, n_dev=6, n_test=1, seed=3, progress=False)

    def load(split):
        cuts = CutSet.from_file(root / f"synthcraft_cuts_{split}.jsonl.gz")
        return [(torch.from_numpy(c.load_audio()[0]), record_of(c)) for c in cuts]

    return load("train"), load("dev")


@pytest.mark.parametrize("branch", ["content", "descriptor"])
def test_warm_start_trains_only_its_branch_and_lowers_the_ctc_loss(clips, branch, seeded):
    train, dev = clips
    tok = build_word_tokenizer(
        [r["transcript"] for _, r in train]
        + ["pitch volume speed male female low normal high slow fast neutral happy sad angry"]
    )
    model = build_model(tiny_config().model, tok, init_seed=0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    report = warm_start(
        model,
        branch,
        train,
        dev,
        tok,
        fields=["gender", "pitch", "emotion"],
        epochs=8,
        lr=3e-3,
        batch_size=8,
        scale=30.0,
        norm_weight=0.1,
        seed=0,
        progress=False,
    )
    assert report["loss_last_epoch"] < 0.8 * report["loss_first_epoch"]
    assert report["train_utterances"] == 24 and report["dev_utterances"] == 6
    assert 0.0 <= report["dev_error_rate"]
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(n.startswith(f"{branch}.") for n in changed)


def test_field_hits_need_the_whole_spelled_value():
    fields = ["gender", "pitch", "emotion"]
    assert field_hits(REC, fields, "male low pitch angry") == {"gender": True, "pitch": True, "emotion": True}
    # "female" is not "male"; "low" without "pitch" is not the pitch
    assert field_hits(REC, fields, "female low volume sad") == {"gender": False, "pitch": False, "emotion": False}


def test_field_classes_are_the_categorical_fields():
    recs = [REC, {**REC, "emotion": "sad", "attributes": {**REC["attributes"], "pitch": "high", "emphasis": "cat"}}]
    assert field_classes(recs, ["pitch", "emphasis", "emotion", "gender"], most=1) == {}
    got = field_classes(recs, ["pitch", "emphasis", "emotion", "gender"])
    assert got == {"pitch": ["high", "low"], "emphasis": ["cat", "dog"], "emotion": ["angry", "sad"]}
    assert "gender" not in got  # one value: nothing to classify


def test_field_heads_train_with_the_descriptor_branch(clips, seeded):
    train, dev = clips
    tok = build_word_tokenizer(
        [r["transcript"] for _, r in train]
        + ["pitch volume speed male female low normal high slow fast neutral happy sad angry"]
    )
    model = build_model(tiny_config("model.branch.utterance_context=[descriptor]").model, tok, init_seed=0)
    report = warm_start(
        model,
        "descriptor",
        train,
        dev,
        tok,
        fields=["gender", "pitch", "emotion"],
        epochs=4,
        lr=3e-3,
        batch_size=8,
        scale=30.0,
        norm_weight=0.1,
        seed=0,
        progress=False,
        field_weight=1.0,
    )
    heads = report["dev_field_head_accuracy"]
    assert set(heads) == set(field_classes([r for _, r in train], ["gender", "pitch", "emotion"]))
    assert all(0.0 <= v <= 1.0 for v in heads.values())
    assert set(report["dev_field_accuracy"]) == {"gender", "pitch", "emotion"}
    # the content branch has no field heads
    report = warm_start(
        model,
        "content",
        train,
        dev,
        tok,
        fields=["gender"],
        epochs=1,
        lr=3e-3,
        batch_size=8,
        scale=30.0,
        norm_weight=0.1,
        seed=0,
        progress=False,
        field_weight=1.0,
    )
    assert report["dev_field_head_accuracy"] == {} and report["dev_field_accuracy"] == {}


def test_measured_cue_directions_are_fields_too():
    rec = {
        **REC,
        "attributes": {
            **REC["attributes"],
            "evidence": {"pitch": {"direction": "high", "value": 240.0}, "volume": {"direction": "normal"}},
        },
    }
    own = {"volume": {"high": "loud", "normal": "moderate"}}  # spelled as the label field is
    assert descriptor_words(rec, ["evidence.pitch", "evidence.volume", "emotion"], own) == "high pitch moderate angry"
    assert descriptor_words(rec, ["evidence.speed"]) is None  # not measured: no target
    low = {**REC, "attributes": {"evidence": {"pitch": {"direction": "low"}}}}
    assert field_classes([rec, low], ["evidence.pitch"]) == {"evidence.pitch": ["high", "low"]}


def test_field_heads_take_measured_cue_fields(clips, seeded):
    """A field named with a dot (evidence.pitch) gets its head like any other."""

    def measured(items):
        out = []
        for wave, rec in items:
            ev = {"pitch": {"direction": rec["attributes"]["pitch"]}}
            out.append((wave, {**rec, "attributes": {**rec["attributes"], "evidence": ev}}))
        return out

    train, dev = map(measured, clips)
    tok = build_word_tokenizer([r["transcript"] for _, r in train] + ["pitch low normal high neutral happy sad angry"])
    model = build_model(tiny_config("model.branch.utterance_context=[descriptor]").model, tok, init_seed=0)
    kw = dict(epochs=1, lr=3e-3, batch_size=8, scale=30.0, norm_weight=0.1, seed=0, progress=False, field_weight=1.0)
    report = warm_start(model, "descriptor", train, dev, tok, fields=["evidence.pitch", "emotion"], **kw)
    assert set(report["dev_field_head_accuracy"]) == {"evidence.pitch", "emotion"}
    assert set(report["dev_field_accuracy"]) == {"evidence.pitch", "emotion"}


def test_the_models_concept_heads_learn_their_fields_in_the_warm_start(clips, seeded):
    train, dev = clips
    tok = build_word_tokenizer([r["transcript"] for _, r in train] + ["pitch low normal high neutral happy sad angry"])
    cfg = tiny_config(
        "model.branch.utterance_context=[descriptor]",
        "model.branch.concepts={pitch: {low: low, normal: normal, high: high}}",
    )
    model = build_model(cfg.model, tok, init_seed=0)
    before = {k: v.clone() for k, v in model.descriptor.concepts.state_dict().items()}
    kw = dict(epochs=2, lr=3e-3, batch_size=8, scale=30.0, norm_weight=0.1, seed=0, progress=False)
    report = warm_start(model, "descriptor", train, dev, tok, fields=["pitch", "emotion"], field_weight=1.0, **kw)
    assert set(report["dev_concept_accuracy"]) == {"pitch"}  # scored on dev like the field heads
    after = model.descriptor.concepts.state_dict()
    assert all(not torch.equal(before[k], after[k]) for k in before)  # trained
    # without the field loss they are left as they were (the LLM's loss trains them later)
    model = build_model(cfg.model, tok, init_seed=0)
    before = {k: v.clone() for k, v in model.descriptor.concepts.state_dict().items()}
    report = warm_start(model, "descriptor", train, dev, tok, fields=["pitch", "emotion"], field_weight=0.0, **kw)
    assert report["dev_concept_accuracy"] == {}
    assert all(torch.equal(before[k], v) for k, v in model.descriptor.concepts.state_dict().items())
