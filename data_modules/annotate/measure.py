"""Interpretable speech-descriptor annotation for corpora without captions (IEMOCAP, MELD ...).

Usage::

    python -m data_modules.annotate --manifest IN.jsonl.gz --out OUT.jsonl.gz \\
        [--reference-stats STATS.json] [--save-stats STATS.json] [--workers N] \\
        [--overwrite-captions] [--normalize-by {none,gender,speaker}] \\
        [--percentiles {speechcraft,tertiles,reference-labels}] \\
        [--pitch-measure {median,floor}] \\
        [--volume-measure {lufs,level,peak}]

Every utterance of a unified manifest (:mod:`data_modules.records`) is measured, the
measurements are binned into SpeechCraft's categories, and a descriptor caption is rendered
with the same templates as SynthCraft (:func:`data_modules.synthcraft.render_caption`), so a
keyword parser (:func:`explainable_ser.model.prompts.caption_attributes`) reads it back.

Measurements (audio decoded as in the data module, downmixed, resampled to 16 kHz)
-------------------------------------------------------------------------------------
* **F0** -- ``librosa.pyin`` (fmin 50 Hz, fmax 600 Hz, 64 ms frames, 20 ms hop, the default
  0.1-semitone resolution: a coarser one makes pyin's voicing HMM drop whole utterances).
  ``f0_median_hz``, ``f0_p5_hz`` (the melody's floor), ``f0_p95_hz``, ``f0_range_semitones``
  (p5..p95) and ``voiced_fraction`` over pyin's voiced frames.
* **Loudness** -- ``loudness_lufs``: integrated loudness (ITU-R BS.1770, ``pyloudnorm``; gated,
  K-weighted). pyloudnorm needs at least one 400 ms block, so shorter clips (and clips whose
  every block falls under the -70 LUFS absolute gate) get the plain RMS level of the speech
  intervals in dBFS instead (``loudness_method: "rms_db"``). The two scales agree for a 1 kHz
  tone and differ by a few dB for speech (K-weighting, gating). Two frame-level measures over
  pyin's voiced frames (over the speech frames when none is voiced, ``level_method``), which
  ignore pauses and a few loud bursts: ``level_db``, the median frame RMS level (dBFS), and
  ``peak_level_db``, the median frame peak level (dBFS, the largest sample of each 64 ms
  frame, as a peak meter reads it). The RMS of a pulse train grows with its rate, the peak of
  each pulse does not, so the peak level is the one that does not rise with F0.
* **Speaking rate** -- ``speaking_rate`` = syllables of the transcript / ``speech_seconds``,
  where speech is what ``librosa.effects.split`` (35 dB below the loudest frame) keeps, so
  pauses do not count. Syllables (:func:`count_syllables`): one per Han character (Mandarin);
  for other words the simple English heuristic "vowel groups (a e i o u y, accented too),
  minus a silent final -e (not after consonant + l: "lit-tle") and a silent -ed (not after
  t/d or a vowel: "paint-ed", "car-ried"), at least one per word";
  a run of digits counts one per digit.
* **Gender** -- where the record has no gender (``attributes["gender"]`` or the supervision's),
  it is estimated from F0: ``male`` below 165 Hz median F0, else ``female``. With a speaker id
  and at least ``min_speaker_utterances`` voiced utterances the speaker's median of those
  medians decides for all of the speaker's utterances (one F0-high utterance does not flip
  a speaker's gender); else the utterance's own median (``gender_source``: ``corpus`` /
  ``speaker_f0`` / ``utterance_f0``). ``gender_f0`` always holds the utterance-level estimate.

Binning
-------
Thresholds are percentiles of a **reference** corpus: by default the manifest being annotated;
``--save-stats`` writes the reference distribution (quantiles at every percent, per measure,
per gender, raw and speaker-centred) to JSON and ``--reference-stats`` loads one, so other
corpora are binned on the same scale. ``--normalize-by``:

* ``gender`` (default, SpeechCraft's pipeline): pitch against the percentiles of the speaker's
  gender (``--percentiles speechcraft``: male 40th/90th, female 10th/60th), volume and speed
  against pooled tertiles.
* ``none``: everything pooled (pitch then mostly tells the genders apart; SpeechCraft's
  gender percentiles need the gender split, so pooled pitch uses tertiles).
* ``speaker``: each measure is first centred on its speaker's median in the annotated
  manifest (semitones, dB, log rate), so a voice's own register and loudness do not decide the
  bin, then binned as in ``gender`` against the reference's speaker-centred distribution.
  Utterances without a speaker id, or of speakers with fewer than ``--min-speaker-utterances``
  measured utterances, fall back to ``gender`` (``measured["binning"]`` says which was used).

``--percentiles tertiles`` uses tertiles for pitch too. Fixed percentiles assume the bins'
proportions (tertiles: a third each); ``--percentiles reference-labels`` takes them from a
reference whose records carry labelled bins (SynthCraft, SpeechCraft): the boundaries are the
reference's cumulative label proportions (per gender for pitch), saved in the stats JSON, so a
corpus is binned with the proportions of that reference. ``--pitch-measure floor`` bins the 5th
percentile of F0 instead of the median; ``--volume-measure level`` / ``peak`` bin the
voiced-frame RMS / peak level instead of LUFS. The defaults are SpeechCraft's choices.
``benchmarks/annotate.py`` reports what each option reaches on SynthCraft, whose descriptors
are known: there the defaults are not the most accurate options, because espeak's pitch
setting moves the floor of the melody while the emotions widen it upwards (the median follows
the emotion), and its RMS loudness grows with F0 (power of a pulse train grows with its rate).
On SynthCraft, ``--pitch-measure floor --volume-measure peak`` are the accurate measures, and
the label proportions (27/41/31 % for pitch, not a third each) are what keeps tertiles from
the last points.

What is written (the record scheme)
-----------------------------------
* ``attributes["measured"]``: the measurements above plus ``null_reasons`` (attribute ->
  reason, e.g. ``{"pitch": "no_voiced_frames"}``), ``bins`` (the annotator's own
  gender/pitch/volume/speed), ``gender_source`` and ``binning`` (settings and, per attribute,
  the normalisation and group used). A null reason means the attribute's measured values and
  bin are ``None``: silent audio, audio shorter than 0.1 s, undecodable or non-finite audio
  null everything; clipping (over 1 % of the samples in flat tops: runs of 4 or more samples
  within 0.1 % of a peak above -20 dBFS) nulls the volume; no voiced frame nulls the pitch
  (and the F0 gender estimate); no transcript / no syllable / no speech nulls the speed.
* ``attributes["gender"|"pitch"|"volume"|"speed"]``: the corpus's own value where it has one
  (gender always stays the corpus's), else the annotator's bin; ``--overwrite-captions``
  also replaces the corpus's pitch/volume/speed so that attributes and caption agree.
* ``custom["annotated_caption"]``: the annotator's caption (``None`` when one of gender,
  pitch, volume, speed is ``None``), with the corpus's emphasis word where it has one. The
  template is chosen by a hash of the utterance id, so re-running gives the same text.
* ``custom["caption"]``: a corpus caption is kept; a record without one gets the annotator's.
  ``--overwrite-captions`` makes every caption the annotator's. ``custom["caption_source"]``
  says which (``"corpus"``, ``"annotator"`` or ``None``).

Descriptor targets for IEMOCAP / MELD (``ser_sed``)
---------------------------------------------------
The annotated manifest is an ordinary manifest whose records carry a ``caption``, so the
``ser_sed`` task (caption + emotion) gets targets from it with no other switch. Annotate the
prepared splits into a new directory, keeping the ``{corpus}_cuts_{split}.jsonl.gz`` names,
with the thresholds of the training split (IEMOCAP's fold 1 here; MELD alike)::

    python -m data_modules.annotate --manifest data/iemocap/iemocap_cuts_fold1_train.jsonl.gz \\
        --out data/iemocap_annotated/iemocap_cuts_fold1_train.jsonl.gz \\
        --save-stats data/iemocap_annotated/fold1_stats.json
    for split in fold1_dev fold1_test; do
      python -m data_modules.annotate --manifest data/iemocap/iemocap_cuts_$split.jsonl.gz \\
          --out data/iemocap_annotated/iemocap_cuts_$split.jsonl.gz \\
          --reference-stats data/iemocap_annotated/fold1_stats.json
    done

and point the corpus at that directory (audio paths are unchanged: the recordings are the
prepared ones), e.g. ``data.corpora.0.name=iemocap data.corpora.0.dir=data/iemocap_annotated
data.corpora.0.train_split=fold1_train data.corpora.0.val_split=fold1_dev
data.corpora.0.test_split=fold1_test`` with a ``ser_sed`` stage. Any reference works for
``--reference-stats`` (e.g. stats saved on SynthCraft or SpeechCraft), binning every corpus on
one scale; the thresholds use no labels, only the reference's measurements (except
``--percentiles reference-labels``, which reads the reference's bin proportions).

Attribute accuracy against measured references
----------------------------------------------
:func:`explainable_ser.evaluation.emotion.attribute_accuracy` takes reference attribute dicts, and
``evaluate`` passes the records' ``attributes``; an annotated record's attributes are such a
dict, so on an annotated corpus the caption attributes a model generates are scored against the
measured bins with no other change. ``None`` (a null reason) is "no reference": the utterance
is left out of that attribute's accuracy, never scored against a made-up value.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import multiprocessing
import os
import random
import re
import sys
import time
import warnings
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from data_modules.cli_types import positive_int

# ---------------------------------------------------------------------------- measurement setup
ANALYSIS_SR = 16000
MIN_SECONDS = 0.1             # shorter clips: every attribute null ("too_short")
LUFS_BLOCK_SECONDS = 0.4      # pyloudnorm's (BS.1770) gating block
SILENCE_PEAK = 2.0 ** -15     # peak below one 16-bit LSB: silent
CLIP_FRACTION = 0.01          # share of samples in clipped runs that nulls the volume
CLIP_PLATEAU = 0.999          # |x| >= this * peak is "on the plateau"
CLIP_MIN_RUN = 4              # consecutive plateau samples: a flat top, not a waveform's crest
CLIP_MIN_PEAK = 0.1           # a plateau below -20 dBFS is quantisation, not clipping
PYIN = {"fmin": 50.0, "fmax": 600.0, "frame_length": 1024, "hop_length": 320}
MIN_VOICED_FRAMES = 3
SPLIT_TOP_DB = 35.0           # librosa.effects.split: speech = within 35 dB of the loudest frame
SPLIT_FRAME, SPLIT_HOP = 1024, 256
GENDER_F0_HZ = 165.0          # median F0 below: male

ATTRIBUTES = ("pitch", "volume", "speed")
BIN_LABELS = {"pitch": ("low", "normal", "high"), "volume": ("low", "normal", "high"),
              "speed": ("slow", "normal", "fast")}
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
    "speechcraft": {"pitch": {"male": (40.0, 90.0), "female": (10.0, 60.0), "all": _TERTILES},
                    "volume": {"all": _TERTILES}, "speed": {"all": _TERTILES}},
    "tertiles": {"pitch": {"male": _TERTILES, "female": _TERTILES, "all": _TERTILES},
                 "volume": {"all": _TERTILES}, "speed": {"all": _TERTILES}},
}
# Percentiles taken from the reference's own labelled bins (see label_percentiles).
LABEL_SCHEME = "reference-labels"
PERCENTILE_CHOICES = (*PERCENTILE_SCHEMES, LABEL_SCHEME)
STATS_FORMAT = "data_modules.annotate/1"
MIN_REFERENCE_VALUES = 10     # fewer values in a group: no quantiles for it (pooled instead)
MEASURED_KEYS = (
    "duration", "peak_dbfs", "clipped_fraction", "speech_seconds",
    "f0_median_hz", "f0_p5_hz", "f0_p95_hz", "f0_range_semitones", "voiced_fraction",
    "gender_f0", "loudness_lufs", "loudness_method", "level_db", "peak_level_db",
    "level_method",
    "syllables", "syllable_method", "speaking_rate",
)
_PITCH_KEYS = ("f0_median_hz", "f0_p5_hz", "f0_p95_hz", "f0_range_semitones", "voiced_fraction",
               "gender_f0")
_VOLUME_KEYS = ("loudness_lufs", "loudness_method", "level_db", "peak_level_db", "level_method")
_SPEED_KEYS = ("syllables", "syllable_method", "speaking_rate")


@dataclass
class BinningConfig:
    """How measurements become bins (see the module docstring)."""

    normalize_by: str = "gender"
    percentiles: str = "speechcraft"
    pitch_measure: str = "median"
    volume_measure: str = "lufs"
    min_speaker_utterances: int = 10

    def __post_init__(self) -> None:
        for name, value, allowed in (("normalize_by", self.normalize_by, NORMALIZE_CHOICES),
                                     ("percentiles", self.percentiles, PERCENTILE_CHOICES),
                                     ("pitch_measure", self.pitch_measure, PITCH_MEASURES),
                                     ("volume_measure", self.volume_measure, VOLUME_MEASURES)):
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
    elif (groups > 1 and len(word) > 3 and word.endswith("ed") and word[-3] not in "td"
          and not _VOWEL_RUN.fullmatch(word[-3])):
        groups -= 1  # silent -ed: "liked", "moved" (not "painted", "carried")
    return max(1, groups)


def count_syllables(text: str | None) -> tuple[int, str]:
    """Syllables of a transcript and the method: ``(count, "han_characters" | "en_vowel_groups"
    | "mixed")``; ``(0, "none")`` for no text. See the module docstring for the heuristic."""
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
    import librosa
    import pyloudnorm

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
        import soxr

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

    intervals = librosa.effects.split(x, top_db=SPLIT_TOP_DB, frame_length=SPLIT_FRAME,
                                      hop_length=SPLIT_HOP)
    speech = (np.concatenate([x[a:b] for a, b in intervals]) if len(intervals) else x)
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
        measured.update(f0_median_hz=float(median), f0_p5_hz=float(p5), f0_p95_hz=float(p95),
                        f0_range_semitones=float(12.0 * np.log2(p95 / p5)),
                        voiced_fraction=float(voiced.mean()),
                        gender_f0="male" if median < GENDER_F0_HZ else "female")

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
            measured.update(loudness_lufs=_db(float(np.mean(speech ** 2))),
                            loudness_method="rms_db")
        # Frames as pyin's (centred, zero-padded), so its voicing decisions line up.
        half = PYIN["frame_length"] // 2
        frames = librosa.util.frame(np.pad(x, half), frame_length=PYIN["frame_length"],
                                    hop_length=PYIN["hop_length"])
        frame_db = 10.0 * np.log10(np.maximum(np.mean(frames ** 2, axis=0), 1e-20))
        frame_peak_db = 20.0 * np.log10(np.maximum(np.max(np.abs(frames), axis=0), 1e-10))
        n = min(frame_db.size, voiced.size)
        if int(voiced[:n].sum()) >= MIN_VOICED_FRAMES:
            sel, method = voiced[:n], "voiced_frames"
        else:
            sel, method = frame_db[:n] >= frame_db.max() - SPLIT_TOP_DB, "speech_frames"
        measured.update(level_db=float(np.median(frame_db[:n][sel])),
                        peak_level_db=float(np.median(frame_peak_db[:n][sel])),
                        level_method=method)

    # -- speed
    syllables, method = count_syllables(transcript)
    if method == "none":
        _null(measured, "speed", "no_transcript")
    elif syllables == 0:
        _null(measured, "speed", "no_syllables")
    elif measured["speech_seconds"] <= 0:
        _null(measured, "speed", "no_speech")
    else:
        measured.update(syllables=syllables, syllable_method=method,
                        speaking_rate=syllables / measured["speech_seconds"])

    # Belt and braces: a non-finite number never leaves this function.
    for attribute, keys in (("pitch", _PITCH_KEYS), ("volume", _VOLUME_KEYS),
                            ("speed", _SPEED_KEYS)):
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
    from data_modules.records import record_of

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
    return {"speaker": sup.speaker if sup else None, "gender": corpus_gender(cut),
            "duration": float(cut.duration), "labels": labels}


def _job(cut) -> tuple[str, dict[str, Any], dict[str, Any]]:
    return cut.id, measure_cut(cut), record_meta(cut)


def _warm_up() -> None:
    """Compile librosa's numba kernels once before forking, so workers do not each do it."""
    import librosa

    t = np.arange(ANALYSIS_SR // 4) / ANALYSIS_SR
    librosa.pyin(np.sin(2 * np.pi * 150 * t), sr=ANALYSIS_SR, **PYIN)


def default_workers() -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(2, cpus or 1))


