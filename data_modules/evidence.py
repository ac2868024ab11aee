"""Acoustic evidence for an emotion label: each clip's measurements set against its speaker's
usual voice, as cues a rationale can state and anyone can check.

Four cues, each read from one measurement of :mod:`data_modules.annotate` (the other five,
voiced fraction, level, peak level and F0 percentiles, travel along in ``measured``):

========== ===================== ============ ======================= ==========================
cue        measurement           unit         deviation from usual    directions (dead zone)
========== ===================== ============ ======================= ==========================
pitch      ``f0_median_hz``      Hz           semitones               high / low (3 semitones)
range      ``f0_range_semitones`` semitones   semitones               wide / narrow (2 semitones)
volume     ``loudness_lufs``     LUFS         dB                      high / low (2 dB)
speed      ``speaking_rate``     syllables/s  percent                 fast / slow (15 %)
========== ===================== ============ ======================= ==========================

A deviation inside the dead zone is ``normal``. *Usual* is the speaker's median over their
neutral utterances in the reference set (the training split), else over all their utterances,
else the corpus's neutral median, else the corpus median (:func:`build_references`; the basis is
kept with every cue). An emotion's **profile** is the direction most of its reference clips show
on each cue; a clip's cue *supports* its label when it shows the profile's direction.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REFERENCES_FORMAT = "data_modules.evidence/1"
MIN_REFERENCE_CLIPS = 5  # fewer measured clips of a speaker (or of their neutral speech): fall back


@dataclass(frozen=True)
class Cue:
    """One checkable cue: the measurement it reads and how a deviation is judged."""

    name: str
    key: str  # the measured key (data_modules.annotate)
    unit: str  # of ``value`` and ``reference``
    delta_unit: str  # of the deviation from usual
    dead_zone: float  # |deviation| below it: normal
    up: str  # the direction above usual
    down: str  # the direction below usual

    def deviation(self, value: float, reference: float) -> float:
        if self.name == "pitch":
            return 12.0 * math.log2(value / reference)
        if self.name == "speed":
            return 100.0 * (value / reference - 1.0)
        return value - reference

    def direction(self, deviation: float) -> str:
        if deviation >= self.dead_zone:
            return self.up
        if deviation <= -self.dead_zone:
            return self.down
        return "normal"


CUES: dict[str, Cue] = {
    c.name: c
    for c in (
        Cue("pitch", "f0_median_hz", "Hz", "semitones", 3.0, "high", "low"),
        Cue("range", "f0_range_semitones", "semitones", "semitones", 2.0, "wide", "narrow"),
        Cue("volume", "loudness_lufs", "LUFS", "dB", 2.0, "high", "low"),
        Cue("speed", "speaking_rate", "syllables/s", "percent", 15.0, "fast", "slow"),
    )
}
"""The cues, in the order a rationale states them when equally strong."""


def _value(measured: Mapping | None, key: str) -> float | None:
    v = (measured or {}).get(key)
    if v is None or not isinstance(v, int | float) or not math.isfinite(v) or (key != "loudness_lufs" and v <= 0):
        return None
    return float(v)


# ------------------------------------------------------------------------------ references
def build_references(
    rows: Iterable[tuple[str | None, str | None, Mapping | None]], min_clips: int = MIN_REFERENCE_CLIPS
) -> dict[str, Any]:
    """Usual values per speaker and for the corpus from ``(speaker, emotion, measured)`` rows."""
    values: dict[tuple[str, str, str], list[float]] = defaultdict(list)  # (scope, subset, key)
    for speaker, emotion, measured in rows:
        for cue in CUES.values():
            v = _value(measured, cue.key)
            if v is None:
                continue
            for scope in ("corpus", *([f"speaker:{speaker}"] if speaker else [])):
                values[(scope, "all", cue.key)].append(v)
                if emotion == "neutral":
                    values[(scope, "neutral", cue.key)].append(v)
    refs: dict[str, Any] = {"format": REFERENCES_FORMAT, "min_clips": min_clips, "speakers": {}, "corpus": {}}
    for (scope, subset, key), vs in sorted(values.items()):
        if len(vs) < min_clips:
            continue
        target = refs["corpus"] if scope == "corpus" else refs["speakers"].setdefault(scope[8:], {})
        target.setdefault(key, {})[subset] = {"median": float(np.median(vs)), "n": len(vs)}
    return refs


def usual(refs: Mapping, speaker: str | None, key: str) -> tuple[float, str] | None:
    """``(usual value, basis)`` for a speaker's measurement, by the fallback order above."""
    for scope, entry in (("speaker", refs["speakers"].get(speaker or "", {})), ("corpus", refs["corpus"])):
        for subset in ("neutral", "all"):
            got = entry.get(key, {}).get(subset)
            if got is not None:
                return got["median"], f"{scope} {subset}"
    return None


