"""Caption metrics against pycocoevalcap's own scorers (explainable_ser.evaluation.captions)."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from explainable_ser.evaluation import captions

from conftest import CAP_HYPS, CAP_REFS, needs_java

# --------------------------------------------------------------------------- #
# Captions
# --------------------------------------------------------------------------- #


def _direct_pycocoevalcap():
    """The reference numbers: pycocoevalcap used the plain way."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    gts = {i: [{"caption": r} for r in ([r] if isinstance(r, str) else r)] for i, r in enumerate(CAP_REFS)}
    # The empty hypothesis is given to Java as-is here; the module keeps it away.
    res = {i: [{"caption": h or ""}] for i, h in enumerate(CAP_HYPS)}
    tok = PTBTokenizer()
    gts, res = tok.tokenize(gts), tok.tokenize(res)
    assert res[2] == [""]
    return {
        "bleu4": Bleu(4).compute_score(gts, res, verbose=0)[0][3],
        "rouge_l": Rouge().compute_score(gts, res)[0],
        "cider": Cider().compute_score(gts, res)[0],
    }


@needs_java
def test_caption_per_item_scores_are_the_scorers_own():
    refs = [*CAP_REFS, None]  # the last utterance has no reference
    out = captions.caption_metrics(
        refs, [*CAP_HYPS, "x"], metrics=("bleu4", "rouge_l", "cider", "meteor"), per_item=True
    )
    items = out["per_item"]
    assert set(items) == {"bleu4", "rouge_l", "cider", "meteor"}
    assert all(len(v) == 5 and v[4] is None for v in items.values())
    # ROUGE-L's and CIDEr-D's corpus scores are the mean of their per-caption scores.
    for key in ("rouge_l", "cider"):
        assert np.mean(items[key][:4]) == pytest.approx(out[key], rel=1e-9), key
    assert all(0.0 <= v <= 1.0 for v in items["meteor"][:4]) and items["meteor"][2] == 0.0
    assert items["bleu4"][2] == pytest.approx(0.0, abs=1e-6)  # the empty hypothesis
    assert items["bleu4"][0] > 0.3


@needs_java
def test_caption_metrics_match_pycocoevalcap():
    out = captions.caption_metrics(CAP_REFS, CAP_HYPS, metrics=("bleu4", "rouge_l", "cider", "spice"))
    ref = _direct_pycocoevalcap()
    for key in ("bleu4", "rouge_l", "cider"):
        assert out[key] == pytest.approx(ref[key]), key
        assert key not in out["reasons"]
    assert out["bleu4"] > 0 and out["cider"] > 0
    assert out["meteor"] is None and out["reasons"]["meteor"] == "not requested"
    assert out["n"] == 4 and out["n_skipped_no_reference"] == 0


@pytest.mark.skipif(
    all(
        os.path.exists(os.path.join(captions._pycocoevalcap_dir("spice") or "", "lib", j))
        for j in ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")
    ),
    reason="SPICE jars present",
)
def test_spice_none_with_reason_without_jars():
    out = captions.caption_metrics(["a b"], ["a b"], language="zh", metrics=("spice",))
    assert out["spice"] is None and "English" in out["reasons"]["spice"]
    if shutil.which("java") is not None:
        out = captions.caption_metrics(["a man speaks"], ["a man speaks"], metrics=("spice",))
        assert out["spice"] is None and "CoreNLP" in out["reasons"]["spice"]


@pytest.fixture
def closed_meteors(monkeypatch):
    """Records every METEOR scorer the module shuts down."""
    seen = []
    original = captions._close_meteor

    def spy(meteor):
        seen.append(meteor)
        original(meteor)

    monkeypatch.setattr(captions, "_close_meteor", spy)
    return seen


@pytest.mark.slow
@needs_java
def test_meteor_in_unit_interval_and_process_closed(closed_meteors):
    out = captions.caption_metrics(CAP_REFS, CAP_HYPS, metrics=("meteor",))
    assert out["meteor"] is not None, out["reasons"]
    assert 0.0 < out["meteor"] < 1.0
    assert closed_meteors and closed_meteors[0].meteor_p.poll() is not None


def test_meteor_without_java(monkeypatch):
    monkeypatch.setattr(captions.shutil, "which", lambda _: None)
    out = captions.caption_metrics(["一个男人说话"], ["一个男人"], language="zh", metrics=("bleu4", "meteor"))
    assert out["meteor"] is None and "Java" in out["reasons"]["meteor"]
    assert out["bleu4"] is not None  # zh needs no Java for tokenisation
    out = captions.caption_metrics(["a man"], ["a man"], metrics=("bleu4",))
    assert out["bleu4"] is None and "Java" in out["reasons"]["bleu4"]


@needs_java
def test_meteor_timeout_kills_process(closed_meteors):
    out = captions.caption_metrics(["a man speaks"], ["a man speaks"], metrics=("meteor",), meteor_timeout_s=0.01)
    assert out["meteor"] is None and "timed out" in out["reasons"]["meteor"]
    assert closed_meteors[0].meteor_p.poll() is not None


def test_mandarin_char_tokenisation():
    assert captions._char_tokenize("他说话很大声，语速快！ OK") == "他 说 话 很 大 声 语 速 快 o k"
    refs = ["他说话很大声，语速很快。"]
    hyps = ["他说话很大声。"]
    out = captions.caption_metrics(refs, hyps, language="zh", metrics=("bleu4", "rouge_l", "cider"))
    from pycocoevalcap.rouge.rouge import Rouge

    gts = {0: ["他 说 话 很 大 声 语 速 很 快"]}
    res = {0: ["他 说 话 很 大 声"]}
    assert out["rouge_l"] == pytest.approx(Rouge().compute_score(gts, res)[0])
    assert out["rouge_l"] > 0


def test_caption_edge_cases():
    out = captions.caption_metrics([None, [], [""]], ["a", "b", "c"], language="zh")
    assert out["n"] == 0 and out["n_skipped_no_reference"] == 3
    assert all(out[m] is None for m in captions.CAPTION_METRICS)
    assert set(out["reasons"]) == set(captions.CAPTION_METRICS)
    with pytest.raises(ValueError):
        captions.caption_metrics(["a"], ["a"], language="fr")
    with pytest.raises(ValueError):
        captions.caption_metrics(["a"], ["a"], metrics=("bleu",))


@needs_java
def test_caption_line_breaks_do_not_shift_alignment():
    # \u2028 and \r are line breaks to the line-based Java tokenizer.
    refs = ["first\u2028caption here", "second caption\rhere", "third caption here"]
    out = captions.caption_metrics(
        refs, ["first caption here", "second caption here", "third caption here"], metrics=("rouge_l",)
    )
    assert out["rouge_l"] == pytest.approx(1.0)
