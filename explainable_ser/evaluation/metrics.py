"""Evaluation metrics for explainable speech emotion recognition.

Every function here is a pure function on Python lists; the numbers come from
the standard libraries (scikit-learn, jiwer, pycocoevalcap, scipy), this module
only handles input validation, missing values and bookkeeping.

* SER: unweighted accuracy (UA, mean per-class recall = balanced accuracy),
  weighted accuracy (WA, plain accuracy), macro-F1 and a confusion matrix
  (:func:`emotion_metrics`); :func:`annotator_aware_accuracy` and
  :func:`annotator_aware_f1` credit a prediction matching any annotator's label.
* ASR: corpus-level word error rate after one text normaliser
  (:func:`normalize_text`, :func:`wer`).
* Captions: BLEU-4, METEOR, ROUGE-L, CIDEr(-D), SPICE via pycocoevalcap
  (:func:`caption_metrics`).  Scores are on the 0-1 scale the scorers give
  (CIDEr can exceed 1); the paper reports them multiplied by 100.
* Speech descriptors: per-attribute accuracy (:func:`attribute_accuracy`).
* Significance: one-tailed paired t-test between two systems on the same
  utterances (:func:`paired_t_test`, :func:`per_utterance_scores`).

Missing values: a hypothesis that is ``None`` (the model output could not be
parsed) always counts as wrong / empty; an utterance whose *reference* is
missing is excluded and counted separately, so no metric is ever computed on a
made-up value.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import threading
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jiwer
import numpy as np
from scipy import stats
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, recall_score

from explainable_ser.model.prompts import get_task

__all__ = [
    "emotion_metrics",
    "annotator_aware_accuracy",
    "annotator_aware_f1",
    "normalize_text",
    "wer",
    "caption_metrics",
    "CAPTION_METRICS",
    "paired_t_test",
    "per_utterance_scores",
    "attribute_accuracy",
    "compute_metrics",
    "counterfactual",
    "chance_levels",
    "script_language",
    "caption_language_warning",
    "ALPHA",
]

#: Significance level used by the paper.
ALPHA = 0.05

#: Caption metric names, in the order they are reported.
CAPTION_METRICS: tuple[str, ...] = ("bleu4", "meteor", "rouge_l", "cider", "spice")

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
    result["per_class_recall"] = {
        label: (None if math.isnan(r) else float(r)) for label, r in zip(labels, recalls)
    }
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
# Speech recognition
# --------------------------------------------------------------------------- #

# Apostrophe look-alikes that NFKC leaves alone but people type for "'".
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\uff07": "'"})
# An apostrophe not between two word characters is quotation, not a contraction.
_LOOSE_APOSTROPHE = re.compile(r"(?<!\w)'|'(?!\w)")


def normalize_text(s: str) -> str:
    """The single text normaliser used before WER.

    Steps, in order: Unicode NFKC (full-width forms, ligatures, compatibility
    characters); lowercase; typographic apostrophes -> ``'``; every Unicode
    punctuation character (category ``P*``) except an apostrophe *inside* a
    word is replaced by a space (so "well-known" -> "well known", "don't" stays,
    "'quoted'" -> "quoted"); whitespace runs collapse to one space and the
    ends are stripped.  Symbols (``$``, ``%``, ``+``) and digits are kept;
    numbers are not verbalised.
    """
    s = unicodedata.normalize("NFKC", s).lower().translate(_APOSTROPHES)
    # Space (not deletion) so that punctuation never glues two words together.
    s = "".join(" " if ch != "'" and unicodedata.category(ch).startswith("P") else ch for ch in s)
    s = _LOOSE_APOSTROPHE.sub(" ", s)
    return " ".join(s.split())


def wer(refs: Sequence[str | None], hyps: Sequence[str | None]) -> dict[str, Any]:
    """Corpus-level word error rate (total edits / total reference words).

    Both sides go through :func:`normalize_text`, then jiwer aligns them.  A
    ``None`` hypothesis is scored as the empty string (all deletions).
    Utterances whose reference is ``None`` or normalises to empty are skipped
    (``n_skipped_empty_reference``): WER is undefined for them.

    Returns:
        ``wer`` (``None`` if nothing scored), ``substitutions``, ``deletions``,
        ``insertions``, ``hits``, ``ref_words``, ``n``,
        ``n_skipped_empty_reference``.
    """
    _check_same_length(refs=refs, hyps=hyps)
    ref_norm: list[str] = []
    hyp_norm: list[str] = []
    skipped = 0
    for ref, hyp in zip(refs, hyps):
        r = normalize_text(ref) if ref is not None else ""
        if not r:
            skipped += 1
            continue
        ref_norm.append(r)
        hyp_norm.append(normalize_text(hyp) if hyp is not None else "")

    result: dict[str, Any] = {
        "wer": None,
        "substitutions": 0,
        "deletions": 0,
        "insertions": 0,
        "hits": 0,
        "ref_words": 0,
        "n": len(ref_norm),
        "n_skipped_empty_reference": skipped,
    }
    if not ref_norm:
        return result
    out = jiwer.process_words(ref_norm, hyp_norm)
    result.update(
        wer=float(out.wer),
        substitutions=int(out.substitutions),
        deletions=int(out.deletions),
        insertions=int(out.insertions),
        hits=int(out.hits),
        ref_words=int(out.hits + out.substitutions + out.deletions),
    )
    return result


# --------------------------------------------------------------------------- #
# Captions (pycocoevalcap)
# --------------------------------------------------------------------------- #

_SPICE_JARS = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")


def _pycocoevalcap_dir(subpackage: str) -> str | None:
    """Directory of a pycocoevalcap subpackage (the top package is a namespace
    package without ``__file__``)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(f"pycocoevalcap.{subpackage}")
    except ImportError:
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return list(spec.submodule_search_locations)[0]


