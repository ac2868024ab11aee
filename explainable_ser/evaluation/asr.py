"""ASR: corpus-level word error rate (jiwer) after one text normaliser."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Any

import jiwer

from explainable_ser.evaluation.emotion import _check_same_length

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
