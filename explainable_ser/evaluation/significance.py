"""Significance: the one-tailed paired t-test between two systems on the same utterances."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

from explainable_ser.evaluation.asr import wer
from explainable_ser.evaluation.emotion import _check_same_length

#: Significance level used by the paper.
ALPHA = 0.05


# --------------------------------------------------------------------------- #
# Significance testing
# --------------------------------------------------------------------------- #


def paired_t_test(
    a: Sequence[float],
    b: Sequence[float],
    alternative: str = "greater",
    alpha: float = ALPHA,
) -> dict[str, Any]:
    """Paired t-test of system A's per-utterance scores against system B's.

    ``alternative="greater"`` (the paper's one-tailed test) tests
    mean(A - B) > 0, so scores must be "higher is better" (see
    :func:`per_utterance_scores`).  Pairs where either score is NaN (an
    utterance one of them could not be scored on) are dropped.

    Degenerate cases return ``t = p = None`` with a ``reason`` rather than
    scipy's nan/inf: fewer than two pairs, or zero variance of the differences
    (all equal: t is 0/0; all shifted by the same non-zero amount: scipy
    reports t = inf, p = 0, which is an artefact of dividing by zero, not
    evidence).  ``significant`` is then ``False``.

    Returns:
        ``t``, ``p``, ``n``, ``mean_diff`` (mean of A - B), ``significant``
        (p < alpha), ``alternative``, ``reason`` (``None`` unless degenerate).
    """
    _check_same_length(a=a, b=b)
    if alternative not in ("greater", "less", "two-sided"):
        raise ValueError(f"alternative must be 'greater', 'less' or 'two-sided', got {alternative!r}")
    x = np.asarray(a, dtype=float)
    y = np.asarray(b, dtype=float)
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    diff = x - y
    result: dict[str, Any] = {
        "t": None,
        "p": None,
        "n": int(diff.size),
        "mean_diff": float(diff.mean()) if diff.size else None,
        "significant": False,
        "alternative": alternative,
        "reason": None,
    }
    if diff.size < 2:
        result["reason"] = "need at least 2 paired scores"
        return result
    if np.all(diff == diff[0]):
        result["reason"] = "no variance in the paired differences (t undefined)"
        return result
    test = stats.ttest_rel(x, y, alternative=alternative)
    t, p = float(test.statistic), float(test.pvalue)
    if not (math.isfinite(t) and math.isfinite(p)):
        result["reason"] = f"scipy returned t={t}, p={p}"
        return result
    result.update(t=t, p=p, significant=bool(p < alpha))
    return result


def per_utterance_scores(predictions: Sequence[Mapping[str, Any]], metric: str) -> list[float]:
    """Per-utterance scores, "higher is better", for :func:`paired_t_test`.

    ``predictions`` are dicts with ``id``, ``emotion_ref``, ``emotion`` (parsed,
    may be ``None``), ``transcript_ref``, ``transcript`` (may be ``None``).
    Both systems' lists must be in the same utterance order.

    * ``"accuracy"``: 1.0 if ``emotion == emotion_ref`` (exact match, as in
      :func:`emotion_metrics`) else 0.0; their mean is the WA, so a t-test on
      them tests accuracy.
    * ``"ua"``: that correctness times ``n / (C * n_c)``, with ``n`` the
      utterances with a reference, ``C`` the classes among their references
      and ``n_c`` the utterances of the utterance's reference class.  Their
      mean is the UA (mean per-class recall) of the list, so a paired t-test
      on them tests UA.  The weights depend on the references only: both
      systems' scores carry the same weights when their lists pair up.
    * ``"wer"``: minus the utterance's WER (after :func:`normalize_text`;
      ``None`` transcript = empty), so that a greater score means a better
      system and ``alternative="greater"`` keeps its meaning.

    Utterances without a usable reference get NaN, which
    :func:`paired_t_test` drops.  Caption scores need the whole set (CIDEr's
    IDF): :func:`caption_metrics` with ``per_item=True``.
    """
    if metric not in ("accuracy", "ua", "wer"):
        raise ValueError(f"metric must be 'accuracy', 'ua' or 'wer', got {metric!r}")
    if metric == "wer":
        scores = []
        for pred in predictions:
            w = wer([pred.get("transcript_ref")], [pred.get("transcript")])["wer"]
            scores.append(math.nan if w is None else -w)
        return scores
    refs = [pred.get("emotion_ref") for pred in predictions]
    correct = [math.nan if ref is None else float(pred.get("emotion") == ref)
               for pred, ref in zip(predictions, refs)]
    if metric == "accuracy":
        return correct
    counts: dict[str, int] = {}
    for ref in refs:
        if ref is not None:
            counts[ref] = counts.get(ref, 0) + 1
    n, n_classes = sum(counts.values()), len(counts)
    return [c if ref is None else c * n / (n_classes * counts[ref]) for c, ref in zip(correct, refs)]