def measure_cuts(cuts: Iterable, workers: int = 1, progress: bool = False,
                 total: int | None = None) -> Iterator[tuple[str, dict, dict]]:
    """``(id, measured, meta)`` per cut, in order; ``workers`` > 1 uses a process pool."""
    from tqdm import tqdm

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


def resolve_genders(measured: Sequence[dict], metas: Sequence[dict],
                    min_speaker_utterances: int) -> list[tuple[str | None, str | None]]:
    """``(gender, source)`` per utterance: the corpus's, else the speaker's F0 estimate (enough
    voiced utterances), else the utterance's (see the module docstring)."""
    by_speaker: dict[str, list[float]] = {}
    for m, meta in zip(measured, metas):
        if meta.get("speaker") and m.get("f0_median_hz") is not None:
            by_speaker.setdefault(meta["speaker"], []).append(m["f0_median_hz"])
    speaker_gender = {spk: ("male" if np.median(v) < GENDER_F0_HZ else "female")
                      for spk, v in by_speaker.items() if len(v) >= min_speaker_utterances}
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


def _values(measured: Sequence[dict], metas: Sequence[dict],
            min_speaker_utterances: int) -> dict[str, dict[str, list[float | None]]]:
    """Per measure: raw scaled values and speaker-centred ones (``None`` where unavailable)."""
    out: dict[str, dict[str, list[float | None]]] = {}
    for measure, (key, _) in MEASURES.items():
        raw = [_scale(measure, m.get(key)) for m in measured]
        by_speaker: dict[str, list[float]] = {}
        for value, meta in zip(raw, metas):
            if value is not None and meta.get("speaker"):
                by_speaker.setdefault(meta["speaker"], []).append(value)
        centre = {spk: float(np.median(v)) for spk, v in by_speaker.items()
                  if len(v) >= min_speaker_utterances}
        centred = [value - centre[meta["speaker"]]
                   if value is not None and meta.get("speaker") in centre else None
                   for value, meta in zip(raw, metas)]
        out[measure] = {"raw": raw, "speaker": centred}
    return out


