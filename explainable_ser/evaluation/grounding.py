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

import re
from collections.abc import Mapping, Sequence

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
