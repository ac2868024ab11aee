"""Binning: measurements -> SpeechCraft's low/normal/high (slow/normal/fast) bins, against
percentiles of a reference corpus (saved and loaded as stats JSON).

The normalisations, percentile schemes and measures to bin: METHODS.md (this folder).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from data_modules.annotate.measure import (
    ANALYSIS_SR,
    ATTRIBUTES,
    BIN_LABELS,
    GENDER_F0_HZ,
    PYIN,
    SPLIT_TOP_DB,
)

GENDERS = ("male", "female")

# Measures that can be binned, the measured key each reads and its scale for binning.
MEASURES: dict[str, tuple[str, str]] = {
    "pitch_median": ("f0_median_hz", "semitones re 100 Hz"),
    "pitch_floor": ("f0_p5_hz", "semitones re 100 Hz"),
    "volume_lufs": ("loudness_lufs", "dB"),
    "volume_level": ("level_db", "dB"),
    "volume_peak": ("peak_level_db", "dB"),
    "speed": ("speaking_rate", "natural log of syllables per second"),
}
PITCH_MEASURES = {"median": "pitch_median", "floor": "pitch_floor"}
VOLUME_MEASURES = {"lufs": "volume_lufs", "level": "volume_level", "peak": "volume_peak"}
NORMALIZE_CHOICES = ("gender", "none", "speaker")

_TERTILES = (100.0 / 3.0, 200.0 / 3.0)
# (low/normal, normal/high) percentile boundaries, per attribute and threshold group.
PERCENTILE_SCHEMES: dict[str, dict[str, dict[str, tuple[float, float]]]] = {
    "speechcraft": {
        "pitch": {"male": (40.0, 90.0), "female": (10.0, 60.0), "all": _TERTILES},
        "volume": {"all": _TERTILES},
        "speed": {"all": _TERTILES},
    },
    "tertiles": {
        "pitch": {"male": _TERTILES, "female": _TERTILES, "all": _TERTILES},
        "volume": {"all": _TERTILES},
        "speed": {"all": _TERTILES},
    },
}
# Percentiles taken from the reference's own labelled bins (see label_percentiles).
LABEL_SCHEME = "reference-labels"
PERCENTILE_CHOICES = (*PERCENTILE_SCHEMES, LABEL_SCHEME)
STATS_FORMAT = "data_modules.annotate/1"  # an id in saved stats files: never renamed with modules
MIN_REFERENCE_VALUES = 10  # fewer values in a group: no quantiles for it (pooled instead)


@dataclass
class BinningConfig:
    """How measurements become bins (see METHODS.md)."""

    normalize_by: str = "gender"
    percentiles: str = "speechcraft"
    pitch_measure: str = "median"
    volume_measure: str = "lufs"
    min_speaker_utterances: int = 10

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("normalize_by", self.normalize_by, NORMALIZE_CHOICES),
            ("percentiles", self.percentiles, PERCENTILE_CHOICES),
            ("pitch_measure", self.pitch_measure, PITCH_MEASURES),
            ("volume_measure", self.volume_measure, VOLUME_MEASURES),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {sorted(allowed)}, got {value!r}")
        if self.min_speaker_utterances < 1:
            raise ValueError("min_speaker_utterances must be >= 1")

    def measure(self, attribute: str) -> str:
        if attribute == "pitch":
            return PITCH_MEASURES[self.pitch_measure]
        if attribute == "volume":
            return VOLUME_MEASURES[self.volume_measure]
        return "speed"


# ---------------------------------------------------------------------------------- binning
def _scale(measure: str, value: float | None) -> float | None:
    """A measured value on its binning scale (semitones, dB or log rate)."""
    if value is None:
        return None
    if measure.startswith("pitch"):
        return 12.0 * math.log2(value / 100.0) if value > 0 else None
    if measure == "speed":
        return math.log(value) if value > 0 else None
    return value


def resolve_genders(
    measured: Sequence[dict], metas: Sequence[dict], min_speaker_utterances: int
) -> list[tuple[str | None, str | None]]:
    """``(gender, source)`` per utterance: the corpus's, else the speaker's F0 estimate (enough
    voiced utterances), else the utterance's (see METHODS.md)."""
    by_speaker: dict[str, list[float]] = {}
    for m, meta in zip(measured, metas):
        if meta.get("speaker") and m.get("f0_median_hz") is not None:
            by_speaker.setdefault(meta["speaker"], []).append(m["f0_median_hz"])
    speaker_gender = {
        spk: ("male" if np.median(v) < GENDER_F0_HZ else "female")
        for spk, v in by_speaker.items()
        if len(v) >= min_speaker_utterances
    }
    out = []
    for m, meta in zip(measured, metas):
        if meta.get("gender"):
            out.append((meta["gender"], "corpus"))
        elif meta.get("speaker") in speaker_gender:
            out.append((speaker_gender[meta["speaker"]], "speaker_f0"))
        elif m.get("gender_f0"):
            out.append((m["gender_f0"], "utterance_f0"))
        else:
            out.append((None, None))
    return out