def compute_stats(measured: Sequence[dict], metas: Sequence[dict],
                  min_speaker_utterances: int = 10,
                  source: Sequence[str] = ()) -> dict[str, Any]:
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
                sel = [v for v, g in zip(vals, genders)
                       if v is not None and (group == "all" or g == group)]
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
        "measurement": {"analysis_sr": ANALYSIS_SR, "pyin": PYIN, "split_top_db": SPLIT_TOP_DB,
                        "gender_f0_hz": GENDER_F0_HZ},
    }


def label_percentiles(metas: Sequence[dict], genders: Sequence[str | None]
                      ) -> dict[str, dict[str, list[float]]] | None:
    """Percentile boundaries that reproduce the reference's own bin proportions, where its
    records carry labelled bins (``meta["labels"]``, e.g. SynthCraft's or SpeechCraft's
    attributes): per attribute and threshold group, ``[100 * P(low), 100 * P(low or normal)]``.
    ``None`` when no record has a label."""
    out: dict[str, dict[str, list[float]]] = {}
    for attribute in ATTRIBUTES:
        groups = ("all", *GENDERS) if attribute == "pitch" else ("all",)
        for group in groups:
            seen = [meta.get("labels", {}).get(attribute) for meta, g in zip(metas, genders)
                    if group == "all" or g == group]
            counts = Counter(label for label in seen if label is not None)
            n = sum(counts.values())
            if n < MIN_REFERENCE_VALUES:
                continue
            first, second, _ = BIN_LABELS[attribute]
            out.setdefault(attribute, {})[group] = [100.0 * counts[first] / n,
                                                    100.0 * (counts[first] + counts[second]) / n]
    return out or None


