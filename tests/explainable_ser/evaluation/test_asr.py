"""Word error rate and its text normaliser (explainable_ser.evaluation.asr)."""

from __future__ import annotations

import pytest

from explainable_ser.evaluation import asr

# --------------------------------------------------------------------------- #
# WER
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Hello, World!", "hello world"),
        ("  Don't   STOP.  ", "don't stop"),
        ("\u2018quoted\u2019 dogs' bones", "quoted dogs bones"),
        ("I\u2019m fine", "i'm fine"),
        ("well-known end.start", "well known end start"),
        ("ＡＢＣ　１２３", "abc 123"),  # full-width -> NFKC
        ("...", ""),
        ("你好，世界。", "你好 世界"),
    ],
)
def test_normalize_text(raw, expected):
    assert asr.normalize_text(raw) == expected


def test_wer_hand_counted():
    out = asr.wer(["The cat sat on the mat."], ["the cat SIT on mat"])
    assert out["wer"] == pytest.approx(2 / 6)
    assert (out["substitutions"], out["deletions"], out["insertions"]) == (1, 1, 0)
    assert out["ref_words"] == 6 and out["n"] == 1


def test_wer_corpus_level_none_hyp_and_skips():
    refs = ["a b c d", "e f", None, "..."]
    hyps = ["a b x d y", None, "whatever", "z"]
    out = asr.wer(refs, hyps)
    # utt 1: 1 sub + 1 ins; utt 2: 2 del  -> 4 edits / 6 ref words (not mean of 0.5 and 1.0)
    assert out["wer"] == pytest.approx(4 / 6)
    assert (out["substitutions"], out["deletions"], out["insertions"]) == (1, 2, 1)
    assert out["n"] == 2 and out["n_skipped_empty_reference"] == 2
    assert asr.wer([None], ["a"])["wer"] is None
