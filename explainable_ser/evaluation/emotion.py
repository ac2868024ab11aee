"""Emotion and descriptor-label metrics.

* SER: unweighted accuracy (UA, mean per-class recall = balanced accuracy), weighted accuracy
  (WA, plain accuracy), macro-F1 and a confusion matrix (:func:`emotion_metrics`);
  :func:`annotator_aware_accuracy` and :func:`annotator_aware_f1` credit a prediction matching any
  annotator's label.
* Speech descriptors: per-attribute accuracy (:func:`attribute_accuracy`) and the chance levels
  beside them (:func:`chance_levels`).

A hypothesis that is ``None`` (the output could not be parsed) counts as wrong; an utterance
whose reference is missing is excluded and counted, so no metric is computed on a made-up value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, recall_score

# Column name for predictions that are None or outside the label set.
UNPARSED = "unparsed"


def _check_same_length(**seqs: Sequence[Any]) -> None:
    lengths = {name: len(s) for name, s in seqs.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"inputs must have the same length, got {lengths}")


# --------------------------------------------------------------------------- #
# Speech emotion recognition
# --------------------------------------------------------------------------- #


def emotion_metrics(
    refs: Sequence[str | None],
    hyps: Sequence[str | None],
    labels: Sequence[str],
) -> dict[str, Any]:
    """UA, WA, macro-F1 and confusion matrix of emotion predictions.

    Args:
        refs: reference emotion per utterance; ``None`` = no reference, the
            utterance is excluded (counted in ``n_no_reference``).
        hyps: predicted emotion per utterance; ``None`` or a string not in
            ``labels`` is "unparsed" and counts as wrong (it stays in the
            denominator of its reference class but never matches).
        labels: the emotion classes, in the order used for the confusion
            matrix.  Matching is exact: canonicalise (case, spelling) upstream.

    Returns:
        ``ua``: mean recall over the classes that occur in ``refs``
        (= ``sklearn.metrics.balanced_accuracy_score``); ``wa``: accuracy;
        ``macro_f1``: unweighted mean of per-class F1 over the classes that
        occur in ``refs`` (a class that is only ever predicted but never a
        reference is not averaged, its false positives still lower the
        recall/F1 of the true classes); ``per_class_recall``: label -> recall,
        ``None`` for labels absent from ``refs``; ``confusion``: list of rows,
        one per reference label in ``labels`` order, columns = predicted label
        in ``labels`` order plus a final ``"unparsed"`` column;
        ``confusion_columns``: the column names; ``n``: scored utterances;
        ``n_unparsed``; ``n_no_reference``.  With nothing to score the
        metrics are ``None`` and the confusion matrix is all zeros.

    Raises:
        ValueError: on length mismatch, duplicate labels, or a (non-None)
            reference outside ``labels`` (a data error, not a model error).
    """
    _check_same_length(refs=refs, hyps=hyps)
    labels = list(labels)
    if len(set(labels)) != len(labels):
        raise ValueError(f"duplicate labels: {labels}")
    label_set = set(labels)

    # A sentinel class that cannot collide with a real label: sklearn then
    # counts unparsed predictions as errors without a special case.
    sentinel = "\x00" + UNPARSED
    while sentinel in label_set:
        sentinel += "\x00"

    y_true: list[str] = []
    y_pred: list[str] = []
    n_no_reference = 0
    for ref, hyp in zip(refs, hyps):
        if ref is None:
            n_no_reference += 1
            continue
        if ref not in label_set:
            raise ValueError(f"reference label {ref!r} not in labels {labels}")
        y_true.append(ref)
        y_pred.append(hyp if hyp in label_set else sentinel)

    n = len(y_true)
    n_unparsed = sum(p == sentinel for p in y_pred)
    result: dict[str, Any] = {
        "ua": None,
        "wa": None,
        "macro_f1": None,
        "per_class_recall": {label: None for label in labels},
        "confusion": [[0] * (len(labels) + 1) for _ in labels],
        "confusion_columns": labels + [UNPARSED],
        "n": n,
        "n_unparsed": n_unparsed,
        "n_no_reference": n_no_reference,
    }
    if n == 0:
        return result

    present = [label for label in labels if label in set(y_true)]
    # Averaging over the present classes only: this is exactly
    # balanced_accuracy_score, minus its warning about the sentinel class.
    result["ua"] = float(recall_score(y_true, y_pred, labels=present, average="macro", zero_division=0))
    result["wa"] = float(accuracy_score(y_true, y_pred))
    result["macro_f1"] = float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0))
    recalls = recall_score(y_true, y_pred, labels=labels, average=None, zero_division=np.nan)
    result["per_class_recall"] = {label: (None if math.isnan(r) else float(r)) for label, r in zip(labels, recalls)}
    cm = confusion_matrix(y_true, y_pred, labels=labels + [sentinel])
    # The sentinel row is always empty (it never is a reference): drop it.
    result["confusion"] = cm[: len(labels)].tolist()
    return result


def annotator_aware_accuracy(
    annotator_labels: Sequence[Sequence[str] | None],
    hyps: Sequence[str | None],
) -> float | None:
    """Accuracy where a prediction is correct if *any* annotator gave that label.

    Utterances with no annotator labels (``None`` or empty) are excluded; a
    ``None`` hypothesis is wrong.  Returns ``None`` when nothing is left.
    """
    _check_same_length(annotator_labels=annotator_labels, hyps=hyps)
    y_true: list[int] = []  # 1 = correct
    for ann, hyp in zip(annotator_labels, hyps):
        if not ann:
            continue
        y_true.append(int(hyp is not None and hyp in set(ann)))
    return float(np.mean(y_true)) if y_true else None


def annotator_aware_f1(
    annotator_labels: Sequence[Sequence[str] | None],
    majority: Sequence[str | None],
    hyps: Sequence[str | None],
    labels: Sequence[str],
) -> float | None:
    """Macro-F1 where a prediction is correct if *any* annotator gave that label.

    Each utterance's reference is the prediction itself when it is in the annotators' label
    set, else its majority label (``majority``; where that is ``None``, the labels' most
    frequent annotator label, ties to the first in ``labels``), so a plausible minority reading
    is credited and a wrong answer still counts against the majority class (arXiv 2509.24187's
    scoring). The utterances are those :func:`annotator_aware_accuracy` scores (with annotator
    labels); one whose annotators gave no label in ``labels`` and that has no majority is
    left out. ``None`` when nothing is left.
    """
    _check_same_length(annotator_labels=annotator_labels, majority=majority, hyps=hyps)
    labels = list(labels)
    refs: list[str] = []
    preds: list[str | None] = []
    for ann, maj, hyp in zip(annotator_labels, majority, hyps):
        if not ann:
            continue
        if hyp is not None and hyp in set(ann):
            ref = hyp
        elif maj is not None:
            ref = maj
        else:
            counts = {lab: list(ann).count(lab) for lab in labels}
            ref = max(labels, key=lambda lab: counts[lab]) if any(counts.values()) else None
        if ref is None:
            continue
        refs.append(ref)
        preds.append(hyp)
    return emotion_metrics(refs, preds, labels)["macro_f1"] if refs else None


# --------------------------------------------------------------------------- #
# Speech descriptor attributes
# --------------------------------------------------------------------------- #


def attribute_accuracy(
    ref_attrs: Sequence[Mapping[str, Any] | None],
    hyp_attrs: Sequence[Mapping[str, Any] | None],
    keys: Sequence[str] = ("gender", "pitch", "volume", "speed", "emphasis"),
) -> dict[str, Any]:
    """Accuracy of predicted speech-descriptor attributes.

    For each key, utterances whose reference has a non-null value are scored;
    a missing hypothesis dict or value counts as wrong.  Values are compared
    as stripped, case-insensitive strings.

    Returns:
        ``accuracy``: key -> accuracy (``None`` if no reference had the key);
        ``n``: key -> number of scored utterances; ``mean``: mean accuracy
        over the keys that had references (``None`` if none).
    """
    _check_same_length(ref_attrs=ref_attrs, hyp_attrs=hyp_attrs)

    def canon(v: Any) -> str | None:
        return None if v is None else str(v).strip().casefold()

    accuracy: dict[str, float | None] = {}
    counts: dict[str, int] = {}
    for key in keys:
        hits: list[int] = []
        for ref, hyp in zip(ref_attrs, hyp_attrs):
            r = canon((ref or {}).get(key))
            if r is None:
                continue
            hits.append(int(canon((hyp or {}).get(key)) == r))
        counts[key] = len(hits)
        accuracy[key] = float(np.mean(hits)) if hits else None
    scored = [v for v in accuracy.values() if v is not None]
    return {
        "accuracy": accuracy,
        "n": counts,
        "mean": float(np.mean(scored)) if scored else None,
    }


def chance_levels(
    emotion_refs: Sequence[str | None],
    attrs_refs: Sequence[Mapping[str, Any] | None],
    transcripts: Sequence[str | None] = (),
    keys: Sequence[str] = ("gender", "pitch", "volume", "speed", "emphasis"),
) -> dict[str, Any]:
    """What a model that ignores the audio scores, to read each headline figure against.

    ``ua``: 1 / classes present (any constant or random answer); ``wa``: the most frequent
    class's share (always answering it); ``wer``: 1.0 (an empty transcript);
    ``attribute_accuracy``: per attribute the most frequent reference value's share, except
    ``emphasis``: the mean of 1 / words of the transcript (a random word of it) when the
    transcripts are given; ``mean`` over the attributes scored.
    """
    refs = [r for r in emotion_refs if r is not None]
    out: dict[str, Any] = {
        "ua": 1 / len(set(refs)) if refs else None,
        "wa": max(refs.count(k) for k in set(refs)) / len(refs) if refs else None,
        "wer": 1.0,
    }
    per: dict[str, float | None] = {}
    for key in keys:
        values = [str(a[key]).strip().casefold() for a in attrs_refs if a and a.get(key) is not None]
        if key == "emphasis" and values and any(transcripts):
            words = [len(t.split()) for t in transcripts if t and t.split()]
            per[key] = float(np.mean([1 / n for n in words])) if words else None
        else:
            per[key] = max(values.count(v) for v in set(values)) / len(values) if values else None
    scored = [v for v in per.values() if v is not None]
    out["attribute_accuracy"] = {"accuracy": per, "mean": float(np.mean(scored)) if scored else None}
    return out