def load_stats(path: str | Path) -> dict[str, Any]:
    stats = json.loads(Path(path).read_text())
    if stats.get("format") != STATS_FORMAT:
        raise ValueError(f"{path}: not a reference-stats file of this annotator "
                         f"(format {stats.get('format')!r}, expected {STATS_FORMAT!r})")
    return stats


def _threshold(stats: dict, kind: str, measure: str, group: str,
               pct: tuple[float, float]) -> tuple[float, float] | None:
    table = stats["quantiles"].get(kind, {}).get(measure, {}).get(group)
    if table is None:
        return None
    levels = np.arange(len(table))
    lo, hi = np.interp(pct, levels, table)
    return float(lo), float(hi)


def assign_bins(measured: Sequence[dict], metas: Sequence[dict], stats: dict[str, Any],
                cfg: BinningConfig) -> list[dict[str, Any]]:
    """Per utterance: ``{"bins": {...}, "gender_source", "binning": {...}, "null_reasons"}``
    (the null reasons added by binning, e.g. ``no_reference_stats``)."""
    genders = resolve_genders(measured, metas, cfg.min_speaker_utterances)
    values = _values(measured, metas, cfg.min_speaker_utterances)
    if cfg.percentiles == LABEL_SCHEME:
        scheme = stats.get("label_percentiles")
        if not scheme:
            raise ValueError(f"--percentiles {LABEL_SCHEME} needs reference stats computed on "
                             "a corpus whose records carry pitch/volume/speed labels")
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
            limits = (_threshold(stats, kind, measure, group, tuple(pcts[group]))
                      if group in pcts else None)
            if limits is None and group != "all":
                group = "all"
                limits = (_threshold(stats, kind, measure, group, tuple(pcts[group]))
                          if group in pcts else None)
            if limits is None:
                bins[attribute] = None
                reasons[attribute] = "no_reference_stats"
                continue
            labels = BIN_LABELS[attribute]
            bins[attribute] = (labels[0] if value < limits[0] else
                               labels[1] if value < limits[1] else labels[2])
            binning[attribute] = {"measure": measure, "normalized_by": mode, "group": group,
                                  "value": value, "thresholds": list(limits)}
        out.append({"bins": bins, "gender_source": source, "binning": binning,
                    "null_reasons": reasons})
    return out