def _values(
    measured: Sequence[dict], metas: Sequence[dict], min_speaker_utterances: int
) -> dict[str, dict[str, list[float | None]]]:
    """Per measure: raw scaled values and speaker-centred ones (``None`` where unavailable)."""
    out: dict[str, dict[str, list[float | None]]] = {}
    for measure, (key, _) in MEASURES.items():
        raw = [_scale(measure, m.get(key)) for m in measured]
        by_speaker: dict[str, list[float]] = {}
        for value, meta in zip(raw, metas):
            if value is not None and meta.get("speaker"):
                by_speaker.setdefault(meta["speaker"], []).append(value)
        centre = {spk: float(np.median(v)) for spk, v in by_speaker.items() if len(v) >= min_speaker_utterances}
        centred = [
            value - centre[meta["speaker"]] if value is not None and meta.get("speaker") in centre else None
            for value, meta in zip(raw, metas)
        ]
        out[measure] = {"raw": raw, "speaker": centred}
    return out


def compute_stats(
    measured: Sequence[dict], metas: Sequence[dict], min_speaker_utterances: int = 10, source: Sequence[str] = ()
) -> dict[str, Any]:
    """The reference distribution: quantiles 0..100 % of every measure, raw and
    speaker-centred, pooled (``all``) and per gender (corpus gender, else the estimate)."""
    genders = [g for g, _ in resolve_genders(measured, metas, min_speaker_utterances)]
    values = _values(measured, metas, min_speaker_utterances)
    tables: dict[str, dict[str, dict[str, list[float]]]] = {"raw": {}, "speaker": {}}
    counts: dict[str, dict[str, dict[str, int]]] = {"raw": {}, "speaker": {}}
    levels = np.arange(101)
    for measure, kinds in values.items():
        for kind, vals in kinds.items():
            tables[kind][measure], counts[kind][measure] = {}, {}
            for group in ("all", *GENDERS):
                sel = [v for v, g in zip(vals, genders) if v is not None and (group == "all" or g == group)]
                counts[kind][measure][group] = len(sel)
                if len(sel) >= MIN_REFERENCE_VALUES:
                    tables[kind][measure][group] = [float(q) for q in np.percentile(sel, levels)]
    return {
        "format": STATS_FORMAT,
        "source": list(source),
        "label_percentiles": label_percentiles(metas, genders),
        "n_utterances": len(measured),
        "min_speaker_utterances": min_speaker_utterances,
        "scales": {measure: scale for measure, (_, scale) in MEASURES.items()},
        "quantile_levels": "percent 0..100, step 1",
        "quantiles": tables,
        "counts": counts,
        "measurement": {
            "analysis_sr": ANALYSIS_SR,
            "pyin": PYIN,
            "split_top_db": SPLIT_TOP_DB,
            "gender_f0_hz": GENDER_F0_HZ,
        },
    }


