"""Emotion and descriptor-label metrics (explainable_ser.evaluation.emotion)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import balanced_accuracy_score

from explainable_ser.evaluation import emotion

LABELS = ["neutral", "happy", "sad", "angry"]


# --------------------------------------------------------------------------- #
# Emotion
# --------------------------------------------------------------------------- #


def test_ua_matches_sklearn_balanced_accuracy():
    refs = ["neutral", "neutral", "happy", "sad", "sad", "sad", "angry", "angry", "neutral", "happy"]
    hyps = ["neutral", "sad", "happy", "sad", "neutral", "sad", "angry", "happy", "neutral", "neutral"]
    out = emotion.emotion_metrics(refs, hyps, LABELS)
    assert out["ua"] == pytest.approx(balanced_accuracy_score(refs, hyps))
    assert out["wa"] == pytest.approx(6 / 10)
    assert out["n"] == 10 and out["n_unparsed"] == 0 and out["n_no_reference"] == 0


def test_ua_hand_computed_three_classes():
    # recalls: a = 2/2, b = 1/2, c = 0/2  ->  UA 0.5; WA 3/6
    refs = ["a", "a", "b", "b", "c", "c"]
    hyps = ["a", "a", "b", "a", "b", "a"]
    out = emotion.emotion_metrics(refs, hyps, ["a", "b", "c"])
    assert out["ua"] == pytest.approx(0.5)
    assert out["wa"] == pytest.approx(0.5)
    assert out["per_class_recall"] == pytest.approx({"a": 1.0, "b": 0.5, "c": 0.0})
    # F1: a: P=2/4, R=1 -> 2/3; b: P=1/2, R=1/2 -> 1/2; c: 0  -> (2/3 + 1/2 + 0) / 3
    assert out["macro_f1"] == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)
    assert out["confusion"] == [[2, 0, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0]]
    assert out["confusion_columns"] == ["a", "b", "c", "unparsed"]


def test_unparsed_and_missing_reference():
    refs = ["a", "a", "b", "b", None, "c"]
    hyps = ["a", None, "b", "whatever", "a", "c"]
    out = emotion.emotion_metrics(refs, hyps, ["a", "b", "c"])
    assert out["n"] == 5 and out["n_no_reference"] == 1 and out["n_unparsed"] == 2
    # recalls a = 1/2, b = 1/2, c = 1
    assert out["ua"] == pytest.approx((0.5 + 0.5 + 1) / 3)
    assert out["wa"] == pytest.approx(3 / 5)
    assert out["confusion"] == [[1, 0, 0, 1], [0, 1, 0, 1], [0, 0, 1, 0]]
    # F1: every predicted class is precise, so F1 = 2R/(1+R): a, b: 2/3; c: 1
    assert out["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)


def test_macro_f1_averages_over_reference_classes_only():
    # "c" is predicted but never a reference: not averaged, but its false
    # positive still costs "b" its recall.
    out = emotion.emotion_metrics(["a", "b"], ["a", "c"], ["a", "b", "c"])
    assert out["macro_f1"] == pytest.approx((1.0 + 0.0) / 2)
    assert out["per_class_recall"]["c"] is None
    assert out["ua"] == pytest.approx(0.5)


def test_emotion_empty_and_invalid():
    out = emotion.emotion_metrics([None, None], ["a", None], ["a", "b"])
    assert out["ua"] is None and out["wa"] is None and out["macro_f1"] is None
    assert out["n"] == 0 and out["n_no_reference"] == 2
    assert out["confusion"] == [[0, 0, 0], [0, 0, 0]]
    assert emotion.emotion_metrics([], [], ["a"])["ua"] is None
    with pytest.raises(ValueError):
        emotion.emotion_metrics(["x"], ["a"], ["a", "b"])
    with pytest.raises(ValueError):
        emotion.emotion_metrics(["a"], ["a", "b"], ["a", "b"])


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(st.none(), st.sampled_from(LABELS)),
            st.one_of(st.none(), st.sampled_from(LABELS + ["unknown", ""])),
        ),
        max_size=30,
    )
)
def test_emotion_metrics_property(pairs):
    refs = [r for r, _ in pairs]
    hyps = [h for _, h in pairs]
    out = emotion.emotion_metrics(refs, hyps, LABELS)
    n = sum(r is not None for r in refs)
    assert out["n"] == n and out["n"] + out["n_no_reference"] == len(pairs)
    assert sum(map(sum, out["confusion"])) == n
    assert sum(row[-1] for row in out["confusion"]) == out["n_unparsed"]
    if n == 0:
        assert out["ua"] is None
    else:
        for key in ("ua", "wa", "macro_f1"):
            assert 0.0 <= out[key] <= 1.0


def test_annotator_aware_accuracy():
    ann = [["happy", "neutral"], ["sad"], None, [], ["angry", "sad"]]
    hyps = ["neutral", "happy", "sad", "sad", None]
    assert emotion.annotator_aware_accuracy(ann, hyps) == pytest.approx(1 / 3)
    assert emotion.annotator_aware_accuracy([None, []], ["a", "b"]) is None


# --------------------------------------------------------------------------- #
# Attributes
# --------------------------------------------------------------------------- #


def test_attribute_accuracy():
    refs = [
        {"gender": "Male", "pitch": "high", "volume": None},
        {"gender": "female", "pitch": "low"},
        {"gender": "female", "pitch": "normal", "speed": "fast"},
    ]
    hyps = [{"gender": "male ", "pitch": "HIGH", "volume": "loud"}, None, {"gender": "male", "pitch": "normal"}]
    out = emotion.attribute_accuracy(refs, hyps)
    assert out["accuracy"]["gender"] == pytest.approx(1 / 3)
    assert out["accuracy"]["pitch"] == pytest.approx(2 / 3)
    assert out["accuracy"]["speed"] == 0.0  # missing hyp value counts as wrong
    assert out["accuracy"]["volume"] is None and out["accuracy"]["emphasis"] is None
    assert out["n"] == {"gender": 3, "pitch": 3, "volume": 0, "speed": 1, "emphasis": 0}
    assert out["mean"] == pytest.approx((1 / 3 + 2 / 3 + 0.0) / 3)
    assert emotion.attribute_accuracy([], [])["mean"] is None


def test_chance_levels_hand_computed():
    ch = emotion.chance_levels(
        ["sad", "sad", "happy", None],
        [
            {"gender": "male", "pitch": "low", "emphasis": "dog"},
            {"gender": "male", "pitch": "high", "emphasis": "cat"},
            {"gender": "female", "pitch": None, "emphasis": "a"},
        ],
        ["the dog ran", "a cat", "a b c d"],
    )
    assert ch["ua"] == 0.5 and ch["wa"] == pytest.approx(2 / 3) and ch["wer"] == 1.0
    acc = ch["attribute_accuracy"]["accuracy"]
    assert acc["gender"] == pytest.approx(2 / 3) and acc["pitch"] == 0.5
    assert acc["emphasis"] == pytest.approx((1 / 3 + 1 / 2 + 1 / 4) / 3)  # a random word of each
    assert acc["volume"] is None
    assert ch["attribute_accuracy"]["mean"] == pytest.approx(np.mean([2 / 3, 0.5, (1 / 3 + 1 / 2 + 1 / 4) / 3]))


def test_annotator_aware_f1_falls_back_to_the_annotators_plurality():
    labels = ["neutral", "happy", "sad"]
    ann = [["sad", "sad", "happy"], ["happy"], ["neutral"], None, ["other"]]
    maj = [None, "happy", "neutral", "sad", None]
    hyps = ["neutral", "happy", "neutral", "sad", "sad"]
    # first: no majority given, annotators say sad twice -> scored against sad (wrong);
    # the unannotated and the no-usable-label utterances are left out
    assert emotion.annotator_aware_f1(ann, maj, hyps, labels) == pytest.approx(
        emotion.emotion_metrics(["sad", "happy", "neutral"], ["neutral", "happy", "neutral"], labels)["macro_f1"]
    )
    assert emotion.annotator_aware_f1([None], [None], ["sad"], labels) is None
