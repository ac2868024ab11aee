"""Significance: the one-tailed paired t-test between two systems on the same utterances, and
:func:`compare`, which runs it per metric on two runs' predictions (``python -m
explainable_ser.compare``)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

from explainable_ser.evaluation.asr import wer
from explainable_ser.evaluation.captions import caption_metrics
from explainable_ser.evaluation.emotion import _check_same_length, emotion_metrics
from explainable_ser.model.prompts import get_task

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
    correct = [math.nan if ref is None else float(pred.get("emotion") == ref) for pred, ref in zip(predictions, refs)]
    if metric == "accuracy":
        return correct
    counts: dict[str, int] = {}
    for ref in refs:
        if ref is not None:
            counts[ref] = counts.get(ref, 0) + 1
    n, n_classes = sum(counts.values()), len(counts)
    return [c if ref is None else c * n / (n_classes * counts[ref]) for c, ref in zip(correct, refs)]


# -- two systems' predictions compared (python -m explainable_ser.compare) ---------------------
#: What each test's per-utterance scores are (``test`` in the JSON, the ``test on`` column).
TESTS = {
    "ua": "class-weighted correctness (mean = UA)",
    "accuracy": "correctness 1/0 (mean = WA)",
    "wer": "minus utterance WER",
    "bleu4": "sentence BLEU-4",
    "meteor": "per-caption METEOR",
    "rouge_l": "per-caption ROUGE-L",
    "cider": "per-caption CIDEr-D",
}
CAPTION_TESTS = ("bleu4", "meteor", "rouge_l", "cider")


def pool_pairs(pairs: list[tuple[dict, dict]]) -> tuple[dict, dict]:
    """Rows of several (A, B) pairs of runs (seeds) as one pair: ids suffixed ``@k`` with the
    pair's index, so utterances pair within their own pair only. One pair is left as it is."""
    if len(pairs) == 1:
        return pairs[0]
    pooled: tuple[dict, dict] = ({}, {})
    for k, pair in enumerate(pairs):
        for side, rows in zip(pooled, pair):
            for (utt, task), row in rows.items():
                side[(f"{utt}@{k}", task)] = {**row, "id": f"{utt}@{k}"}
    return pooled


def _by_utterance(rows: dict, field: str) -> dict[str, dict]:
    """Each utterance's row for the task that outputs ``field`` (the first such task by name),
    so systems decoding different tasks (Sys.5 ``ser`` vs Sys.7 ``ser_sed``) still pair up."""
    out: dict[str, dict] = {}
    for (utt, task), row in sorted(rows.items()):
        if field in get_task(task).fields:
            out.setdefault(utt, row)
    return out


def _paired(a_rows: dict, b_rows: dict, field: str) -> tuple[list[dict], list[dict]]:
    """The two systems' rows for ``field`` on the utterances both decoded that have its reference."""
    a, b = _by_utterance(a_rows, field), _by_utterance(b_rows, field)
    ids = [u for u in sorted(set(a) & set(b)) if a[u][f"{field}_ref"]]  # a row without it: KeyError
    return [a[u] for u in ids], [b[u] for u in ids]


def _entry(metric: str, a: float | None, b: float | None, test: dict) -> dict:
    delta = None if a is None or b is None else a - b
    return {"a": a, "b": b, "delta": delta, "test": TESTS[metric], **test}


def compare(a_rows: dict, b_rows: dict, labels: list[str] | None = None, captions: bool = True) -> dict:
    """Metrics of A and B on the utterances both decoded, each with the paired one-tailed t-test
    that A is better (see the module docstring). Rows are keyed ``(id, task)``; pairs are made
    per utterance. ``captions=False`` skips the caption tests (they start Java)."""

    a_ids, b_ids = {k[0] for k in a_rows}, {k[0] for k in b_rows}
    out: dict = {
        "n_shared": len(a_ids & b_ids),
        "only_a": len(a_ids - b_ids),
        "only_b": len(b_ids - a_ids),
        "metrics": {},
        "reasons": {},
    }
    a_emo, b_emo = _paired(a_rows, b_rows, "emotion")
    if a_emo:
        labs = labels or sorted({r["emotion_ref"] for r in a_emo})
        em = [
            emotion_metrics([r["emotion_ref"] for r in rows], [r["emotion"] for r in rows], labs)
            for rows in (a_emo, b_emo)
        ]
        for metric, key in (("ua", "ua"), ("accuracy", "wa")):
            test = paired_t_test(per_utterance_scores(a_emo, metric), per_utterance_scores(b_emo, metric))
            out["metrics"][metric] = _entry(metric, em[0][key], em[1][key], test)
    a_asr, b_asr = _paired(a_rows, b_rows, "transcript")
    if a_asr:
        wers = [
            wer([r["transcript_ref"] for r in rows], [r["transcript"] for r in rows])["wer"] for rows in (a_asr, b_asr)
        ]
        test = paired_t_test(per_utterance_scores(a_asr, "wer"), per_utterance_scores(b_asr, "wer"))
        out["metrics"]["wer"] = _entry("wer", wers[0], wers[1], test)
    a_cap, b_cap = _paired(a_rows, b_rows, "caption")
    if a_cap and captions:
        # As evaluate reads them: ``zh``, ``zh-CN`` ... score by characters, anything else by words.
        languages = {"zh" if str(r.get("language") or "").lower().startswith("zh") else "en" for r in a_cap}
        if len(languages) > 1:
            out["reasons"]["captions"] = f"captions in several languages {sorted(languages)}: score them apart"
        else:
            lang = languages.pop()
            scored = [
                caption_metrics(
                    [r["caption_ref"] for r in rows],
                    [r.get("caption") for r in rows],
                    language=lang,
                    metrics=CAPTION_TESTS,
                    per_item=True,
                )
                for rows in (a_cap, b_cap)
            ]
            for metric in CAPTION_TESTS:
                if scored[0][metric] is None or scored[1][metric] is None:
                    out["reasons"][metric] = scored[0]["reasons"].get(metric) or scored[1]["reasons"].get(metric)
                    continue
                nan = float("nan")
                per = [[nan if v is None else v for v in s["per_item"][metric]] for s in scored]
                out["metrics"][metric] = _entry(
                    metric, scored[0][metric], scored[1][metric], paired_t_test(per[0], per[1])
                )
    return out