def label_percentiles(metas: Sequence[dict], genders: Sequence[str | None]) -> dict[str, dict[str, list[float]]] | None:
    """Percentile boundaries that reproduce the reference's own bin proportions, where its
    records carry labelled bins (``meta["labels"]``, e.g. SynthCraft's or SpeechCraft's
    attributes): per attribute and threshold group, ``[100 * P(low), 100 * P(low or normal)]``.
    ``None`` when no record has a label."""
    out: dict[str, dict[str, list[float]]] = {}
    for attribute in ATTRIBUTES:
        groups = ("all", *GENDERS) if attribute == "pitch" else ("all",)
        for group in groups:
            seen = [
                meta.get("labels", {}).get(attribute) for meta, g in zip(metas, genders) if group == "all" or g == group
            ]
            counts = Counter(label for label in seen if label is not None)
            n = sum(counts.values())
            if n < MIN_REFERENCE_VALUES:
                continue
            first, second, _ = BIN_LABELS[attribute]
            out.setdefault(attribute, {})[group] = [
                100.0 * counts[first] / n,
                100.0 * (counts[first] + counts[second]) / n,
            ]
    return out or None


def load_stats(path: str | Path) -> dict[str, Any]:
    stats = json.loads(Path(path).read_text())
    if stats.get("format") != STATS_FORMAT:
        raise ValueError(
            f"{path}: not a reference-stats file of this annotator "
            f"(format {stats.get('format')!r}, expected {STATS_FORMAT!r})"
        )
    return stats


def _threshold(
    stats: dict, kind: str, measure: str, group: str, pct: tuple[float, float]
) -> tuple[float, float] | None:
    table = stats["quantiles"].get(kind, {}).get(measure, {}).get(group)
    if table is None:
        return None
    levels = np.arange(len(table))
    lo, hi = np.interp(pct, levels, table)
    return float(lo), float(hi)


def assign_bins(
    measured: Sequence[dict], metas: Sequence[dict], stats: dict[str, Any], cfg: BinningConfig
) -> list[dict[str, Any]]:
    """Per utterance: ``{"bins": {...}, "gender_source", "binning": {...}, "null_reasons"}``
    (the null reasons added by binning, e.g. ``no_reference_stats``)."""
    genders = resolve_genders(measured, metas, cfg.min_speaker_utterances)
    values = _values(measured, metas, cfg.min_speaker_utterances)
    if cfg.percentiles == LABEL_SCHEME:
        scheme = stats.get("label_percentiles")
        if not scheme:
            raise ValueError(
                f"--percentiles {LABEL_SCHEME} needs reference stats computed on "
                "a corpus whose records carry pitch/volume/speed labels"
            )
    else:
        scheme = PERCENTILE_SCHEMES[cfg.percentiles]
    out = []
    for i, m in enumerate(measured):
        gender, source = genders[i]
        bins: dict[str, str | None] = {"gender": gender}
        binning: dict[str, Any] = {}
        reasons: dict[str, str] = {}
        for attribute in ATTRIBUTES:
            measure = cfg.measure(attribute)
            if attribute in m["null_reasons"] or values[measure]["raw"][i] is None:
                bins[attribute] = None
                if attribute not in m["null_reasons"]:
                    reasons[attribute] = "not_measured"
                continue
            mode = cfg.normalize_by
            if mode == "speaker" and values[measure]["speaker"][i] is None:
                mode = "gender"  # no speaker id, or too few of the speaker's utterances
            kind = "speaker" if mode == "speaker" else "raw"
            value = values[measure][kind][i]
            group = gender if (attribute == "pitch" and mode != "none" and gender) else "all"
            pcts = scheme.get(attribute, {})
            limits = _threshold(stats, kind, measure, group, tuple(pcts[group])) if group in pcts else None
            if limits is None and group != "all":
                group = "all"
                limits = _threshold(stats, kind, measure, group, tuple(pcts[group])) if group in pcts else None
            if limits is None:
                bins[attribute] = None
                reasons[attribute] = "no_reference_stats"
                continue
            labels = BIN_LABELS[attribute]
            bins[attribute] = labels[0] if value < limits[0] else labels[1] if value < limits[1] else labels[2]
            binning[attribute] = {
                "measure": measure,
                "normalized_by": mode,
                "group": group,
                "value": value,
                "thresholds": list(limits),
            }
        out.append({"bins": bins, "gender_source": source, "binning": binning, "null_reasons": reasons})
    return out