# ------------------------------------------------------------------------------- the records
def _caption_rng(utt_id: str) -> random.Random:
    return random.Random(int.from_bytes(hashlib.sha256(utt_id.encode()).digest()[:8], "little"))


def annotate_record(cut, measured: dict[str, Any], assigned: dict[str, Any],
                    cfg: BinningConfig, overwrite_captions: bool = False):
    """A copy of ``cut`` with the annotation written into its record (the scheme of the module
    docstring)."""
    from data_modules.synthcraft import render_caption

    sup = cut.supervisions[0]
    custom = dict(sup.custom or {})
    attributes = dict(custom.get("attributes") or {})
    bins = assigned["bins"]
    full = dict(measured)
    full["null_reasons"] = {**measured["null_reasons"], **assigned["null_reasons"]}
    if bins["gender"] is not None:  # the corpus's gender, or a speaker-level estimate
        full["null_reasons"].pop("gender", None)
    full.update(bins=dict(bins), gender_source=assigned["gender_source"],
                binning={"settings": asdict(cfg), **assigned["binning"]})

    if not attributes.get("gender"):
        attributes["gender"] = bins["gender"]
    for attribute in ATTRIBUTES:
        if overwrite_captions or attributes.get(attribute) is None:
            attributes[attribute] = bins[attribute]
    attributes["measured"] = full

    caption_attrs = {**bins, "emphasis": attributes.get("emphasis")}
    annotated = None
    if all(caption_attrs[k] for k in ("gender", *ATTRIBUTES)):
        annotated = render_caption(caption_attrs, _caption_rng(cut.id))
    own = custom.get("caption")
    has_own = isinstance(own, str) and bool(own.strip())
    if has_own and not overwrite_captions:
        caption, source = own, "corpus"
    else:
        caption, source = annotated, ("annotator" if annotated else None)
    custom.update(attributes=attributes, caption=caption, caption_source=source,
                  annotated_caption=annotated)
    return _copy_cut(cut, _copy_sup(sup, custom))


