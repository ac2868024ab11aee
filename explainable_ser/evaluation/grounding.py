"""Is an explanation grounded? The cues a caption or rationale states, checked against the
attributes measured (``data_modules.annotate``) or known (SynthCraft), and whether its
emotion words agree with the emotion it explains.

A *stated cue* is one of pitch, volume, speed (low / normal / high, slow / normal / fast),
gender (male / female) and the emphasised word, read from free text by a small fixed
vocabulary (":func:`stated_cues`"): descriptor captions ("high pitch", "at a slow pace") and
rationales' looser wording ("her voice is loud", "speaks quickly", "a low, quiet voice").
Per cue, **accuracy** is the share of stated values that match the reference and the
**hallucinated-cue rate** the share that contradict it (a stated cue the reference does not
know is not scored). **Consistency**: a rationale whose emotion words name another emotion
than the one given (and not the given one) is inconsistent.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence

from data_modules.evidence import CUES as EVIDENCE_CUES

CUES = ("gender", "pitch", "volume", "speed", "emphasis")

_LEVEL = {
    "low": "low",
    "deep": "low",
    "lower": "low",
    "normal": "normal",
    "moderate": "normal",
    "medium": "normal",
    "average": "normal",
    "high": "high",
    "higher": "high",
    "raised": "high",
}
_VOLUME_WORDS = {
    "loud": "high",
    "loudly": "high",
    "shouting": "high",
    "quiet": "low",
    "quietly": "low",
    "soft": "low",
    "softly": "low",
    "hushed": "low",
}
_SPEED_WORDS = {
    "quickly": "fast",
    "rapidly": "fast",
    "fast": "fast",
    "hurried": "fast",
    "rushed": "fast",
    "slowly": "slow",
    "slow": "slow",
    "unhurried": "slow",
    "drawn-out": "slow",
}
_SPEED_LEVEL = {
    "slow": "slow",
    "fast": "fast",
    "quick": "fast",
    "rapid": "fast",
    "normal": "normal",
    "moderate": "normal",
    "steady": "normal",
    "even": "normal",
    "average": "normal",
}
_LEVELS = "|".join(sorted(_LEVEL, key=len, reverse=True))
_PATTERNS = {
    "pitch": [
        re.compile(rf"\b({_LEVELS})[- ,]+(?:\w+[- ,]+)?pitch", re.I),
        re.compile(rf"\bpitch\s+(?:is|was|sounds|stays|remains)\s+(?:quite\s+|very\s+|rather\s+)?({_LEVELS})\b", re.I),
    ],
    "volume": [
        re.compile(rf"\b({_LEVELS})[- ,]+(?:\w+[- ,]+)?(?:volume|energy|loudness)", re.I),
        re.compile(rf"\b(?:volume|loudness)\s+(?:is|was|stays|remains)\s+(?:quite\s+|very\s+)?({_LEVELS})\b", re.I),
    ],
    "speed": [
        re.compile(
            r"\b(slow|normal|fast|quick|rapid|moderate|steady|even|average)[- ,]+"
            r"(?:\w+[- ,]+)?(?:pace|speed|rate|tempo)",
            re.I,
        ),
        re.compile(
            r"\b(?:pace|speed|rate|tempo)\s+(?:is|was)\s+(?:quite\s+|very\s+)?(slow|normal|fast|quick|rapid)\b", re.I
        ),
    ],
    "gender": [re.compile(r"\b(male|female|man|woman|he|she|his|her)\b", re.I)],
    "emphasis": [
        re.compile(r"word\s*[\"“']\s*([^\"”']+?)\s*[\"”']", re.I),
        re.compile(r"emphasi[sz]\w*\s+(?:on\s+)?(?:the\s+word\s+)?[\"“']([^\"”']+?)[\"”']", re.I),
    ],
}
_GENDER = {
    "male": "male",
    "man": "male",
    "he": "male",
    "his": "male",
    "female": "female",
    "woman": "female",
    "she": "female",
    "her": "female",
}

EMOTION_WORDS: dict[str, tuple[str, ...]] = {
    "neutral": ("neutral", "calm", "flat", "matter-of-fact", "composed", "unemotional", "even-toned"),
    "happy": ("happy", "happiness", "joy", "joyful", "cheerful", "delighted", "excited", "glad", "pleased", "upbeat"),
    "sad": ("sad", "sadness", "sorrow", "sorrowful", "unhappy", "gloomy", "melancholy", "downcast", "dejected"),
    "angry": ("angry", "anger", "furious", "annoyed", "irritated", "frustrated", "hostile", "rage", "mad"),
    "surprised": ("surprised", "surprise", "astonished", "amazed", "shocked"),
    "fearful": ("fearful", "fear", "afraid", "scared", "anxious", "nervous", "frightened"),
    "disgusted": ("disgusted", "disgust", "repulsed", "revolted"),
}
"""Words taken to name each emotion in a rationale (lower case, whole words)."""


def stated_cues(text: str | None) -> dict[str, str | None]:
    """The cues a text states: ``{cue: value or None}`` (first mention wins)."""
    out: dict[str, str | None] = {c: None for c in CUES}
    if not isinstance(text, str) or not text.strip():
        return out
    for cue, patterns in _PATTERNS.items():
        for pattern in patterns:
            m = pattern.search(text)
            if m:
                word = m.group(1).lower()
                out[cue] = {"pitch": _LEVEL, "volume": _LEVEL, "speed": _SPEED_LEVEL, "gender": _GENDER}.get(
                    cue, {}
                ).get(word, word)
                break
    words = re.findall(r"[a-z][a-z-]*", text.lower())
    if out["volume"] is None:
        out["volume"] = next((_VOLUME_WORDS[w] for w in words if w in _VOLUME_WORDS), None)
    if out["speed"] is None:
        out["speed"] = next((_SPEED_WORDS[w] for w in words if w in _SPEED_WORDS), None)
    return out


def emotion_words(text: str | None, labels: Sequence[str]) -> set[str]:
    """The labels whose words a text uses."""
    if not isinstance(text, str):
        return set()
    words = set(re.findall(r"[a-z][a-z-]*", text.lower()))
    return {lab for lab in labels if words & set(EMOTION_WORDS.get(lab, (lab,)))}


def _canon(cue: str, value) -> str | None:
    if value is None:
        return None
    v = str(value).strip().lower()
    return re.sub(r"[^\w']+", " ", v).strip() if cue == "emphasis" else v


def grounding(texts: Sequence[str | None], refs: Sequence[Mapping | None]) -> dict:
    """Per cue: ``stated`` (how often), ``accuracy`` (stated and right / stated and checkable),
    ``hallucinated`` (stated and contradicting / checkable); overall the same over all cues."""
    out: dict = {"per_cue": {}, "n_texts": len(texts)}
    total_checked = total_right = total_wrong = 0
    for cue in CUES:
        stated = checked = right = 0
        for text, ref in zip(texts, refs):
            value = stated_cues(text)[cue]
            if value is None:
                continue
            stated += 1
            truth = _canon(cue, (ref or {}).get(cue))
            if truth is None:
                continue
            checked += 1
            right += _canon(cue, value) == truth
        wrong = checked - right
        out["per_cue"][cue] = {
            "stated": stated,
            "checked": checked,
            "accuracy": right / checked if checked else None,
            "hallucinated": wrong / checked if checked else None,
        }
        total_checked, total_right, total_wrong = total_checked + checked, total_right + right, total_wrong + wrong
    out["accuracy"] = total_right / total_checked if total_checked else None
    out["hallucinated_cue_rate"] = total_wrong / total_checked if total_checked else None
    out["n_checked_cues"] = total_checked
    return out


def consistency(emotions: Sequence[str | None], rationales: Sequence[str | None], labels: Sequence[str]) -> dict:
    """How often a rationale's emotion words disagree with the emotion given: it names another
    emotion and not the given one. Rows without an emotion or a rationale are not counted."""
    n = disagree = silent = 0
    for emo, text in zip(emotions, rationales):
        if emo is None or not text:
            continue
        n += 1
        named = emotion_words(text, labels)
        if not named:
            silent += 1
        elif emo not in named:
            disagree += 1
    return {"n": n, "inconsistent_rate": disagree / n if n else None, "no_emotion_word_rate": silent / n if n else None}


# --------------------------------------------------------------------- cues against measurements
# The measured cues of data_modules.evidence (pitch, range, volume, speed), read from a
# rationale with their direction and, where a number follows in brackets, its magnitude.
_N = r"(?:\s*\(\s*([+-]?\d+(?:\.\d+)?)\s*(hz|semitones?|db|syllables/s|%)\s*\))?"
_CUE_PATTERNS: list[tuple[str, re.Pattern, dict[str, str]]] = [
    (
        "range",
        re.compile(r"\b(wide|broad|narrow|ordinary|usual|normal)\s+pitch\s+range" + _N, re.I),
        {"wide": "wide", "broad": "wide", "narrow": "narrow"},
    ),
    ("range", re.compile(r"\bpitch\s+range\s+(?:is\s+)?(wide|broad|narrow|near\s+its\s+usual)" + _N, re.I), {}),
    ("range", re.compile(r"\b(lively|varied|animated)(?:,?\s+\w+)?\s+(?:melody|intonation)" + _N, re.I), {}),
    ("range", re.compile(r"\b(flat|monotone)(?:,?\s+\w+)?\s+(?:melody|intonation|delivery)" + _N, re.I), {}),
    (
        "pitch",
        re.compile(
            r"\b(high|raised|higher|low|lowered|lower|deep|ordinary|normal|usual)[- ]pitch(?:ed)?\b(?!\s+range)" + _N,
            re.I,
        ),
        {},
    ),
    ("pitch", re.compile(r"\bpitch\s+(?:is\s+)?(high|low|near\s+its\s+usual)\b(?!\s+range)" + _N, re.I), {}),
    (
        "volume",
        re.compile(
            r"\b(loud|quiet|soft|hushed|raised|high|low|moderate|normal|usual|ordinary)\s+(?:voice|volume|loudness)"
            + _N,
            re.I,
        ),
        {},
    ),
    ("volume", re.compile(r"\bvolume\s+(?:is\s+)?(high|low|near\s+its\s+usual)" + _N, re.I), {}),
    ("volume", re.compile(r"\bvoice\s+(?:is|sounds)\s+(?:\w+\s+)?(loud|quiet|soft|hushed)\b" + _N, re.I), {}),
    (
        "speed",
        re.compile(
            r"\b(fast|quick|rapid|hurried|rushed|slow|unhurried|steady|even|normal|moderate)(?:,?\s+\w+)?\s+(?:pace|speed|rate|tempo)"
            + _N,
            re.I,
        ),
        {},
    ),
    ("speed", re.compile(r"\bspeaks\s+(quickly|rapidly|slowly)" + _N, re.I), {}),
]
_DIRECTION_WORDS = {
    "range": {
        "wide": "wide",
        "broad": "wide",
        "lively": "wide",
        "varied": "wide",
        "animated": "wide",
        "narrow": "narrow",
        "flat": "narrow",
        "monotone": "narrow",
    },
    "pitch": {
        "high": "high",
        "raised": "high",
        "higher": "high",
        "low": "low",
        "lowered": "low",
        "lower": "low",
        "deep": "low",
    },
    "volume": {
        "loud": "high",
        "raised": "high",
        "high": "high",
        "quiet": "low",
        "soft": "low",
        "hushed": "low",
        "low": "low",
    },
    "speed": {
        "fast": "fast",
        "quick": "fast",
        "rapid": "fast",
        "hurried": "fast",
        "rushed": "fast",
        "quickly": "fast",
        "rapidly": "fast",
        "slow": "slow",
        "unhurried": "slow",
        "slowly": "slow",
    },
}


_UNITS = {
    "hz": "Hz",
    "semitone": "semitones",
    "semitones": "semitones",
    "db": "dB",
    "syllables/s": "syllables/s",
    "%": "%",
}


def parse_cues(text: str | None) -> list[dict]:
    """The measured cues a text states, in order: ``{cue, direction, value, unit}`` (``value``
    None when no number is given). A cue stated twice counts once (its first mention)."""
    if not isinstance(text, str) or not text.strip():
        return []
    found: list[tuple[int, dict]] = []
    taken: list[tuple[int, int]] = []
    for cue, pattern, _ in _CUE_PATTERNS:
        for m in pattern.finditer(text):
            if any(a < m.end() and m.start() < b for a, b in taken):
                continue  # inside a phrase already read ("pitch range" is not "pitch")
            word = m.group(1).lower().split()[0]
            direction = _DIRECTION_WORDS[cue].get(word, "normal")
            value = float(m.group(2)) if m.group(2) else None
            unit = _UNITS.get(m.group(3).lower()) if m.group(3) else None
            taken.append(m.span())
            found.append((m.start(), {"cue": cue, "direction": direction, "value": value, "unit": unit}))
    out, seen = [], set()
    for _, c in sorted(found, key=lambda t: t[0]):
        if c["cue"] not in seen:
            seen.add(c["cue"])
            out.append(c)
    return out


def _magnitude_error(stated: Mapping, ev: Mapping) -> float | None:
    """How far a stated number lies from the measurement, in the cue's deviation units
    (semitones, semitones, dB, percent); None when no comparable number was stated."""
    v, cue = stated.get("value"), stated["cue"]
    if v is None:
        return None
    if cue == "pitch" and v > 0:
        return abs(12.0 * math.log2(v / ev["value"]))
    if cue == "range":
        return abs(v - ev["value"])
    if cue == "volume":
        return abs(v - ev["deviation"])
    if cue == "speed" and v > 0:
        return abs(100.0 * (v / ev["value"] - 1.0))
    return None


def check_cue(stated: Mapping, evidence: Mapping | None) -> dict:
    """One stated cue against the clip's evidence: ``verdict`` is ``right`` (the measured
    direction, and a stated number within the cue's dead zone of the measurement),
    ``hallucinated`` (a deviation the measurement does not show: high where it is normal or
    low), ``wrong`` (any other miss: normal where it deviates, a number too far off) or
    ``unchecked`` (no measurement of that cue)."""
    ev = (evidence or {}).get(stated["cue"])
    out = {**stated, "measured_direction": None, "measured": None, "reference": None, "magnitude_error": None}
    if ev is None:
        return {**out, "verdict": "unchecked"}
    err = _magnitude_error(stated, ev)
    out.update(
        measured_direction=ev["direction"],
        measured=ev["value"],
        reference=ev["reference"],
        measured_deviation=ev["deviation"],
        magnitude_error=None if err is None else round(err, 2),
    )
    if stated["direction"] != ev["direction"]:
        verdict = "hallucinated" if stated["direction"] != "normal" else "wrong"
    elif err is not None and err > EVIDENCE_CUES[stated["cue"]].dead_zone:
        verdict = "wrong"
    else:
        verdict = "right"
    return {**out, "verdict": verdict}


def check_rationale(text: str | None, evidence: Mapping | None) -> list[dict]:
    """Every cue a rationale states, checked (:func:`check_cue`)."""
    return [check_cue(c, evidence) for c in parse_cues(text)]


def cue_grounding(
    rationales: Sequence[str | None],
    evidences: Sequence[Mapping | None],
    answer_emotions: Sequence[str | None],
    labels: Sequence[str],
    reference_emotions: Sequence[str | None] | None = None,
) -> dict:
    """Cue-level grounding of rationales against their clips' measurements: ``cue_accuracy``
    (right / checked), ``hallucinated_cue_rate`` (hallucinated / checked), ``cues_per_rationale``
    (stated cues per rationale, checked or not), ``magnitude_accuracy`` (of stated numbers),
    ``emotion_consistency`` (the rationale's emotion words name the answer's emotion and no
    other), per cue the same counts.

    With ``reference_emotions``, ``stereotype``: does a rationale read the clip or recite its
    emotion's stereotype? The stereotype of an emotion is the direction most of these clips of
    that (reference) emotion measure on each cue; ``share`` is the part of the stated cues
    that say their answer emotion's stereotype, ``baseline_accuracy`` the cue accuracy of a
    rationale that states the stereotype for the same cues (directions only), and
    ``accuracy_off_stereotype`` the direction accuracy of the stated cues that depart from it."""
    from data_modules.evidence import build_profiles

    profiles = (
        build_profiles(zip(reference_emotions, (ev or {} for ev in evidences)))
        if reference_emotions is not None
        else None
    )
    stereo: Counter = Counter()
    n = stated = 0
    verdicts: Counter = Counter()
    per_cue: dict[str, Counter] = {c: Counter() for c in EVIDENCE_CUES}
    mags = mag_ok = 0
    consistent = with_emotion = 0
    for text, ev, emo in zip(rationales, evidences, answer_emotions):
        if not text:
            continue
        n += 1
        checked = check_rationale(text, ev)
        stated += len(checked)
        for c in checked:
            verdicts[c["verdict"]] += 1
            per_cue[c["cue"]][c["verdict"]] += 1
            if profiles is not None and c["verdict"] != "unchecked":
                usual = (profiles.get(emo) or {}).get(c["cue"], {}).get("direction")
                stereo["checked"] += 1
                stereo["stereotyped"] += c["direction"] == usual
                stereo["baseline_right"] += usual == c["measured_direction"]
                if c["direction"] != usual:
                    stereo["off"] += 1
                    stereo["off_right"] += c["direction"] == c["measured_direction"]
            if c["magnitude_error"] is not None:
                mags += 1
                mag_ok += c["magnitude_error"] <= EVIDENCE_CUES[c["cue"]].dead_zone
        if emo is not None:
            with_emotion += 1
            consistent += emotion_words(text, labels) == {emo}
    n_checked = sum(v for k, v in verdicts.items() if k != "unchecked")

    def rate(k, counts, total):
        return counts[k] / total if total else None

    extra = {}
    if profiles is not None:
        extra["stereotype"] = {
            "share": rate("stereotyped", stereo, stereo["checked"]),
            "baseline_accuracy": rate("baseline_right", stereo, stereo["checked"]),
            "accuracy_off_stereotype": rate("off_right", stereo, stereo["off"]),
            "n_off_stereotype": stereo["off"],
            "profiles": {e: {c: p["direction"] for c, p in cues.items()} for e, cues in profiles.items()},
        }
    return {
        **extra,
        "n_rationales": n,
        "n_stated_cues": stated,
        "n_checked_cues": n_checked,
        "cues_per_rationale": stated / n if n else None,
        "cue_accuracy": rate("right", verdicts, n_checked),
        "hallucinated_cue_rate": rate("hallucinated", verdicts, n_checked),
        "wrong_cue_rate": rate("wrong", verdicts, n_checked),
        "magnitude_accuracy": mag_ok / mags if mags else None,
        "n_magnitudes": mags,
        "emotion_consistency": consistent / with_emotion if with_emotion else None,
        "per_cue": {
            cue: {
                "stated": sum(c.values()),
                "accuracy": rate("right", c, sum(v for k, v in c.items() if k != "unchecked")),
                "hallucinated": rate("hallucinated", c, sum(v for k, v in c.items() if k != "unchecked")),
            }
            for cue, c in per_cue.items()
        },
    }


def rationale_samples(rows: Sequence[Mapping], n: int = 5, seed: int = 0) -> list[dict]:
    """``n`` prediction rows with a rationale and measured evidence, drawn by ``seed`` (not
    picked by hand), each with its stated cues checked: what to read beside the figures."""
    import random

    have = sorted(
        (r for r in rows if r.get("rationale") and (r.get("attributes_ref") or {}).get("evidence")),
        key=lambda r: (r["id"], r.get("task") or ""),
    )
    out = []
    for r in random.Random(seed).sample(have, min(n, len(have))):
        ev = r["attributes_ref"]["evidence"]
        out.append(
            {
                "id": r["id"],
                "emotion_ref": r.get("emotion_ref"),
                "emotion": r.get("emotion"),
                "rationale": r["rationale"],
                "cues": check_rationale(r["rationale"], ev),
                "measured": {cue: (e["value"], e.get("unit"), e["reference"], e["direction"]) for cue, e in ev.items()},
            }
        )
    return out