def save_references(refs: Mapping, path: str | Path) -> None:
    Path(path).write_text(json.dumps(refs, indent=2) + "\n", encoding="utf-8")


def load_references(path: str | Path) -> dict[str, Any]:
    refs = json.loads(Path(path).read_text(encoding="utf-8"))
    if refs.get("format") != REFERENCES_FORMAT:
        raise ValueError(f"{path}: not a references file of {REFERENCES_FORMAT} (format {refs.get('format')!r})")
    return refs


# ------------------------------------------------------------------------------ evidence
def clip_evidence(measured: Mapping | None, speaker: str | None, refs: Mapping) -> dict[str, dict]:
    """Per cue the clip's ``{direction, value, unit, reference, deviation, delta_unit, basis}``;
    a cue whose measurement or reference is missing is left out."""
    out = {}
    for cue in CUES.values():
        v = _value(measured, cue.key)
        ref = usual(refs, speaker, cue.key)
        if v is None or ref is None:
            continue
        dev = cue.deviation(v, ref[0])
        out[cue.name] = {
            "direction": cue.direction(dev),
            "value": round(v, 2),
            "unit": cue.unit,
            "reference": round(ref[0], 2),
            "deviation": round(dev, 2),
            "delta_unit": cue.delta_unit,
            "basis": ref[1],
        }
    return out


def build_profiles(rows: Iterable[tuple[str | None, Mapping]]) -> dict[str, dict[str, dict]]:
    """Per emotion and cue: the direction most of its clips show and that share, from
    ``(emotion, evidence)`` rows of the reference set."""
    counts: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    for emotion, evidence in rows:
        if emotion is None:
            continue
        for name, ev in evidence.items():
            counts[emotion][name][ev["direction"]] += 1
    profiles: dict[str, dict[str, dict]] = {}
    for emotion, per_cue in sorted(counts.items()):
        profiles[emotion] = {}
        for name, c in per_cue.items():
            direction, n = c.most_common(1)[0]
            profiles[emotion][name] = {"direction": direction, "share": round(n / sum(c.values()), 3)}
    return profiles