def _copy_sup(sup, custom: dict):
    from lhotse.utils import fastcopy

    return fastcopy(sup, custom=custom)


def _copy_cut(cut, sup):
    from lhotse.utils import fastcopy

    return fastcopy(cut, supervisions=[sup, *cut.supervisions[1:]])


# ------------------------------------------------------------------------------ the pipeline
def _summarise(measured: Sequence[dict], assigned: Sequence[dict], sources: Counter,
               elapsed: float, audio_seconds: float, workers: int) -> dict[str, Any]:
    nulls: dict[str, Counter] = {a: Counter() for a in ("gender", *ATTRIBUTES)}
    complete = 0
    for m, a in zip(measured, assigned):
        reasons = {**m["null_reasons"], **a["null_reasons"]}
        for attribute in nulls:
            if a["bins"].get(attribute) is None:
                nulls[attribute][reasons.get(attribute, "unknown")] += 1
        complete += all(a["bins"].get(k) for k in ("gender", *ATTRIBUTES))
    n = len(measured)
    return {
        "utterances": n,
        "fully_annotated": complete,
        "null": {attribute: dict(c) for attribute, c in nulls.items()},
        "captions": dict(sources),
        "gender_source": dict(Counter(str(a["gender_source"]) for a in assigned)),
        "seconds": elapsed,
        "utterances_per_second": n / elapsed if elapsed > 0 else None,
        "audio_seconds": audio_seconds,
        "x_real_time": audio_seconds / elapsed if elapsed > 0 else None,
        "workers": workers,
    }


