"""Measurements of one utterance: F0 (pYIN), loudness and levels, speaking rate, and the
F0 gender estimate; the first pass of the annotator, in worker processes.

Every quantity, its null reasons and why it is measured so: METHODS.md (this folder).
"""

from __future__ import annotations

import math
import multiprocessing
import re
import sys
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

import librosa
import numpy as np
import pyloudnorm
import soxr
from tqdm import tqdm

from data_modules.records import record_of

# ---------------------------------------------------------------------------- measurement setup
ANALYSIS_SR = 16000
MIN_SECONDS = 0.1  # shorter clips: every attribute null ("too_short")
LUFS_BLOCK_SECONDS = 0.4  # pyloudnorm's (BS.1770) gating block
SILENCE_PEAK = 2.0**-15  # peak below one 16-bit LSB: silent
CLIP_FRACTION = 0.01  # share of samples in clipped runs that nulls the volume
CLIP_PLATEAU = 0.999  # |x| >= this * peak is "on the plateau"
CLIP_MIN_RUN = 4  # consecutive plateau samples: a flat top, not a waveform's crest
CLIP_MIN_PEAK = 0.1  # a plateau below -20 dBFS is quantisation, not clipping
PYIN = {"fmin": 50.0, "fmax": 600.0, "frame_length": 1024, "hop_length": 320}
MIN_VOICED_FRAMES = 3
SPLIT_TOP_DB = 35.0  # librosa.effects.split: speech = within 35 dB of the loudest frame
SPLIT_FRAME, SPLIT_HOP = 1024, 256
GENDER_F0_HZ = 165.0  # median F0 below: male

# The descriptor vocabulary: here because measurement nulls attributes and reads a corpus's
# own labels (record_meta); bins.py imports it.
ATTRIBUTES = ("pitch", "volume", "speed")
BIN_LABELS = {
    "pitch": ("low", "normal", "high"),
    "volume": ("low", "normal", "high"),
    "speed": ("slow", "normal", "fast"),
}
MEASURED_KEYS = (
    "duration",
    "peak_dbfs",
    "clipped_fraction",
    "speech_seconds",
    "f0_median_hz",
    "f0_p5_hz",
    "f0_p95_hz",
    "f0_range_semitones",
    "voiced_fraction",
    "gender_f0",
    "loudness_lufs",
    "loudness_method",
    "level_db",
    "peak_level_db",
    "level_method",
    "syllables",
    "syllable_method",
    "speaking_rate",
)
_PITCH_KEYS = ("f0_median_hz", "f0_p5_hz", "f0_p95_hz", "f0_range_semitones", "voiced_fraction", "gender_f0")
_VOLUME_KEYS = ("loudness_lufs", "loudness_method", "level_db", "peak_level_db", "level_method")
_SPEED_KEYS = ("syllables", "syllable_method", "speaking_rate")


# ------------------------------------------------------------------------------- syllables
_VOWEL_RUN = re.compile(r"[aeiouyàáâãäåæèéêëìíîïòóôõöøùúûüýÿœ]+")
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_TOKEN = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)*|\d+")


def _word_syllables(word: str) -> int:
    if word.isdigit():
        return len(word)
    groups = len(_VOWEL_RUN.findall(word))
    consonant_le = len(word) > 2 and word.endswith("le") and not _VOWEL_RUN.fullmatch(word[-3])
    if groups > 1 and word.endswith("e") and not word.endswith(("ee", "ye")) and not consonant_le:
        groups -= 1  # silent final e: "house", "while" (not "little")
    elif (
        groups > 1
        and len(word) > 3
        and word.endswith("ed")
        and word[-3] not in "td"
        and not _VOWEL_RUN.fullmatch(word[-3])
    ):
        groups -= 1  # silent -ed: "liked", "moved" (not "painted", "carried")
    return max(1, groups)


def count_syllables(text: str | None) -> tuple[int, str]:
    """Syllables of a transcript and the method: ``(count, "han_characters" | "en_vowel_groups"
    | "mixed")``; ``(0, "none")`` for no text. See METHODS.md for the heuristic."""
    if not text or not text.strip():
        return 0, "none"
    han = len(_HAN.findall(text))
    rest = _HAN.sub(" ", text.lower())
    latin = sum(_word_syllables(w) for w in _TOKEN.findall(rest))
    method = "mixed" if han and latin else ("han_characters" if han else "en_vowel_groups")
    return han + latin, method


# ----------------------------------------------------------------------------- measurement
def empty_measurement() -> dict[str, Any]:
    out: dict[str, Any] = {key: None for key in MEASURED_KEYS}
    out["null_reasons"] = {}
    return out