# ------------------------------------------------------------------------------ rationales
# Phrases per (cue, direction); {v} is the stated magnitude. evaluation.grounding.parse_cues
# reads every one of them back (tests/data_modules/test_evidence.py checks the round trip).
PHRASES: dict[tuple[str, str], tuple[str, ...]] = {
    ("pitch", "high"): ("a high pitch ({v})", "a raised pitch ({v})", "a higher pitch ({v})"),
    ("pitch", "low"): ("a low pitch ({v})", "a lowered pitch ({v})", "a deep pitch ({v})"),
    ("pitch", "normal"): ("an ordinary pitch ({v})", "a pitch near its usual ({v})", "a usual pitch ({v})"),
    ("range", "wide"): ("a wide pitch range ({v})", "a lively, varied melody ({v})", "a broad pitch range ({v})"),
    ("range", "narrow"): ("a narrow pitch range ({v})", "a monotone melody ({v})", "a monotone delivery ({v})"),
    ("range", "normal"): (
        "an ordinary pitch range ({v})",
        "a pitch range near its usual ({v})",
        "a usual pitch range ({v})",
    ),
    ("volume", "high"): ("a loud voice ({v})", "a raised volume ({v})", "a high volume ({v})"),
    ("volume", "low"): ("a quiet voice ({v})", "a soft, low volume ({v})", "a hushed voice ({v})"),
    ("volume", "normal"): ("a moderate volume ({v})", "a volume near its usual ({v})", "a usual volume ({v})"),
    ("speed", "fast"): ("a fast pace ({v})", "a hurried pace ({v})", "a quick tempo ({v})"),
    ("speed", "slow"): ("a slow pace ({v})", "an unhurried, slow pace ({v})", "a slow tempo ({v})"),
    ("speed", "normal"): ("a steady pace ({v})", "an even pace ({v})", "a moderate tempo ({v})"),
}
TEMPLATES = (
    "The speaker sounds {emotion}: {cues}.",
    "{Cues} make the voice sound {emotion}.",
    "This sounds {emotion}, with {cues}.",
    "{Cues}: the speaker is {emotion}.",
    "The voice has {cues}, so the speaker sounds {emotion}.",
    "Judging by {cues}, the speaker is {emotion}.",
    "With {cues}, the voice sounds {emotion}.",
    "The speaker seems {emotion}, given {cues}.",
    "The speaker is {emotion}, as {cues} show.",
)
# Cues before the emotion: the description comes first and the label is read from it.
CUES_FIRST = tuple(t for t in TEMPLATES if t.lower().index("{cues}") < t.index("{emotion}"))
CONTRAST = ", though with {cues}"  # cues that do not support the label, said as such
NO_SUPPORT = "Labelled {emotion}, though the voice shows {cues}."


def magnitude(name: str, ev: Mapping) -> str:
    """The number a phrase states: pitch in Hz, range in semitones, volume as dB from usual,
    speed in syllables per second (short forms a rater reads at a glance)."""
    if name == "pitch":
        return f"{ev['value']:.0f} Hz"
    if name == "range":
        n = round(ev["value"])
        return f"{n} semitone" if n == 1 else f"{n} semitones"
    if name == "volume":
        return f"{round(ev['deviation']) + 0:+d} dB"  # + 0: no "-0"
    return f"{ev['value']:.1f} syllables/s"