def annotate_manifest(manifest: str | Path, out: str | Path, *,
                      reference_stats: str | Path | dict | None = None,
                      save_stats: str | Path | None = None, cfg: BinningConfig | None = None,
                      overwrite_captions: bool = False, workers: int | None = None,
                      progress: bool = True) -> dict[str, Any]:
    """Annotate a manifest into ``out``; returns the report (see :func:`main`).

    Two passes over the (lazily read) manifest: measure every utterance (in parallel), then --
    once every speaker's utterances are known -- bin and write.
    """
    from lhotse import CutSet

    cfg = cfg or BinningConfig()
    workers = default_workers() if workers is None else workers
    manifest, out = Path(manifest), Path(out)
    if manifest.resolve() == out.resolve():
        raise ValueError("--out must differ from --manifest (the input is read while writing)")
    start = time.perf_counter()
    cuts = CutSet.from_file(manifest)
    total = sum(1 for _ in cuts) if progress else None
    ids, measured, metas = [], [], []
    for utt_id, m, meta in measure_cuts(cuts, workers=workers, progress=progress, total=total):
        ids.append(utt_id)
        measured.append(m)
        metas.append(meta)

    if reference_stats is None:
        stats = compute_stats(measured, metas, cfg.min_speaker_utterances, [str(manifest)])
        stats_source = f"computed on {manifest}"
    elif isinstance(reference_stats, dict):
        stats, stats_source = reference_stats, "given"
    else:
        stats, stats_source = load_stats(reference_stats), str(reference_stats)
    if save_stats is not None:
        Path(save_stats).parent.mkdir(parents=True, exist_ok=True)
        Path(save_stats).write_text(json.dumps(stats, indent=1))
    assigned = assign_bins(measured, metas, stats, cfg)

    sources: Counter = Counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    with CutSet.open_writer(out) as writer:
        for i, cut in enumerate(CutSet.from_file(manifest)):
            if cut.id != ids[i]:
                raise RuntimeError(f"manifest changed while annotating ({cut.id} != {ids[i]})")
            new = annotate_record(cut, measured[i], assigned[i], cfg, overwrite_captions)
            sources[str(new.supervisions[0].custom["caption_source"])] += 1
            writer.write(new)
    elapsed = time.perf_counter() - start
    report = _summarise(measured, assigned, sources, elapsed,
                        sum(meta["duration"] for meta in metas), workers)
    report.update(manifest=str(manifest), out=str(out), reference_stats=stats_source,
                  binning=asdict(cfg), overwrite_captions=overwrite_captions)
    return report


# ------------------------------------------------------------------------------------ the CLI
_MANIFEST_NAME = re.compile(r"^(?P<corpus>.+?)_cuts_(?P<split>.+)\.jsonl(\.gz)?$")