def _null(measured: dict[str, Any], attribute: str, reason: str) -> None:
    keys = {"pitch": _PITCH_KEYS, "volume": _VOLUME_KEYS, "speed": _SPEED_KEYS}[attribute]
    for key in keys:
        measured[key] = None
    measured["null_reasons"].setdefault(attribute, reason)


def _null_all(measured: dict[str, Any], reason: str) -> dict[str, Any]:
    for attribute in ATTRIBUTES:
        _null(measured, attribute, reason)
    measured["null_reasons"].setdefault("gender", reason)
    return measured


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _db(power: float) -> float:
    return 10.0 * math.log10(max(power, 1e-20))


def clipped_share(x: np.ndarray) -> float:
    """Share of samples in runs of at least :data:`CLIP_MIN_RUN` consecutive samples on the
    peak plateau (``|x| >= 0.999 * peak``); 0 when the peak is under -20 dBFS."""
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak < CLIP_MIN_PEAK:
        return 0.0
    on = np.concatenate([[0], (np.abs(x) >= CLIP_PLATEAU * peak).astype(np.int8), [0]])
    edges = np.diff(on)
    lengths = np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)
    return float(lengths[lengths >= CLIP_MIN_RUN].sum()) / x.size


def measure_audio(audio: np.ndarray, sr: int, transcript: str | None = None) -> dict[str, Any]:
    """Measurements of one utterance (``attributes["measured"]`` minus the binning fields).

    Never raises on bad audio: an attribute that cannot be measured is ``None`` with its
    reason in ``null_reasons``.
    """

    measured = empty_measurement()
    x = np.asarray(audio, dtype=np.float64)
    if x.ndim == 2:
        x = x.mean(axis=0)
    if x.size == 0:
        return _null_all(measured, "empty_audio")
    if not np.all(np.isfinite(x)):
        return _null_all(measured, "non_finite_audio")
    # Clipping is a property of the stored samples: looked for before resampling.
    clipped_fraction = clipped_share(x)
    if sr != ANALYSIS_SR:
        x = soxr.resample(x, sr, ANALYSIS_SR)
    duration = x.size / ANALYSIS_SR
    measured["duration"] = duration
    if duration < MIN_SECONDS:
        return _null_all(measured, "too_short")
    peak = float(np.max(np.abs(x)))
    if peak < SILENCE_PEAK:
        return _null_all(measured, "silent_audio")
    measured["peak_dbfs"] = 20.0 * math.log10(peak)
    measured["clipped_fraction"] = clipped_fraction

    intervals = librosa.effects.split(x, top_db=SPLIT_TOP_DB, frame_length=SPLIT_FRAME, hop_length=SPLIT_HOP)
    speech = np.concatenate([x[a:b] for a, b in intervals]) if len(intervals) else x
    measured["speech_seconds"] = float(sum(b - a for a, b in intervals)) / ANALYSIS_SR

    # -- pitch
    f0, voiced, _ = librosa.pyin(x, sr=ANALYSIS_SR, **PYIN)
    voiced = voiced & np.isfinite(f0)
    fv = f0[voiced]
    if fv.size < MIN_VOICED_FRAMES:
        _null(measured, "pitch", "no_voiced_frames")
        measured["null_reasons"].setdefault("gender", "no_voiced_frames")
    else:
        p5, median, p95 = np.percentile(fv, [5, 50, 95])
        measured.update(
            f0_median_hz=float(median),
            f0_p5_hz=float(p5),
            f0_p95_hz=float(p95),
            f0_range_semitones=float(12.0 * np.log2(p95 / p5)),
            voiced_fraction=float(voiced.mean()),
            gender_f0="male" if median < GENDER_F0_HZ else "female",
        )

    # -- volume
    if clipped_fraction > CLIP_FRACTION:
        _null(measured, "volume", "clipped_audio")
    else:
        lufs = None
        if duration >= LUFS_BLOCK_SECONDS:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                lufs = _finite(pyloudnorm.Meter(ANALYSIS_SR).integrated_loudness(x))
        if lufs is not None:
            measured.update(loudness_lufs=lufs, loudness_method="lufs")
        else:  # under one gating block, or every block under the absolute gate
            measured.update(loudness_lufs=_db(float(np.mean(speech**2))), loudness_method="rms_db")
        # Frames as pyin's (centred, zero-padded), so its voicing decisions line up.
        half = PYIN["frame_length"] // 2
        frames = librosa.util.frame(np.pad(x, half), frame_length=PYIN["frame_length"], hop_length=PYIN["hop_length"])
        frame_db = 10.0 * np.log10(np.maximum(np.mean(frames**2, axis=0), 1e-20))
        frame_peak_db = 20.0 * np.log10(np.maximum(np.max(np.abs(frames), axis=0), 1e-10))
        n = min(frame_db.size, voiced.size)
        if int(voiced[:n].sum()) >= MIN_VOICED_FRAMES:
            sel, method = voiced[:n], "voiced_frames"
        else:
            sel, method = frame_db[:n] >= frame_db.max() - SPLIT_TOP_DB, "speech_frames"
        measured.update(
            level_db=float(np.median(frame_db[:n][sel])),
            peak_level_db=float(np.median(frame_peak_db[:n][sel])),
            level_method=method,
        )

    # -- speed
    syllables, method = count_syllables(transcript)
    if method == "none":
        _null(measured, "speed", "no_transcript")
    elif syllables == 0:
        _null(measured, "speed", "no_syllables")
    elif measured["speech_seconds"] <= 0:
        _null(measured, "speed", "no_speech")
    else:
        measured.update(
            syllables=syllables, syllable_method=method, speaking_rate=syllables / measured["speech_seconds"]
        )

    # Belt and braces: a non-finite number never leaves this function.
    for attribute, keys in (("pitch", _PITCH_KEYS), ("volume", _VOLUME_KEYS), ("speed", _SPEED_KEYS)):
        if any(isinstance(measured[k], float) and not math.isfinite(measured[k]) for k in keys):
            _null(measured, attribute, "non_finite_measurement")
    return measured


