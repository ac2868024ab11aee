"""Caption metrics: BLEU-4, METEOR, ROUGE-L, CIDEr(-D) and SPICE through pycocoevalcap.

Scores are on the 0-1 scale the scorers give (CIDEr can exceed 1); the paper reports them times
100. METEOR runs pycocoevalcap's Java process (closed after each call); SPICE needs Java and its
models and is reported unavailable otherwise. Also the script check that flags captions in
another language than the references.
"""

from __future__ import annotations

import importlib.util
import math
import os
import shutil
import threading
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any

from explainable_ser.evaluation.emotion import _check_same_length

#: Caption metric names, in the order they are reported.
CAPTION_METRICS: tuple[str, ...] = ("bleu4", "meteor", "rouge_l", "cider", "spice")


# --------------------------------------------------------------------------- #
# Captions (pycocoevalcap)
# pycocoevalcap is imported where a scorer runs, not with the module: it bundles Java scorers, and
# a run that scores no caption (the GPU image of the device check has no pycocoevalcap) must
# still import the metrics.
# --------------------------------------------------------------------------- #

_SPICE_JARS = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")


def _pycocoevalcap_dir(subpackage: str) -> str | None:
    """Directory of a pycocoevalcap subpackage (the top package is a namespace
    package without ``__file__``)."""
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
    return " ".join(ch for ch in s if not ch.isspace() and not unicodedata.category(ch).startswith(("P", "C")))


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


def _run_meteor(
    gts: dict[Any, list[str]], res: dict[Any, list[str]], timeout_s: float
) -> tuple[float | None, str | None, list[float] | None]:
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
    return (
        f"captions: {other} of {len(langs)} hypotheses are {names[hyp]} but the references are "
        f"scored as {names[language]} ({language}); the caption metrics compare text across "
        f"languages and mean little (for zh references METEOR's English jar matches single "
        f"characters and SPICE is null). Score against references in the model's language."
    )