def _join(parts: Sequence[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def choose_cues(
    emotion: str,
    evidence: Mapping[str, Mapping],
    profiles: Mapping,
    max_cues: int = 3,
    min_cues: int = 2,
    min_strength: float = 1.0,
    by: str = "profile",
) -> list[dict]:
    """The cues a rationale states: those showing the label's profile direction, strongest
    first (normal ones for a profile of ``normal``, nearest first), up to ``max_cues``; topped
    up to ``min_cues`` with the strongest others, marked ``supports: False``. ``min_strength``
    above 1 states only clear cues: a deviation at least that many dead zones from usual, a
    ``normal`` within 1 / ``min_strength`` of one (the borderline ones are left unsaid; when
    every cue is borderline, they are chosen as with ``min_strength`` 1).

    ``by="strength"`` ignores the profile in the choice: the clip's clear cues, deviations
    strongest first then normals nearest first, up to ``max_cues`` (``supports`` still says
    whether each shows the profile; ``min_cues`` does not apply). The stated cues then depend
    on the clip alone, so a model cannot earn them by reciting its emotion's usual cues."""
    if by not in ("profile", "strength"):
        raise ValueError(f"choose_cues: by must be 'profile' or 'strength', not {by!r}")
    profile = profiles.get(emotion, {})

    def strength(name: str) -> float:
        ev = evidence[name]
        return abs(ev["deviation"]) / CUES[name].dead_zone

    def clear(name: str) -> bool:
        s = strength(name)
        return s >= min_strength if evidence[name]["direction"] != "normal" else s <= 1.0 / min_strength

    if not any(clear(n) for n in evidence):
        min_strength = 1.0  # nothing clear to state: the clearest of the borderline ones

    def wants(name: str) -> bool:
        want = profile.get(name, {}).get("direction")
        return want is not None and evidence[name]["direction"] == want

    if by == "strength":
        clear_ones = [n for n in evidence if clear(n)]
        deviating = sorted((n for n in clear_ones if evidence[n]["direction"] != "normal"), key=strength, reverse=True)
        usual = sorted((n for n in clear_ones if evidence[n]["direction"] == "normal"), key=strength)
        chosen = [(n, wants(n)) for n in (deviating + usual)[:max_cues]]
        return [_stated(n, s, evidence[n]) for n, s in chosen]

    supporting, others = [], []
    for name in (n for n in evidence if clear(n)):
        (supporting if wants(name) else others).append(name)
    supporting.sort(key=lambda n: strength(n) if evidence[n]["direction"] != "normal" else -strength(n), reverse=True)
    others.sort(key=strength, reverse=True)
    chosen = [(n, True) for n in supporting[:max_cues]]
    chosen += [(n, False) for n in others[: max(0, min_cues - len(chosen))]]
    return [_stated(n, s, evidence[n]) for n, s in chosen]


def _stated(name: str, supports: bool, ev: Mapping) -> dict:
    keys = ("direction", "value", "unit", "reference", "deviation", "delta_unit")
    return {"cue": name, **{k: ev[k] for k in keys}, "supports": supports}


def rng_for(utt_id: str, seed: int = 0) -> random.Random:
    digest = hashlib.sha256(f"{seed}:{utt_id}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "little"))


def rationale_opening(cues: Sequence[Mapping], rng: random.Random) -> str:
    """What a describe-first rationale says before its emotion: a :data:`CUES_FIRST` template
    up to ``{emotion}``, with each cue's direction and no number ("The voice has a loud voice
    and a fast pace, so the speaker sounds"). A model's own cue predictions begin its answer
    with it, and the model names the emotion (``eval.concept_rationale``)."""
    if not cues:
        raise ValueError("rationale_opening: no cues to state")
    phrases = [rng.choice(PHRASES[(c["cue"], c["direction"])]).replace(" ({v})", "") for c in cues]
    template = rng.choice(CUES_FIRST)
    opening = template[: template.index("{emotion}")].rstrip()
    return opening.format(cues=_join(phrases), Cues=_join(phrases)[0].upper() + _join(phrases)[1:])


def render_rationale(
    emotion: str, cues: Sequence[Mapping], rng: random.Random, numbers: bool = True, describe_first: bool = False
) -> str:
    """A one-sentence rationale naming ``cues`` (each with its number unless ``numbers`` is
    False: the direction alone, still checked) and the emotion. ``describe_first``: every cue
    said as what the voice shows, before the emotion (templates of :data:`CUES_FIRST`), whether
    or not it shows the label's profile."""
    phrases = {True: [], False: []}
    for c in cues:
        phrase = rng.choice(PHRASES[(c["cue"], c["direction"])])
        phrase = phrase.format(v=magnitude(c["cue"], c)) if numbers else phrase.replace(" ({v})", "")
        phrases[describe_first or bool(c.get("supports", True))].append(phrase)
    if not phrases[True]:  # nothing measured shows the label's profile: said so
        return NO_SUPPORT.format(emotion=emotion, cues=_join(phrases[False]))
    main = phrases[True]
    template = rng.choice(CUES_FIRST if describe_first else TEMPLATES)
    text = template.format(emotion=emotion, cues=_join(main), Cues=_join(main)[0].upper() + _join(main)[1:])
    if phrases[False]:
        text = text[:-1] + CONTRAST.format(cues=_join(phrases[False])) + "."
    return text