def load_audio(cut) -> tuple[np.ndarray | None, int, str | None]:
    """(mono float32 audio, sampling rate, None) or (None, 0, reason): the data module's
    decoding without its duration limits (the annotator has its own)."""
    try:
        audio = cut.load_audio()
    except Exception as err:  # any decoder failure is a per-clip null, not a crash
        return None, 0, f"audio_decode_failed: {type(err).__name__}"
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 2:
        audio = audio.mean(axis=0)
    return audio, int(cut.sampling_rate), None


def corpus_gender(cut) -> str | None:
    """The record's own gender (``attributes["gender"]``, else the supervision's)."""

    rec = record_of(cut)
    gender = rec["attributes"].get("gender") or rec.get("gender")
    gender = str(gender).strip().lower() if gender else None
    return {"m": "male", "f": "female"}.get(gender, gender) if gender else None


def measure_cut(cut) -> dict[str, Any]:
    """Measurements of one record (:func:`measure_audio` on its decoded audio)."""
    audio, sr, reason = load_audio(cut)
    if reason is not None:
        return _null_all(empty_measurement(), reason)
    try:
        return measure_audio(audio, sr, cut.supervisions[0].text if cut.supervisions else None)
    except Exception as err:  # a measurement bug on one clip must not stop a corpus
        return _null_all(empty_measurement(), f"measurement_error: {type(err).__name__}")


def record_meta(cut) -> dict[str, Any]:
    """What binning needs of a record besides its measurements: speaker, the corpus's gender,
    duration and the corpus's own pitch/volume/speed labels (for ``reference-labels``)."""
    sup = cut.supervisions[0] if cut.supervisions else None
    attributes = ((sup.custom or {}).get("attributes") or {}) if sup else {}
    labels = {a: attributes.get(a) for a in ATTRIBUTES if attributes.get(a) in BIN_LABELS[a]}
    return {
        "speaker": sup.speaker if sup else None,
        "gender": corpus_gender(cut),
        "duration": float(cut.duration),
        "labels": labels,
    }


def _job(cut) -> tuple[str, dict[str, Any], dict[str, Any]]:
    return cut.id, measure_cut(cut), record_meta(cut)


def _warm_up() -> None:
    """Compile librosa's numba kernels once before forking, so workers do not each do it."""

    t = np.arange(ANALYSIS_SR // 4) / ANALYSIS_SR
    librosa.pyin(np.sin(2 * np.pi * 150 * t), sr=ANALYSIS_SR, **PYIN)


def measure_cuts(
    cuts: Iterable, workers: int = 1, progress: bool = False, total: int | None = None
) -> Iterator[tuple[str, dict, dict]]:
    """``(id, measured, meta)`` per cut, in order; ``workers`` > 1 uses a process pool."""

    _warm_up()
    with tqdm(total=total, desc="annotate", unit="utt", disable=not progress) as bar:
        if workers <= 1:
            for cut in cuts:
                yield _job(cut)
                bar.update()
            return
        method = "fork" if sys.platform.startswith("linux") else "spawn"
        with multiprocessing.get_context(method).Pool(workers) as pool:
            for result in pool.imap(_job, cuts, chunksize=4):
                yield result
                bar.update()