def _clean_caption(s: str) -> str:
    # str.split() also splits on \r, \x0b, \x0c, \x85, \u2028...: the PTB
    # tokenizer works line by line, so any extra line break inside a caption
    # would silently shift every following caption onto the wrong utterance.
    return " ".join(s.split())


def _ptb_tokenize(sentences: dict[Any, str]) -> dict[Any, str]:
    """Lowercase + PTB-tokenise + drop punctuation, as the COCO evaluation does."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    # Empty strings never reach Java, so they cannot disturb the line alignment.
    todo = {k: [{"caption": s}] for k, s in sentences.items() if s}
    out = {k: "" for k in sentences}
    if todo:
        tokenized = PTBTokenizer().tokenize(todo)
        missing = [k for k in todo if len(tokenized.get(k, ())) != 1]
        if missing:
            raise RuntimeError(f"PTB tokenizer lost {len(missing)} caption(s)")
        out.update({k: v[0] for k, v in tokenized.items()})
    return out


def _char_tokenize(s: str) -> str:
    """Mandarin: one token per character, whitespace and punctuation dropped.

    Latin letters in a Mandarin caption also become single-character tokens
    (lowercased, mirroring the PTB ``-lowerCase`` used for English).
    """
    s = unicodedata.normalize("NFKC", s).lower()
    return " ".join(
        ch for ch in s if not ch.isspace() and not unicodedata.category(ch).startswith(("P", "C"))
    )


def _close_meteor(meteor: Any) -> None:
    """Stop the METEOR java process for good (idempotent, never raises)."""
    proc = getattr(meteor, "meteor_p", None)
    if proc is not None:
        try:
            proc.stdin.close()
        except Exception:  # noqa: BLE001 - closing a broken pipe may fail; we kill anyway
            pass
        proc.kill()
        try:
            proc.wait(timeout=30)
        except Exception:  # noqa: BLE001
            pass
        for stream in (proc.stdout, proc.stderr):
            try:
                stream.close()
            except Exception:  # noqa: BLE001
                pass


def _safe_meteor_class() -> type:
    from pycocoevalcap.meteor.meteor import Meteor

    class _SafeMeteor(Meteor):
        # Meteor.__del__ takes the scorer's lock: if compute_score raised (or
        # timed out) while holding it, garbage collection would block forever;
        # if __init__ failed, __del__ raises AttributeError.  Ours does neither.
        def __del__(self) -> None:
            _close_meteor(self)

    return _SafeMeteor


def _run_meteor(gts: dict[Any, list[str]], res: dict[Any, list[str]],
                timeout_s: float) -> tuple[float | None, str | None, list[float] | None]:
    """(corpus METEOR, reason it is None, per-item scores in ``gts`` key order)."""
    if shutil.which("java") is None:
        return None, "METEOR needs Java (no `java` on PATH)", None
    # pycocoevalcap only strips '|||' (its field separator) from hypotheses.
    gts = {k: [r.replace("|||", " ") for r in v] for k, v in gts.items()}
    try:
        meteor = _safe_meteor_class()()
    except Exception as e:  # noqa: BLE001
        return None, f"METEOR could not start: {type(e).__name__}: {e}", None

    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["score"], box["scores"] = meteor.compute_score(gts, res)
        except BaseException as e:  # noqa: BLE001 - reported to the caller below
            box["error"] = e

    # The scorer talks to java through blocking readline(); a thread with a
    # deadline is the only way to bound it.  Killing the process makes the
    # pending readline return EOF, so the thread then ends by itself.
    thread = threading.Thread(target=work, name="meteor", daemon=True)
    thread.start()
    thread.join(timeout_s)
    timed_out = thread.is_alive()
    _close_meteor(meteor)
    thread.join(10)
    if timed_out:
        return None, f"METEOR timed out after {timeout_s:g} s", None
    if "error" in box:
        e = box["error"]
        return None, f"METEOR failed: {type(e).__name__}: {e}", None
    return box["score"], None, box["scores"]


def _spice_unavailable(language: str) -> str | None:
    if language != "en":
        return "SPICE parses English scene graphs only"
    if shutil.which("java") is None:
        return "SPICE needs Java (no `java` on PATH)"
    spice_dir = _pycocoevalcap_dir("spice")
    if spice_dir is None:
        return "pycocoevalcap.spice not found"
    missing = [j for j in _SPICE_JARS if not os.path.exists(os.path.join(spice_dir, "lib", j))]
    if missing:
        # Checked up front: Spice() would otherwise try a ~400 MB download.
        return "SPICE needs Stanford CoreNLP jars (downloaded on first use; no network here): missing " + ", ".join(
            missing
        )
    return None


def caption_metrics(
    refs: Sequence[Sequence[str] | str | None],
    hyps: Sequence[str | None],
    language: str = "en",
    metrics: Iterable[str] = CAPTION_METRICS,
    meteor_timeout_s: float = 600.0,
    per_item: bool = False,
) -> dict[str, Any]:
    """COCO caption metrics of generated descriptions against references.

    Args:
        refs: per utterance one reference string or a list of them; ``None``,
            empty strings and empty lists are dropped and an utterance left
            without references is skipped (``n_skipped_no_reference``).
        hyps: generated caption per utterance; ``None`` is scored as an empty
            caption (every metric gives it 0 on that utterance).
        language: ``"en"``: lowercase + Stanford PTB tokenisation with
            punctuation removed (pycocoevalcap's ``PTBTokenizer``, runs Java);
            ``"zh"``: space-separated characters, whitespace/punctuation
            dropped.  METEOR is the English-configured jar in both cases (for
            ``zh`` it effectively counts exact character matches); SPICE is
            English-only.
        metrics: subset of :data:`CAPTION_METRICS` to compute; the others are
            ``None`` with reason "not requested".  METEOR alone takes several
            seconds (JVM start + paraphrase table).
        meteor_timeout_s: deadline for the METEOR java process.
        per_item: also return each utterance's score (``per_item``: metric ->
            one float per input utterance, ``None`` where it had no reference
            or the metric is ``None``): the scorers' own per-item scores, i.e.
            sentence BLEU-4 (whose mean is not the corpus BLEU-4), ROUGE-L,
            CIDEr-D (IDF from the whole set; their mean is the corpus CIDEr),
            METEOR.  SPICE's are not kept.

    Returns:
        ``bleu4``, ``meteor``, ``rouge_l``, ``cider`` (pycocoevalcap's CIDEr
        is CIDEr-D; its IDF comes from the references of the evaluated set, so
        it is only meaningful on a whole test set: on one utterance it is 0),
        ``spice``: floats on the scorers' 0-1 scale (the paper reports x100),
        or ``None``; ``reasons``: metric -> why it is ``None``; ``n``,
        ``n_skipped_no_reference``.  A failing scorer (no Java, missing SPICE
        jars, timeout, any exception) gives ``None`` plus a reason, never an
        exception and never a substitute number.
    """
    _check_same_length(refs=refs, hyps=hyps)
    if language not in ("en", "zh"):
        raise ValueError(f"language must be 'en' or 'zh', got {language!r}")
    wanted = set(metrics)
    unknown = wanted - set(CAPTION_METRICS)
    if unknown:
        raise ValueError(f"unknown caption metrics {sorted(unknown)}; choose from {CAPTION_METRICS}")

    gts_raw: dict[int, list[str]] = {}
    res_raw: dict[int, str] = {}
    skipped = 0
    for i, (ref, hyp) in enumerate(zip(refs, hyps)):
        ref_list = [ref] if isinstance(ref, str) else list(ref or [])
        ref_list = [_clean_caption(r) for r in ref_list if r is not None and r.strip()]
        if not ref_list:
            skipped += 1
            continue
        gts_raw[i] = ref_list
        res_raw[i] = _clean_caption(hyp) if hyp is not None else ""

    result: dict[str, Any] = {m: None for m in CAPTION_METRICS}
    reasons: dict[str, str] = {m: "not requested" for m in CAPTION_METRICS if m not in wanted}
    result.update(reasons=reasons, n=len(gts_raw), n_skipped_no_reference=skipped)
    items: dict[str, list[float | None]] = {}
    if per_item:
        result["per_item"] = items
    if not wanted:
        return result
    if not gts_raw:
        reasons.update({m: "no utterances with a reference" for m in wanted})
        return result

    # Tokenise every sentence in one call: each PTB call starts a JVM.
    flat: dict[tuple[int, int], str] = {(i, -1): h for i, h in res_raw.items()}
    flat.update({(i, j): r for i, rs in gts_raw.items() for j, r in enumerate(rs)})
    try:
        if language == "en":
            if shutil.which("java") is None:
                raise RuntimeError("the PTB tokenizer needs Java (no `java` on PATH)")
            tok = _ptb_tokenize(flat)
        else:
            tok = {k: _char_tokenize(s) for k, s in flat.items()}
    except Exception as e:  # noqa: BLE001 - every metric depends on it
        reasons.update({m: f"tokenisation failed: {type(e).__name__}: {e}" for m in wanted})
        return result
    gts = {i: [tok[(i, j)] for j in range(len(rs))] for i, rs in gts_raw.items()}
    res = {i: [tok[(i, -1)]] for i in res_raw}

    def scorer(name: str) -> tuple[float | None, str | None, Sequence[float] | None]:
        """(corpus score, reason it is None, per-item scores in ``gts`` key order)."""
        if name == "bleu4":
            from pycocoevalcap.bleu.bleu import Bleu

            score, scores = Bleu(4).compute_score(gts, res, verbose=0)
            return score[3], None, scores[3]
        if name == "meteor":
            return _run_meteor(gts, res, meteor_timeout_s)
        if name == "rouge_l":
            from pycocoevalcap.rouge.rouge import Rouge

            score, scores = Rouge().compute_score(gts, res)
            return score, None, scores
        if name == "cider":
            from pycocoevalcap.cider.cider import Cider

            score, scores = Cider().compute_score(gts, res)
            return score, None, scores
        reason = _spice_unavailable(language)
        if reason is not None:
            return None, reason, None
        from pycocoevalcap.spice.spice import Spice

        return Spice().compute_score(gts, res)[0], None, None

    order = list(gts)  # the scorers iterate the dict's keys in this order
    for name in CAPTION_METRICS:
        if name not in wanted:
            continue
        scores = None
        try:
            value, reason, scores = scorer(name)
        except Exception as e:  # noqa: BLE001 - a broken scorer must not kill the evaluation
            value, reason = None, f"{name} failed: {type(e).__name__}: {e}"
        if value is not None and not math.isfinite(float(value)):
            value, reason = None, f"{name} scorer returned a non-finite value ({value})"
        result[name] = None if value is None else float(value)
        if reason is not None:
            reasons[name] = reason
        if per_item and name != "spice":
            column: list[float | None] = [None] * len(hyps)
            if value is not None and scores is not None:
                for i, v in zip(order, scores):
                    column[i] = float(v)
            items[name] = column
    return result


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


def chance_levels(emotion_refs: Sequence[str | None], attrs_refs: Sequence[Mapping[str, Any] | None],
                  transcripts: Sequence[str | None] = (),
                  keys: Sequence[str] = ("gender", "pitch", "volume", "speed", "emphasis")) -> dict[str, Any]:
    """What a model that ignores the audio scores, to read each headline figure against.

    ``ua``: 1 / classes present (any constant or random answer); ``wa``: the most frequent
    class's share (always answering it); ``wer``: 1.0 (an empty transcript);
    ``attribute_accuracy``: per attribute the most frequent reference value's share, except
    ``emphasis``: the mean of 1 / words of the transcript (a random word of it) when the
    transcripts are given; ``mean`` over the attributes scored.
    """
    refs = [r for r in emotion_refs if r is not None]
    out: dict[str, Any] = {"ua": 1 / len(set(refs)) if refs else None,
                           "wa": max(refs.count(k) for k in set(refs)) / len(refs) if refs else None,
                           "wer": 1.0}
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


def script_language(text: str | None) -> str | None:
    """``zh`` when most letters of ``text`` are CJK ideographs, ``en`` when most are Latin,
    ``None`` for a text without letters (empty, digits, punctuation)."""
    cjk = latin = 0
    for ch in text or "":
        if "\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf":
            cjk += 1
        elif ch.isascii() and ch.isalpha():
            latin += 1
    if cjk == latin == 0:
        return None
    # A Mandarin caption of n characters says as much as an English one of about 4n letters.
    return "zh" if 4 * cjk >= latin else "en"


def caption_language_warning(hyps: Sequence[str | None], language: str) -> str | None:
    """A warning when most scorable hypotheses are written in another language than the
    references are scored in (``language``: ``en`` or ``zh``), else ``None``."""
    langs = [script_language(h) for h in hyps]
    langs = [x for x in langs if x is not None]
    other = sum(x != language for x in langs)
    if not langs or 2 * other <= len(langs):
        return None
    names = {"en": "English", "zh": "Mandarin"}
    hyp = "zh" if language == "en" else "en"
    return (f"captions: {other} of {len(langs)} hypotheses are {names[hyp]} but the references are "
            f"scored as {names[language]} ({language}); the caption metrics compare text across "
            f"languages and mean little (for zh references METEOR's English jar matches single "
            f"characters and SPICE is null). Score against references in the model's language.")


# -- metrics.json from prediction rows ------------------------------------------------------
_score_captions = caption_metrics  # compute_metrics' argument of that name would shadow it


def _emotion_rows(rows):
    return [r for r in rows if "emotion" in get_task(r["task"]).fields]


def compute_metrics(rows: list[dict], labels: list[str],
                    counterfactual_rows: Mapping[str, list[dict]] | None = None,
                    language: str = "auto", caption_metrics: tuple[str, ...] = CAPTION_METRICS) -> dict:
    """``metrics.json`` from prediction rows (keys of the design notes, plus extras).

    ``language`` of the captions: ``en`` (PTB tokens), ``zh`` (characters) or ``auto``: ``zh``
    when most caption rows' records say ``language: zh`` (EMOSEC), else ``en``. ``warnings``
    lists what makes a figure misleading (hypotheses in another language than the references);
    ``chance`` what a model that ignores the audio would score (:func:`chance_levels`).
    ``counterfactual_rows``: the rows of decodes with a speech stream zeroed, by stream name
    (``descriptor``, ``content``); each gets a :func:`counterfactual` entry.
    """
    out: dict = {"n_utterances": len({r["id"] for r in rows}), "reasons": {}, "warnings": []}
    emo = _emotion_rows(rows)
    em = emotion_metrics([r["emotion_ref"] for r in emo], [r["emotion"] for r in emo], labels)
    out.update(ua=em["ua"], wa=em["wa"], macro_f1=em["macro_f1"], n_unparsed=em["n_unparsed"],
               confusion=em["confusion"], confusion_columns=em["confusion_columns"],
               per_class_recall=em["per_class_recall"], labels=labels)
    if not emo:
        out["reasons"]["ua"] = "no emotion task was decoded"
    ann = [r for r in emo if r.get("annotator_emotions")]
    out["annotator_aware_accuracy"] = annotator_aware_accuracy(
        [r["annotator_emotions"] for r in ann], [r["emotion"] for r in ann]) if ann else None
    out["annotator_aware_macro_f1"] = annotator_aware_f1(
        [r["annotator_emotions"] for r in ann], [r["emotion_ref"] for r in ann],
        [r["emotion"] for r in ann], labels) if ann else None
    asr = [r for r in rows if "transcript" in get_task(r["task"]).fields and r["transcript_ref"]]
    out["wer"] = wer([r["transcript_ref"] for r in asr], [r["transcript"] for r in asr])["wer"] if asr else None
    if not asr:
        out["reasons"]["wer"] = "no transcript task with references was decoded"
    cap = [r for r in rows if "caption" in get_task(r["task"]).fields and r["caption_ref"]]
    cap_attrs = [r["attributes_ref"] or {} for r in cap]
    if cap:
        if language == "auto":
            zh = sum(str(r.get("language") or "").lower().startswith("zh") for r in cap)
            language = "zh" if zh * 2 > len(cap) else "en"
        out["caption_language"] = language
        # An unparsed output has no caption, but its raw text still shows the model's language.
        warning = caption_language_warning([r["caption"] or r.get("raw") for r in cap], language)
        if warning:
            out["warnings"].append(warning)
        cm = _score_captions([r["caption_ref"] for r in cap], [r["caption"] for r in cap], language,
                               metrics=caption_metrics)
        for k in ("bleu4", "meteor", "rouge_l", "cider", "spice"):
            out[k] = cm[k]
        out["reasons"].update(cm.get("reasons", {}))
        out["attribute_accuracy"] = attribute_accuracy(cap_attrs, [r["caption_attributes"] for r in cap])
    else:
        for k in ("bleu4", "meteor", "rouge_l", "cider", "spice"):
            out[k] = None
            out["reasons"][k] = "no caption task with references was decoded"
        out["attribute_accuracy"] = None
    out["chance"] = chance_levels([r["emotion_ref"] for r in emo], cap_attrs,
                                  [r.get("transcript_ref") for r in cap])
    out.update(explanation_metrics(rows, labels, caption_metrics))
    if counterfactual_rows:
        # one probe per zeroed stream: {"descriptor": rows, "content": rows}
        out["counterfactual"] = {stream: counterfactual(emo, _emotion_rows(cf), labels)
                                 for stream, cf in counterfactual_rows.items()}
    return out


def explanation_metrics(rows: list[dict], labels: list[str],
                        caption_metrics: tuple[str, ...] = CAPTION_METRICS) -> dict:
    """What the explanations say, checked (:mod:`explainable_ser.evaluation.grounding`):

    * ``grounding``: per explanation kind (``caption``, ``rationale``) the cues it states
      against the reference attributes: per-cue accuracy, ``hallucinated_cue_rate`` (a stated
      cue that contradicts the measurement);
    * ``rationale``: BLEU-4 / ROUGE-L / CIDEr of generated rationales against the records'
      (teacher-written) ones, and ``consistency``: the rate at which a rationale's emotion
      words disagree with the emotion given.
    Rows of tasks without that field are not counted; absent kinds are left out."""
    from explainable_ser.evaluation.grounding import consistency, grounding

    out: dict = {"grounding": {}}
    for kind in ("caption", "rationale"):
        have = [r for r in rows if kind in get_task(r["task"]).fields and r.get("attributes_ref")]
        if have:
            out["grounding"][kind] = grounding([r.get(kind) for r in have], [r["attributes_ref"] for r in have])
    rat = [r for r in rows if "rationale" in get_task(r["task"]).fields]
    if rat:
        info: dict = {"n": len(rat), "n_missing": sum(not r.get("rationale") for r in rat)}
        with_ref = [r for r in rat if r.get("rationale_ref")]
        if with_ref:
            wanted = tuple(m for m in ("bleu4", "rouge_l", "cider") if m in caption_metrics)
            cm = _score_captions([r["rationale_ref"] for r in with_ref], [r.get("rationale") for r in with_ref],
                                 "en", metrics=wanted)
            info.update({m: cm[m] for m in wanted})
        else:
            info["reason"] = "no rationale references (records without a rationale field)"
        info["consistency"] = consistency([r.get("emotion") for r in rat], [r.get("rationale") for r in rat], labels)
        out["rationale"] = info
    return out


def counterfactual(rows: list[dict], zeroed: list[dict], labels: list[str]) -> dict:
    """Decode again with one speech stream zeroed and compare with the normal decode.

    A zeroed stream can make the model *change* its answer or *break* (no parseable emotion
    at all); one "changed" rate would mix the two, so they are reported apart:

    * ``unparseable_rate``: share of zeroed outputs with no emotion in ``labels``;
      ``became_unparseable_rate``: the same among utterances whose normal output parsed;
    * ``changed_among_parsed_rate``: among utterances where both outputs parsed, the share
      whose emotion differs; ``changed_if_independent``: what that share would be if the zeroed
      answers were drawn independently of the normal ones with the same label frequencies
      (``1 - sum_k p_normal(k) p_zeroed(k)``, Cohen's chance agreement), a reference for it;
    * ``ua`` / ``ua_zeroed``: UA of the normal and zeroed decodes over all pairs (an
      unparseable output counts as wrong); ``ua_parsed`` / ``ua_zeroed_parsed``: both over the
      pairs where both outputs parsed; ``chance_ua``: 1 / classes present, what any constant or
      random answer gets;
    * ``emotion_changed_rate``: the older combined figure (unparseable counts as changed).
    """
    by_key = {(r["id"], r["task"]): r for r in zeroed}
    pairs = [(r, by_key[(r["id"], r["task"])]) for r in rows if (r["id"], r["task"]) in by_key]
    if not pairs:
        return {"n": 0}
    label_set = set(labels)

    def ua(subset, side: int):
        return emotion_metrics([p[side]["emotion_ref"] for p in subset],
                               [p[side]["emotion"] for p in subset], labels)["ua"]

    orig_parsed = [p for p in pairs if p[0]["emotion"] in label_set]
    both = [p for p in orig_parsed if p[1]["emotion"] in label_set]
    n_unparseable = sum(b["emotion"] not in label_set for _, b in pairs)
    out = {
        "n": len(pairs),
        "n_unparseable": n_unparseable,
        "unparseable_rate": n_unparseable / len(pairs),
        "became_unparseable_rate": (len(orig_parsed) - len(both)) / len(orig_parsed) if orig_parsed else None,
        "n_both_parsed": len(both),
        "changed_among_parsed_rate": None,
        "changed_if_independent": None,
        "ua": ua(pairs, 0),
        "ua_zeroed": ua(pairs, 1),
        "ua_parsed": ua(both, 0) if both else None,
        "ua_zeroed_parsed": ua(both, 1) if both else None,
        "chance_ua": 1 / len({a["emotion_ref"] for a, _ in pairs if a["emotion_ref"] is not None} or labels),
        "emotion_changed_rate": sum(a["emotion"] != b["emotion"] for a, b in pairs) / len(pairs),
    }
    if both:
        out["changed_among_parsed_rate"] = sum(a["emotion"] != b["emotion"] for a, b in both) / len(both)
        p_a = {k: sum(a["emotion"] == k for a, _ in both) / len(both) for k in labels}
        p_b = {k: sum(b["emotion"] == k for _, b in both) / len(both) for k in labels}
        out["changed_if_independent"] = 1.0 - sum(p_a[k] * p_b[k] for k in labels)
    with_rationale = [(a, b) for a, b in pairs if "rationale" in get_task(a["task"]).fields]
    if with_rationale:
        # The probe on the reasons: does the rationale change, and does it state more
        # contradicted cues, once the stream is gone?
        from explainable_ser.evaluation.grounding import grounding

        refs = [a.get("attributes_ref") for a, _ in with_rationale]
        out["rationale"] = {
            "n": len(with_rationale),
            "changed_rate": sum((a.get("rationale") or "") != (b.get("rationale") or "")
                                for a, b in with_rationale) / len(with_rationale),
            "hallucinated_cue_rate": grounding([a.get("rationale") for a, _ in with_rationale], refs)[
                "hallucinated_cue_rate"],
            "hallucinated_cue_rate_zeroed": grounding([b.get("rationale") for _, b in with_rationale], refs)[
                "hallucinated_cue_rate"],
        }
    return out
