"""The paired t-test and per-utterance scores (explainable_ser.evaluation.significance)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from explainable_ser.evaluation import emotion, significance

# --------------------------------------------------------------------------- #
# Significance
# --------------------------------------------------------------------------- #

A = [0.9, 0.8, 0.85, 0.7, 0.95, 0.6, 0.88]
B = [0.7, 0.75, 0.8, 0.72, 0.9, 0.5, 0.8]


def test_paired_t_test_matches_scipy():
    out = significance.paired_t_test(A, B)
    ref = stats.ttest_rel(A, B, alternative="greater")
    assert out["t"] == pytest.approx(ref.statistic)
    assert out["p"] == pytest.approx(ref.pvalue)
    assert out["n"] == 7 and out["mean_diff"] == pytest.approx(np.mean(np.subtract(A, B)))
    assert out["significant"] == (ref.pvalue < 0.05) and out["significant"]
    assert out["reason"] is None


def test_paired_t_test_one_tailed():
    ab, ba = significance.paired_t_test(A, B), significance.paired_t_test(B, A)
    assert ab["t"] == pytest.approx(-ba["t"])
    assert ab["p"] + ba["p"] == pytest.approx(1.0)
    assert not ba["significant"]
    two = significance.paired_t_test(A, B, alternative="two-sided")
    assert two["p"] == pytest.approx(2 * ab["p"])


def test_paired_t_test_degenerate():
    for a, b in ([[1, 1, 1], [1, 1, 1]], [[1, 1, 1], [0, 0, 0]]):
        out = significance.paired_t_test(a, b)
        assert out["p"] is None and out["t"] is None and not out["significant"]
        assert "variance" in out["reason"]
    out = significance.paired_t_test([1.0, math.nan], [0.0, 0.5])
    assert out["n"] == 1 and out["p"] is None and "2" in out["reason"]


def test_per_utterance_scores():
    preds = [
        {"id": "1", "emotion_ref": "happy", "emotion": "happy", "transcript_ref": "a b c d", "transcript": "a b c"},
        {"id": "2", "emotion_ref": "sad", "emotion": None, "transcript_ref": "a b", "transcript": None},
        {"id": "3", "emotion_ref": None, "emotion": "sad", "transcript_ref": "", "transcript": "x"},
    ]
    emo = significance.per_utterance_scores(preds, "accuracy")
    assert emo[:2] == [1.0, 0.0] and math.isnan(emo[2])
    ua = significance.per_utterance_scores(preds, "ua")  # 2 scored, 2 classes of 1: weight 2 / (2 * 1) = 1
    assert ua[:2] == [1.0, 0.0] and math.isnan(ua[2])
    w = significance.per_utterance_scores(preds, "wer")
    assert w[:2] == pytest.approx([-0.25, -1.0]) and math.isnan(w[2])
    with pytest.raises(ValueError):
        significance.per_utterance_scores(preds, "bleu")


LABELS4 = ["neutral", "happy", "sad", "angry"]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(LABELS4 + [None]), st.sampled_from(LABELS4 + [None, "bored"])),
        min_size=1,
        max_size=40,
    )
)
def test_ua_scores_average_to_the_ua(pairs):
    preds = [{"emotion_ref": r, "emotion": h} for r, h in pairs]
    ua = emotion.emotion_metrics([r for r, _ in pairs], [h for _, h in pairs], LABELS4)["ua"]
    scores = [x for x in significance.per_utterance_scores(preds, "ua") if not math.isnan(x)]
    if ua is None:
        assert scores == []
    else:
        assert abs(sum(scores) / len(scores) - ua) < 1e-12


def test_ua_scores_weigh_the_rare_class_up():
    # 6 neutral (all right), 2 sad (both wrong): WA 0.75, UA 0.5.
    preds = [{"emotion_ref": "neutral", "emotion": "neutral"}] * 6 + [{"emotion_ref": "sad", "emotion": "neutral"}] * 2
    assert significance.per_utterance_scores(preds, "ua") == [8 / (2 * 6)] * 6 + [0.0] * 2
    assert sum(significance.per_utterance_scores(preds, "accuracy")) / 8 == 0.75
