"""SpeechCraft: descriptor labels and captions for GigaSpeech-M (and other) speech.

Labels (``--labels``: JSON files, JSONL files or folders of them). The official pipeline writes
one JSON object per file, keyed by utterance::

    {"POD0000003712_S0000072": {
        "labels": "age:Elderly\\tgender:male\\tpitch:low\\tvolume:normal\\tspeed:fast\\t"
                  "emotion:sad\\ttranscription: <text>",
        "description": "<caption>"}}

The ``labels`` string is tab-separated ``key:value`` pairs; ``transcription`` comes last and
keeps everything after its colon. The key names of the released GigaSpeech-M caption files are
unverified (the files are only on a Tsinghua cloud drive), so every record key in
:data:`~data_modules.corpora.speechcraft_labels.CAPTION_KEYS` is accepted and the first present
one becomes the record's ``caption``: ``description`` first (the descriptive caption is what
the model learns to produce), then ``caption``, ``text_description``, ``style_description``,
``text_style_target`` (the CTTS fork) and ``instruction`` last (a TTS instruction, the least
descriptive). All caption texts found are kept in the supervision's ``custom["captions"]``.
Records of one key spread over several files (a Labels file plus a Description file, say) are
merged. A file whose values are plain strings is read as labels where the string looks like
``key:value`` labels, else as instructions when the file name says ``instruction``, else as
descriptions. A ``.jsonl`` file holds one record per line, either ``{"<key>": {...}}`` or
``{"key"|"id"|"sid": ..., ...}``.

Keys are GigaSpeech segment ids (``POD0000003712_S0000072``; the recording id is the part
before ``_S``) or, for other sources, any name (``LJSpeech_LJ010-0227``: the key is its own
recording).

Audio (``--audio``), joined by segment id:

a. a folder of segment files named ``<key>.wav|.flac|.opus`` (anywhere below; a file
   ``<dir>/<name>.<ext>`` also answers the key ``<dir>_<name>``, the pipeline's
   ``<folder>_<basename>`` keys); or
b. long GigaSpeech recordings ``<aid>.opus|.wav|.flac`` anywhere below, with segment times from
   lhotse GigaSpeech supervision manifests (``--gigaspeech-manifest
   gigaspeech_supervisions_M.jsonl.gz``: id = sid, ``start``/``duration`` in the recording).
   A cut then points into the long recording (``start``/``duration``); no audio is cut or
   copied (``--shar`` writes the segments' audio into the shards).

A segment file is preferred over a long recording. A label without audio is skipped
(``missing_audio``); audio without a label is only counted in a note.

Record fields: ``emotion`` is the canonical label (``unknown`` and other labels -> ``None``);
``attributes`` keeps gender, age, pitch, volume, speed and emphasis where present, lowercased
to SynthCraft's vocabulary (low/normal/high, slow/normal/fast; ``medium``/``moderate`` ->
``normal``, ``energy`` -> volume); values outside it are dropped and counted in a note.
``transcript`` is the labels' ``transcription``; ``speaker`` comes from the supervision manifest
where it has one.

Split: SpeechCraft defines none. Each *recording* goes to test with probability
``--test-fraction``, to dev with ``--dev-fraction``, else to train, decided by a hash of
``(--seed, recording id)``: no recording spans two splits, and a recording keeps its split
when labels are added or removed.

The label files are read in :mod:`data_modules.corpora.speechcraft_labels`; this module joins
them with the audio, splits and writes the manifests.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import soundfile as sf
from lhotse import load_manifest_lazy
from tqdm import tqdm

from data_modules.cli_types import fraction
from data_modules.corpora.common import BadInput, LayoutError, PrepareReport, write_prepared
from data_modules.corpora.speechcraft_labels import (
    _NONE_WORDS,
    Descriptors,
    describe,
    iter_label_files,
    load_labels,
)
from data_modules.records import make_cut

CORPUS = "speechcraft"
AUDIO_EXTENSIONS: tuple[str, ...] = (".wav", ".flac", ".opus")
DEFAULT_DEV_FRACTION = 0.01
DEFAULT_TEST_FRACTION = 0.01

GIGASPEECH_SEGMENT = re.compile(r"^(?P<aid>.+)_S\d+$")


# ------------------------------------------------------------------------------ audio
def recording_id_of(key: str) -> str:
    """GigaSpeech ``<aid>_S<n>`` -> ``<aid>``; any other key is its own recording."""
    match = GIGASPEECH_SEGMENT.match(key)
    return match.group("aid") if match else key


def index_audio(root: Path) -> dict[str, Path]:
    """stem -> audio file below ``root``, plus ``<folder>_<stem>`` aliases (first one wins;
    macOS ``._*`` files are ignored)."""
    found: dict[str, Path] = {}
    aliases: dict[str, Path] = {}
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            stem, ext = os.path.splitext(name)
            if ext.lower() not in AUDIO_EXTENSIONS or name.startswith("._"):
                continue
            path = Path(folder) / name
            found.setdefault(stem, path)
            aliases.setdefault(f"{Path(folder).name}_{stem}", path)
    return {**aliases, **found}  # a real stem beats an alias of the same text


@dataclass(frozen=True)
class Segment:
    """Where a segment lies in its long recording (from a supervision manifest)."""

    recording_id: str
    start: float
    duration: float
    speaker: str | None = None


def load_segments(manifests: Iterable[str | Path], keys: set[str]) -> dict[str, Segment]:
    """Segments of the labelled ``keys`` from lhotse supervision manifests (read lazily: a
    GigaSpeech manifest holds millions of segments)."""

    segments: dict[str, Segment] = {}
    for path in manifests:
        for sup in load_manifest_lazy(path):
            if sup.id in keys and sup.id not in segments:
                speaker = sup.speaker if sup.speaker and sup.speaker not in _NONE_WORDS else None
                segments[sup.id] = Segment(sup.recording_id, sup.start, sup.duration, speaker)
    return segments


class AudioInfo:
    """Sampling rate and length of audio files, each read once (long recordings hold many
    segments)."""

    def __init__(self) -> None:
        self._cache: dict[Path, tuple[int, int] | Exception] = {}

    def __call__(self, path: Path) -> tuple[int, int]:
        """``(sampling_rate, num_samples)``; raises :class:`BadInput` (``unreadable_audio``)."""

        if path not in self._cache:
            try:
                info = sf.info(str(path))
                self._cache[path] = (int(info.samplerate), int(info.frames))
            except Exception as err:  # any unreadable file concerns its utterances only
                self._cache[path] = err
        cached = self._cache[path]
        if isinstance(cached, Exception):
            raise BadInput("unreadable_audio", f"{path}: {type(cached).__name__}: {cached}")
        return cached


# ------------------------------------------------------------------------------ split
def assign_split(recording_id: str, dev_fraction: float, test_fraction: float, seed: int = 0) -> str:
    """``train``/``dev``/``test`` for a recording, from a hash of ``(seed, recording id)``."""
    digest = hashlib.sha256(f"{seed}/{recording_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < test_fraction:
        return "test"
    if u < test_fraction + dev_fraction:
        return "dev"
    return "train"


# ------------------------------------------------------------------------------ prepare
@dataclass
class Options:
    """Everything :func:`prepare` needs (the CLI's options)."""

    labels: list[Path]
    audio: Path
    out: Path
    gigaspeech_manifests: list[Path] = field(default_factory=list)
    dev_fraction: float = DEFAULT_DEV_FRACTION
    test_fraction: float = DEFAULT_TEST_FRACTION
    seed: int = 0
    shar: bool = False
    progress: bool = True


def _check_inputs(opts: Options) -> None:
    """Raise :class:`LayoutError` naming the first missing input path."""
    if not opts.labels:
        raise LayoutError("no label file given (--labels)")
    for path in opts.labels:
        if not path.exists():
            raise LayoutError(f"label path {path} does not exist")
    if not opts.audio.is_dir():
        raise LayoutError(f"audio root {opts.audio} does not exist or is not a folder")
    for path in opts.gigaspeech_manifests:
        if not path.is_file():
            raise LayoutError(f"GigaSpeech supervision manifest {path} does not exist")
    if not any(True for _ in iter_label_files(opts.labels)):
        raise LayoutError(f"no .json/.jsonl label file in {', '.join(map(str, opts.labels))}")


def _locate(
    key: str, audio: dict[str, Path], segments: dict[str, Segment], info: AudioInfo
) -> tuple[dict[str, Any], str]:
    """The audio arguments of :func:`make_cut` for a key and the recording it belongs to (the
    unit of the split); raises :class:`BadInput`."""

    segment = segments.get(key)
    speaker = segment.speaker if segment else None
    if key in audio:  # a segment file: its own lhotse recording, grouped by its source's id
        sampling_rate, num_samples = info(audio[key])
        return (
            dict(audio_path=audio[key], sampling_rate=sampling_rate, num_samples=num_samples, speaker=speaker),
            segment.recording_id if segment else recording_id_of(key),
        )
    if segment is None:
        hint = ""
        if recording_id_of(key) in audio:
            hint = f"; recording {recording_id_of(key)} is there but no manifest gives the times"
        raise BadInput("missing_audio", f"no audio file named {key}{hint}")
    if segment.recording_id not in audio:
        raise BadInput("missing_audio", f"no audio file of recording {segment.recording_id}")
    path = audio[segment.recording_id]
    sampling_rate, num_samples = info(path)
    length = num_samples / sampling_rate
    if segment.start < 0 or segment.start + segment.duration > length + 0.05:
        raise BadInput(
            "segment_out_of_range", f"{segment.start:.2f}+{segment.duration:.2f} s beyond {path} ({length:.2f} s)"
        )
    return (
        dict(
            audio_path=path,
            sampling_rate=sampling_rate,
            num_samples=num_samples,
            recording_id=segment.recording_id,
            start=segment.start,
            duration=min(segment.duration, length - segment.start),
            speaker=speaker,
        ),
        segment.recording_id,
    )


def _make_cut(key: str, desc: Descriptors, where: dict[str, Any], split: str):

    where = dict(where)
    path = Path(where.pop("audio_path")).resolve()
    cut = make_cut(
        f"{CORPUS}-{key}",
        path,
        corpus=CORPUS,
        split=split,
        transcript=desc.transcript,
        caption=desc.caption,
        emotion=desc.emotion,
        attributes=desc.attributes,
        gender=desc.attributes.get("gender"),
        **where,
    )
    custom = cut.supervisions[0].custom
    custom["speechcraft_key"] = key
    if desc.captions:
        custom["captions"] = desc.captions
    if desc.extra:
        custom["labels_extra"] = desc.extra
    return cut


def prepare(opts: Options) -> tuple[PrepareReport, dict[str, Path]]:
    """Prepare SpeechCraft; returns the report and split -> manifest path.

    Raises :class:`LayoutError` for missing inputs or an audio root without audio files.
    """

    _check_inputs(opts)
    report = PrepareReport(CORPUS, opts.audio)
    records = load_labels(opts.labels, report)
    audio = index_audio(opts.audio)
    if not audio:
        raise LayoutError(f"unrecognised layout: no {'/'.join(AUDIO_EXTENSIONS)} file under {opts.audio}")
    segments = load_segments(opts.gigaspeech_manifests, set(records))
    info = AudioInfo()
    used: set[Path] = set()
    dropped: Counter = Counter()
    cuts: dict[str, list] = {"train": [], "dev": [], "test": []}
    for key in tqdm(sorted(records), desc=CORPUS, unit="utt", disable=not opts.progress):
        try:
            desc = describe(records[key])
            where, group = _locate(key, audio, segments, info)
        except BadInput as err:
            report.skip(err.reason, key, err.detail)
            continue
        dropped.update(f"{name}={value}" for name, value in desc.dropped.items())
        used.add(Path(where["audio_path"]))
        split = assign_split(group, opts.dev_fraction, opts.test_fraction, opts.seed)
        cuts[split].append(_make_cut(key, desc, where, split))
    unused = len(set(audio.values()) - used)
    if unused:
        report.note(f"{unused} audio file(s) under {opts.audio} have no label record (not used)")
    if dropped:
        report.note(
            "attribute values outside the vocabulary, dropped: "
            + ", ".join(f"{k} x{n}" for k, n in dropped.most_common(10))
        )
    report.note(f"split by recording (seed {opts.seed}, dev {opts.dev_fraction:g}, test {opts.test_fraction:g})")
    for split in [s for s, c in cuts.items() if not c]:
        report.note(f"{split}: no utterance, no manifest written")
        del cuts[split]
    paths = write_prepared(cuts, opts.out, report, shar=opts.shar)
    return report, paths


# ------------------------------------------------------------------------------ CLI


def add_args(parser: argparse.ArgumentParser) -> None:
    """Prepare SpeechCraft labels/captions joined with their audio (GigaSpeech or segment files)."""
    parser.add_argument(
        "--labels",
        type=Path,
        nargs="+",
        required=True,
        metavar="PATH",
        help="SpeechCraft label files (.json/.jsonl) or folders of them; "
        "records of one key in several files are merged",
    )
    parser.add_argument(
        "--audio",
        "--root",
        dest="audio",
        type=Path,
        required=True,
        metavar="AUDIO_ROOT",
        help="folder searched (recursively) for <segment id>.wav|.flac|.opus "
        "files or long <recording id>.opus|.wav|.flac GigaSpeech files",
    )
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="OUT_DIR",
        help="output directory: manifests and speechcraft_report.json",
    )
    parser.add_argument(
        "--gigaspeech-manifest",
        type=Path,
        nargs="+",
        default=[],
        metavar="JSONL_GZ",
        dest="gigaspeech_manifests",
        help="lhotse GigaSpeech supervision manifest(s) "
        "(gigaspeech_supervisions_*.jsonl.gz) giving segment times in "
        "the long recordings",
    )
    parser.add_argument(
        "--dev-fraction",
        type=fraction,
        default=DEFAULT_DEV_FRACTION,
        metavar="F",
        help="share of recordings in dev (default: %(default)s)",
    )
    parser.add_argument(
        "--test-fraction",
        type=fraction,
        default=DEFAULT_TEST_FRACTION,
        metavar="F",
        help="share of recordings in test (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the recording split (default: 0)")
    parser.add_argument(
        "--shar", action="store_true", help="also write Shar shards per split (segments' audio as FLAC)"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    if args.dev_fraction + args.test_fraction >= 1.0:
        print("error: --dev-fraction + --test-fraction must be below 1", file=sys.stderr)
        return 2
    opts = Options(
        labels=list(args.labels),
        audio=args.audio,
        out=args.out,
        gigaspeech_manifests=list(args.gigaspeech_manifests),
        dev_fraction=args.dev_fraction,
        test_fraction=args.test_fraction,
        seed=args.seed,
        shar=args.shar,
        progress=not args.no_progress,
    )
    try:
        report, _ = prepare(opts)
    except LayoutError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0 if sum(report.kept.values()) else 1
