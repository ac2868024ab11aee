"""SynthCraft: the built-in synthetic English speech corpus with exactly known descriptors.

Every clip is an English sentence from a small closed grammar
(:data:`~data_modules.synthcraft_speech.VOCABULARY`), rendered by libespeak-ng (the library
shipped with ``espeakng_loader``, driven through ctypes) with chosen settings, resampled to
16 kHz and stored as 16-bit FLAC. Because the settings are chosen, the descriptors are ground
truth rather than estimates:

* ``gender`` / ``speaker``: one of six espeak voice variants (three male, three female);
* ``pitch``: ``low`` / ``normal`` / ``high`` -- the espeak pitch level, relative to the voice;
* ``volume``: ``low`` / ``normal`` / ``high`` -- the espeak amplitude (never normalised away);
* ``speed``: ``slow`` / ``normal`` / ``fast`` -- the espeak rate in words per minute;
* ``emphasis``: one content word wrapped in SSML ``<emphasis>`` (position ``emphasis_index``).

The emotion (``neutral``, ``happy``, ``sad``, ``angry``; balanced) is a prosody profile
(:data:`~data_modules.synthcraft_speech.EMOTION_PROFILES`): it biases the pitch/volume/speed
bins (sad: low, quiet, slow; angry: loud, fast; happy: high, fast), sets the width of the
melody (sad flat ... happy wide) and the vocal effort (consonant strength, stressed/unstressed
loudness contrast), with per-clip jitter of the numeric settings. Every emotion keeps at least
a 15 % chance of every bin, so no single descriptor gives the emotion away, while the cues
together make it learnable from the audio. Captions describe the descriptors (never the
emotion) in the style of SpeechCraft, with several templates
(:data:`~data_modules.captions.CAPTION_TEMPLATES`) that a keyword parser can read back.

Generation is deterministic for a seed: each clip's choices come from a seed derived from
``(seed, split, index)`` and espeak is driven so that a clip's samples do not depend on what the
process rendered before (see :class:`~data_modules.synthcraft_speech._Espeak`), so parallel
workers give the same audio as one.

This module plans the clips and writes the corpus (audio, manifests, report); the sentences,
voices and espeak rendering are in :mod:`data_modules.synthcraft_speech`, the caption templates
in :mod:`data_modules.captions`.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import json
import multiprocessing
import random
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from lhotse import CutSet
from tqdm import tqdm

from data_modules.captions import render_caption
from data_modules.cli_types import default_workers
from data_modules.config import SynthCraftSpec
from data_modules.records import EMOTIONS, make_cut, manifest_path
from data_modules.synthcraft_speech import (
    _CONTENT_CLASSES,
    _WORD_COUNTS,
    EMOTION_PROFILES,
    LEVELS,
    SAMPLING_RATE,
    SPEEDS,
    VOICES,
    _engine,
    _init_worker,
    realise_settings,
    sample_sentence,
    synthesize,
)

SIZES = SynthCraftSpec()  # the default split sizes, defined once in the data schema

CORPUS = "synthcraft"
SPLITS: tuple[str, ...] = ("train", "dev", "test")
SYNTHCRAFT_EMOTIONS: tuple[str, ...] = EMOTIONS[:4]  # neutral, happy, sad, angry
MIN_DURATION, MAX_DURATION = 1.0, 6.0
# Bumped whenever the rendered corpus would change, so ensure_synthcraft regenerates.
GENERATOR_VERSION = 1


# --------------------------------------------------------------------------------- the corpus
@dataclass
class ClipPlan:
    """Everything about one clip that is decided before rendering."""

    id: str
    split: str
    seed: int
    transcript: str
    emotion: str
    speaker: str
    gender: str
    attributes: dict[str, Any]
    caption: str


def _derived_seed(*parts: object) -> int:
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def plan_split(split: str, n: int, seed: int) -> list[ClipPlan]:
    """The clips of a split: balanced emotions, descriptors drawn from the emotion profiles."""
    emotions = [SYNTHCRAFT_EMOTIONS[i % len(SYNTHCRAFT_EMOTIONS)] for i in range(n)]
    random.Random(_derived_seed(CORPUS, seed, split, "emotions")).shuffle(emotions)
    plans = []
    for index, emotion in enumerate(emotions):
        clip_seed = _derived_seed(CORPUS, seed, split, index)
        rng = random.Random(clip_seed)
        profile = EMOTION_PROFILES[emotion]
        voice = rng.choice(VOICES)
        pitch = rng.choices(LEVELS, weights=profile.pitch)[0]
        volume = rng.choices(LEVELS, weights=profile.volume)[0]
        speed = rng.choices(SPEEDS, weights=profile.speed)[0]
        words, classes = sample_sentence(rng, rng.choice(_WORD_COUNTS[speed]))
        emphasis_index = rng.choice([i for i, c in enumerate(classes) if c in _CONTENT_CLASSES])
        attributes = {
            "gender": voice.gender,
            "pitch": pitch,
            "volume": volume,
            "speed": speed,
            "emphasis": words[emphasis_index],
            "emphasis_index": emphasis_index,
            "render": realise_settings(voice.speaker, pitch, volume, speed, emotion, rng),
        }
        plans.append(
            ClipPlan(
                id=f"{CORPUS}-{split}-{index:06d}",
                split=split,
                seed=clip_seed,
                transcript=" ".join(words),
                emotion=emotion,
                speaker=voice.speaker,
                gender=voice.gender,
                attributes=attributes,
                caption=render_caption(attributes, rng),
            )
        )
    return plans


def _render_to_file(job: tuple[ClipPlan, str]) -> tuple[str, int]:
    """Render a planned clip and write it; returns ("ok", num_samples) or (skip reason, 0)."""
    plan, path = job
    attrs = plan.attributes
    audio = synthesize(plan.transcript.split(), attrs["emphasis_index"], attrs["render"], plan.seed)
    if audio.size == 0 or not np.any(audio):
        return "render_failed", 0
    duration = audio.size / SAMPLING_RATE
    if duration < MIN_DURATION:
        return "too_short", 0
    if duration > MAX_DURATION:
        return "too_long", 0
    # Encoded in memory and written at once: libsndfile's many small writes to a file are
    # several times slower than the encoding itself.
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(audio, -1.0, 32767 / 32768), SAMPLING_RATE, subtype="PCM_16", format="FLAC")
    Path(path).write_bytes(buffer.getvalue())
    return "ok", audio.size


# Fork where it is safe (Linux): workers start at once instead of re-importing lhotse and
# torch, and share the parent's engine (synchronous output runs no espeak threads).
_START_METHOD = "fork" if sys.platform.startswith("linux") else "spawn"
# Below this many clips per worker, starting workers costs more than it saves.
_MIN_CLIPS_PER_WORKER = 200


def _rendered(jobs: list[tuple[ClipPlan, str]], num_workers: int, progress: bool) -> Iterator[tuple[str, int]]:
    """Results of :func:`_render_to_file` for ``jobs``, in order."""
    engine = _engine()  # before forking, so that workers inherit it
    with tqdm(total=len(jobs), desc=CORPUS, unit="clip", disable=not progress) as bar:
        if num_workers <= 1:
            for job in jobs:
                yield _render_to_file(job)
                bar.update()
            return
        ctx = multiprocessing.get_context(_START_METHOD)
        with ctx.Pool(num_workers, initializer=_init_worker, initargs=(str(engine.voice_dir),)) as pool:
            for result in pool.imap(_render_to_file, jobs, chunksize=16):
                yield result
                bar.update()


def generate(
    out_dir: str | Path,
    n_train: int = SIZES.n_train,
    n_dev: int = SIZES.n_dev,
    n_test: int = SIZES.n_test,
    seed: int = SIZES.seed,
    num_workers: int | None = None,
    progress: bool = True,
) -> dict[str, Path]:
    """Generate the corpus into ``out_dir``; returns the manifest path of each split.

    Writes ``audio/{split}/{id}.flac`` (replacing earlier audio of the split), one lhotse CutSet
    manifest per split (:func:`~data_modules.records.manifest_path`) and
    ``synthcraft_report.json`` (kept/skipped counts and hours per split, skip reasons, timing,
    parameters). ``num_workers=None`` uses min(2, CPU count) processes.
    """
    sizes = {"train": n_train, "dev": n_dev, "test": n_test}
    if any(n < 1 for n in sizes.values()):  # lhotse reads an empty manifest back as None
        raise ValueError(f"every split needs at least one clip, got {sizes}")
    num_workers = default_workers() if num_workers is None else num_workers
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    out_dir = Path(out_dir)
    start = time.perf_counter()

    jobs: list[tuple[ClipPlan, str]] = []
    for split, n in sizes.items():
        audio_dir = out_dir / "audio" / split
        shutil.rmtree(audio_dir, ignore_errors=True)  # no stale clips from an earlier run
        audio_dir.mkdir(parents=True)
        jobs += [(plan, str(audio_dir / f"{plan.id}.flac")) for plan in plan_split(split, n, seed)]

    workers = min(num_workers, max(1, len(jobs) // _MIN_CLIPS_PER_WORKER))
    cuts: dict[str, list] = {split: [] for split in SPLITS}
    skipped: dict[str, dict[str, int]] = {split: {} for split in SPLITS}
    for (plan, path), (status, num_samples) in zip(jobs, _rendered(jobs, workers, progress)):
        if status != "ok":
            skipped[plan.split][status] = skipped[plan.split].get(status, 0) + 1
            continue
        cuts[plan.split].append(
            make_cut(
                plan.id,
                path,
                sampling_rate=SAMPLING_RATE,
                num_samples=num_samples,
                corpus=CORPUS,
                split=plan.split,
                transcript=plan.transcript,
                caption=plan.caption,
                emotion=plan.emotion,
                attributes=plan.attributes,
                speaker=plan.speaker,
                gender=plan.gender,
                language="en",
            )
        )

    manifests = {split: manifest_path(out_dir, CORPUS, split) for split in SPLITS}
    for split, path in manifests.items():
        CutSet.from_cuts(cuts[split]).to_file(path)
    elapsed = time.perf_counter() - start

    total_skips: dict[str, int] = {}
    for per_split in skipped.values():
        for reason, count in per_split.items():
            total_skips[reason] = total_skips.get(reason, 0) + count
    report = {
        "corpus": CORPUS,
        "generator_version": GENERATOR_VERSION,
        "params": {"n_train": n_train, "n_dev": n_dev, "n_test": n_test, "seed": seed},
        "splits": {
            split: {
                "requested": sizes[split],
                "kept": len(cuts[split]),
                "hours": sum(c.duration for c in cuts[split]) / 3600,
                "skipped": skipped[split],
                "manifest": str(manifests[split]),
            }
            for split in SPLITS
        },
        "skipped": total_skips,
        "sampling_rate": SAMPLING_RATE,
        "num_workers": workers,
        "generation_seconds": elapsed,
        "clips_per_second": len(jobs) / elapsed,
    }
    (out_dir / f"{CORPUS}_report.json").write_text(json.dumps(report, indent=2))
    return manifests


def read_report(out_dir: str | Path) -> dict[str, Any] | None:
    """The generation report in ``out_dir``; ``None`` if there is none or it is unreadable."""
    try:
        return json.loads((Path(out_dir) / f"{CORPUS}_report.json").read_text())
    except (OSError, ValueError):
        return None


def ensure_synthcraft(out_dir: str | Path, **kw: Any) -> dict[str, Path]:
    """Manifest paths of a SynthCraft corpus in ``out_dir``, generating it only when needed.

    ``kw`` are :func:`generate`'s keyword arguments. The corpus is (re)generated when a manifest
    is missing or the report's sizes, seed or generator version differ from the requested ones.
    """
    defaults = {
        name: p.default
        for name, p in inspect.signature(generate).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    unknown = set(kw) - set(defaults)
    if unknown:
        raise TypeError(f"unknown arguments for generate(): {sorted(unknown)}")
    wanted = {key: {**defaults, **kw}[key] for key in ("n_train", "n_dev", "n_test", "seed")}
    paths = {split: manifest_path(out_dir, CORPUS, split) for split in SPLITS}
    report = read_report(out_dir)
    if (
        report is not None
        and report.get("generator_version") == GENERATOR_VERSION
        and report.get("params") == wanted
        and all(p.exists() for p in paths.values())
    ):
        return paths
    return generate(out_dir, **kw)