def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m data_modules.annotate",
        description="Measure F0, loudness and speaking rate of every utterance of a manifest, "
                    "bin them into SpeechCraft's low/normal/high (slow/normal/fast) categories "
                    "and write attributes and a descriptor caption into each record.",
        epilog="For ser_sed targets on IEMOCAP/MELD: annotate each prepared split into a new "
               "directory keeping the <corpus>_cuts_<split>.jsonl.gz names (stats saved on "
               "train with --save-stats, loaded for dev/test with --reference-stats), then "
               "point data.corpora at that directory. Details: the module docstring "
               "(python -c 'import data_modules.annotate as a; help(a)').")
    parser.add_argument("--manifest", type=Path, required=True, metavar="IN",
                        help="input CutSet manifest (.jsonl.gz), e.g. "
                             "data/iemocap/iemocap_cuts_train.jsonl.gz")
    parser.add_argument("--out", type=Path, required=True, metavar="OUT",
                        help="output manifest; name it DIR/<corpus>_cuts_<split>.jsonl.gz so a "
                             "CorpusSpec(dir=DIR) reads it")
    parser.add_argument("--reference-stats", type=Path, metavar="STATS.json",
                        help="bin against this reference distribution (written by "
                             "--save-stats) instead of the input's own")
    parser.add_argument("--save-stats", type=Path, metavar="STATS.json",
                        help="write the reference distribution used (quantiles per measure, "
                             "gender and normalisation) for annotating other corpora")
    parser.add_argument("--workers", type=positive_int, default=None, metavar="N",
                        help="measurement processes (default: min(2, CPU count))")
    parser.add_argument("--overwrite-captions", action="store_true",
                        help="replace the corpus's captions and pitch/volume/speed with the "
                             "annotator's (default: keep them; the annotator's caption is "
                             "always in custom['annotated_caption'])")
    parser.add_argument("--normalize-by", choices=NORMALIZE_CHOICES, default="gender",
                        help="gender: pitch percentiles per gender, volume/speed pooled "
                             "(SpeechCraft); none: all pooled; speaker: centre every measure "
                             "on its speaker's median first (default: %(default)s)")
    parser.add_argument("--percentiles", choices=PERCENTILE_CHOICES, default="speechcraft",
                        help="speechcraft: pitch male 40th/90th, female 10th/60th, "
                             "volume/speed tertiles; tertiles: tertiles everywhere; "
                             f"{LABEL_SCHEME}: the bin proportions of a reference whose records "
                             "carry labelled bins (SynthCraft, SpeechCraft) "
                             "(default: %(default)s)")
    parser.add_argument("--pitch-measure", choices=sorted(PITCH_MEASURES), default="median",
                        help="median F0, or the floor (5th percentile) of F0 "
                             "(default: %(default)s)")
    parser.add_argument("--volume-measure", choices=sorted(VOLUME_MEASURES), default="lufs",
                        help="integrated loudness (LUFS), or the median RMS (level) or peak "
                             "(peak) level of the voiced frames, dBFS (default: %(default)s)")
    parser.add_argument("--min-speaker-utterances", type=positive_int, default=10, metavar="K",
                        help="speaker normalisation and speaker-level gender need K measured "
                             "utterances of the speaker (default: %(default)s)")
    parser.add_argument("--report", type=Path, metavar="REPORT.json",
                        help="also write the final report as JSON")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def format_report(report: dict[str, Any]) -> str:
    lines = [f"annotated {report['utterances']} utterances into {report['out']} "
             f"({report['fully_annotated']} with gender, pitch, volume and speed)",
             f"  {report['seconds']:.1f} s: {report['utterances_per_second']:.2f} utterances/s, "
             f"{report['x_real_time']:.1f}x real time, {report['workers']} worker(s)",
             f"  reference stats: {report['reference_stats']}",
             "  binning: " + ", ".join(f"{k}={v}" for k, v in report["binning"].items())]
    for attribute, reasons in report["null"].items():
        text = ", ".join(f"{r}={n}" for r, n in sorted(reasons.items())) or "none"
        lines.append(f"  null {attribute:6s}: {text}")
    lines.append("  captions: " + ", ".join(f"{k}={v}" for k, v in
                                           sorted(report["captions"].items())))
    lines.append("  gender from: " + ", ".join(f"{k}={v}" for k, v in
                                              sorted(report["gender_source"].items())))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.manifest.exists():
        print(f"error: manifest not found: {args.manifest}", file=sys.stderr)
        return 2
    if not _MANIFEST_NAME.match(args.out.name):
        print(f"note: {args.out.name} is not named <corpus>_cuts_<split>.jsonl.gz, so a "
              "CorpusSpec will not find it", file=sys.stderr)
    cfg = BinningConfig(normalize_by=args.normalize_by, percentiles=args.percentiles,
                        pitch_measure=args.pitch_measure, volume_measure=args.volume_measure,
                        min_speaker_utterances=args.min_speaker_utterances)
    if args.reference_stats is not None and not args.reference_stats.is_file():
        print(f"error: reference stats not found: {args.reference_stats}", file=sys.stderr)
        return 2
    try:
        report = annotate_manifest(args.manifest, args.out, reference_stats=args.reference_stats,
                                   save_stats=args.save_stats, cfg=cfg,
                                   overwrite_captions=args.overwrite_captions,
                                   workers=args.workers, progress=not args.no_progress)
    except ValueError as err:  # --out == --manifest, foreign stats file, unparsable manifest line
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_report(report))
    if args.report is not None:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
