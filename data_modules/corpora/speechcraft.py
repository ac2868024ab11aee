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
:data:`CAPTION_KEYS` is accepted and the first present one becomes the record's ``caption``:
``description`` first (the descriptive caption is what the model learns to produce), then
``caption``, ``text_description``, ``style_description``, ``text_style_target`` (the CTTS fork)
and ``instruction`` last (a TTS instruction, the least descriptive). All caption texts found
are kept in the supervision's ``custom["captions"]``. Records of one key spread over several
files (a Labels file plus a Description file, say) are merged. A file whose values are plain
strings is read as labels where the string looks like ``key:value`` labels, else as
instructions when the file name says ``instruction``, else as descriptions. A ``.jsonl`` file
holds one record per line, either ``{"<key>": {...}}`` or ``{"key"|"id"|"sid": ..., ...}``.

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
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

from data_modules.cli_types import fraction

if TYPE_CHECKING:  # lhotse (imported by common) takes seconds: only where work is done
    from data_modules.corpora.common import PrepareReport

CORPUS = "speechcraft"
AUDIO_EXTENSIONS: tuple[str, ...] = (".wav", ".flac", ".opus")
LABEL_EXTENSIONS: tuple[str, ...] = (".json", ".jsonl")
DEFAULT_DEV_FRACTION = 0.01
DEFAULT_TEST_FRACTION = 0.01

# Record keys holding a caption, in order of preference (see the module docstring).
CAPTION_KEYS: tuple[str, ...] = ("description", "caption", "text_description",
                                 "style_description", "text_style_target", "instruction")
# JSONL fields that may name the utterance.
KEY_FIELDS: tuple[str, ...] = ("key", "id", "sid", "segment_id", "utt_id", "utt")
ATTRIBUTE_KEYS: tuple[str, ...] = ("gender", "age", "pitch", "volume", "speed", "emphasis")

GIGASPEECH_SEGMENT = re.compile(r"^(?P<aid>.+)_S\d+$")
_LEVELS = {"low": "low", "normal": "normal", "medium": "normal", "moderate": "normal",
           "mid": "normal", "middle": "normal", "average": "normal", "high": "high"}
_SPEEDS = {"slow": "slow", "normal": "normal", "medium": "normal", "moderate": "normal",
           "average": "normal", "fast": "fast"}
_GENDERS = {"male": "male", "man": "male", "m": "male", "female": "female", "woman": "female",
            "f": "female"}
_LABEL_ALIASES = {"energy": "volume", "transcript": "transcription", "text": "transcription"}
_NONE_WORDS = {"", "none", "null", "n/a", "unknown", "-"}


class LayoutError(Exception):
    """A missing input path, or inputs that do not look like SpeechCraft at all."""


# ------------------------------------------------------------------------------ labels
def parse_labels(text: str) -> dict[str, str]:
    """``"age:Elderly\\tgender:male\\t...\\ttranscription: text"`` -> ``{"age": "Elderly", ...}``.

    Keys are lowercased (``energy`` read as ``volume``); the transcription keeps the rest of
    the string, tabs included. Parts without a colon are ignored.
    """
    out: dict[str, str] = {}
    parts = text.split("\t")
    for i, part in enumerate(parts):
        key, sep, value = part.partition(":")
        if not sep:
            continue
        key = _LABEL_ALIASES.get(key.strip().lower(), key.strip().lower())
        if key == "transcription":
            out[key] = "\t".join([value, *parts[i + 1:]]).strip()
            break
        out[key] = value.strip()
    return out


def _looks_like_labels(text: str) -> bool:
    return bool(re.search(r"(^|\t)\s*(gender|emotion|pitch|age)\s*:", text, re.IGNORECASE))


def iter_label_files(paths: Iterable[str | Path]) -> Iterator[Path]:
    """The label files named or found (recursively, sorted) in the given folders."""
    for path in map(Path, paths):
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.suffix in LABEL_EXTENSIONS
                              and p.is_file() and not p.name.startswith("._"))
        else:
            yield path


def _record_of_value(value: Any, file: Path) -> dict[str, Any] | None:
    """A label file's value as a record dict (keys lowercased); ``None`` when unusable."""
    if isinstance(value, str):
        if _looks_like_labels(value):
            return {"labels": value}
        return {"instruction" if "instruct" in file.name.lower() else "description": value}
    if isinstance(value, dict):
        return {str(k).lower(): v for k, v in value.items()}
    return None


def _jsonl_pairs(text: str) -> Iterator[tuple[int, Any]]:
    """``(line number, parsed object or the JSONDecodeError)`` for each non-empty line."""
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as err:
                yield number, err
            except (ValueError, RecursionError) as err:  # a >4300-digit int, deep nesting
                yield number, json.JSONDecodeError(f"{type(err).__name__}: {err}", line, 0)


def read_label_file(path: Path, report: PrepareReport) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(key, record)`` pairs of one label file; bad files, lines and values are skipped.

    A ``.json`` file that does not parse as a whole is skipped (``bad_label_file``, the
    decoder's line and column in the detail): records cannot be told apart reliably in a
    broken document. A broken line of a ``.jsonl`` file skips that line (``bad_label_line``).
    """
    try:
        text = path.read_text(encoding="utf-8-sig", errors="replace")
    except OSError as err:
        report.skip("bad_label_file", str(path), f"{type(err).__name__}: {err}")
        return
    if path.suffix == ".jsonl":
        entries: list[tuple[str, Any]] = []
        for number, obj in _jsonl_pairs(text):
            where = f"{path}:{number}"
            if isinstance(obj, json.JSONDecodeError):
                report.skip("bad_label_line", where, str(obj))
                continue
            if not isinstance(obj, dict):
                report.skip("bad_label_line", where, f"not an object: {type(obj).__name__}")
                continue
            key = next((obj[k] for k in KEY_FIELDS if isinstance(obj.get(k), str)), None)
            if key is not None:
                entries.append((key, {k: v for k, v in obj.items() if k not in KEY_FIELDS}))
            elif len(obj) == 1:
                entries.extend(obj.items())
            else:
                report.skip("bad_label_line", where, f"no key field ({', '.join(KEY_FIELDS)})")
    else:
        try:
            document = json.loads(text)
        except (ValueError, RecursionError) as err:  # JSONDecodeError, huge ints, deep nesting
            detail = str(err) if isinstance(err, json.JSONDecodeError) else f"{type(err).__name__}: {err}"
            report.skip("bad_label_file", str(path), detail)
            return
        if not isinstance(document, dict):
            report.skip("bad_label_file", str(path), "top level is not a JSON object")
            return
        entries = list(document.items())
    for key, value in entries:
        record = _record_of_value(value, path)
        if record is None:
            report.skip("bad_label_record", str(key), f"{path}: value is a {type(value).__name__}")
            continue
        yield str(key), record


def load_labels(paths: Iterable[str | Path], report: PrepareReport) -> dict[str, dict[str, Any]]:
    """key -> record merged over all label files (an earlier file's field wins)."""
    records: dict[str, dict[str, Any]] = {}
    for path in iter_label_files(paths):
        for key, record in read_label_file(path, report):
            merged = records.setdefault(key, {})
            for name, value in record.items():
                merged.setdefault(name, value)
    return records


@dataclass
class Descriptors:
    """What one label record says about its utterance."""

    transcript: str | None
    caption: str | None
    emotion: str | None
    attributes: dict[str, str]
    captions: dict[str, str] = field(default_factory=dict)
    extra: dict[str, str] = field(default_factory=dict)  # other label keys (topic ...)
    dropped: dict[str, str] = field(default_factory=dict)  # attribute values outside the vocabulary


def _normalise_attribute(name: str, value: str) -> str | None:
    """A label value in SynthCraft's vocabulary, or ``None`` when it has no place there."""
    word = " ".join(value.strip().lower().replace("_", " ").split())
    if word in _NONE_WORDS:
        return None
    if name in ("pitch", "volume"):
        return _LEVELS.get(word)
    if name == "speed":
        return _SPEEDS.get(word)
    if name == "gender":
        return _GENDERS.get(word)
    return word  # age (child ... elderly) and emphasis (free words) are kept as lowercased text


def describe(record: dict[str, Any]) -> Descriptors:
    """The descriptors of a label record. Raises :class:`BadInput` (``bad_label_record``)
    when it has neither a parsable ``labels`` string nor a caption."""
    from data_modules.corpora.common import BadInput
    from data_modules.records import canonical_emotion

    labels_text = record.get("labels")
    if labels_text is not None and not isinstance(labels_text, str):
        raise BadInput("bad_label_record", f"'labels' is a {type(labels_text).__name__}")
    labels = parse_labels(labels_text) if labels_text else {}
    # Fields given as separate record keys count like label pairs (labels win).
    for name in (*ATTRIBUTE_KEYS, "emotion", "transcription"):
        if isinstance(record.get(name), str):
            labels.setdefault(name, record[name])
    captions = {k: record[k].strip() for k in CAPTION_KEYS
                if isinstance(record.get(k), str) and record[k].strip()}
    if not labels and not captions:
        raise BadInput("bad_label_record", "no key:value labels and no caption")
    attributes, dropped = {}, {}
    for name in ATTRIBUTE_KEYS:
        if name in labels:
            value = _normalise_attribute(name, labels[name])
            if value is not None:
                attributes[name] = value
            elif labels[name].strip().lower() not in _NONE_WORDS:
                dropped[name] = labels[name]
    known = {*ATTRIBUTE_KEYS, "emotion", "transcription"}
    return Descriptors(
        transcript=labels.get("transcription") or None,
        caption=next(iter(captions.values()), None),
        emotion=canonical_emotion(labels.get("emotion")),
        attributes=attributes,
        captions=captions,
        extra={k: v for k, v in labels.items() if k not in known},
        dropped=dropped,
    )


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
    from lhotse import load_manifest_lazy

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
        from data_modules.corpora.common import BadInput

        if path not in self._cache:
            try:
                import soundfile as sf

                info = sf.info(str(path))
                self._cache[path] = (int(info.samplerate), int(info.frames))
            except Exception as err:  # any unreadable file concerns its utterances only
                self._cache[path] = err
        cached = self._cache[path]
        if isinstance(cached, Exception):
            raise BadInput("unreadable_audio", f"{path}: {type(cached).__name__}: {cached}")
        return cached


# ------------------------------------------------------------------------------ split
def assign_split(recording_id: str, dev_fraction: float, test_fraction: float,
                 seed: int = 0) -> str:
    """``train``/``dev``/``test`` for a recording, from a hash of ``(seed, recording id)``."""
    digest = hashlib.sha256(f"{seed}/{recording_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2 ** 64
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


def _locate(key: str, audio: dict[str, Path], segments: dict[str, Segment],
            info: AudioInfo) -> tuple[dict[str, Any], str]:
    """The audio arguments of :func:`make_cut` for a key and the recording it belongs to (the
    unit of the split); raises :class:`BadInput`."""
    from data_modules.corpora.common import BadInput

    segment = segments.get(key)
    speaker = segment.speaker if segment else None
    if key in audio:  # a segment file: its own lhotse recording, grouped by its source's id
        sampling_rate, num_samples = info(audio[key])
        return (dict(audio_path=audio[key], sampling_rate=sampling_rate, num_samples=num_samples,
                     speaker=speaker),
                segment.recording_id if segment else recording_id_of(key))
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
        raise BadInput("segment_out_of_range", f"{segment.start:.2f}+{segment.duration:.2f} s "
                                               f"beyond {path} ({length:.2f} s)")
    return (dict(audio_path=path, sampling_rate=sampling_rate, num_samples=num_samples,
                 recording_id=segment.recording_id, start=segment.start,
                 duration=min(segment.duration, length - segment.start), speaker=speaker),
            segment.recording_id)


def _make_cut(key: str, desc: Descriptors, where: dict[str, Any], split: str):
    from data_modules.records import make_cut

    where = dict(where)
    path = Path(where.pop("audio_path")).resolve()
    cut = make_cut(f"{CORPUS}-{key}", path, corpus=CORPUS, split=split,
                   transcript=desc.transcript, caption=desc.caption, emotion=desc.emotion,
                   attributes=desc.attributes, gender=desc.attributes.get("gender"), **where)
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
    from collections import Counter

    from tqdm import tqdm

    from data_modules.corpora.common import BadInput, PrepareReport, write_prepared

    _check_inputs(opts)
    report = PrepareReport(CORPUS, opts.audio)
    records = load_labels(opts.labels, report)
    audio = index_audio(opts.audio)
    if not audio:
        raise LayoutError(f"unrecognised layout: no {'/'.join(AUDIO_EXTENSIONS)} file under "
                          f"{opts.audio}")
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
        report.note("attribute values outside the vocabulary, dropped: "
                    + ", ".join(f"{k} x{n}" for k, n in dropped.most_common(10)))
    report.note(f"split by recording (seed {opts.seed}, dev {opts.dev_fraction:g}, "
                f"test {opts.test_fraction:g})")
    for split in [s for s, c in cuts.items() if not c]:
        report.note(f"{split}: no utterance, no manifest written")
        del cuts[split]
    paths = write_prepared(cuts, opts.out, report, shar=opts.shar)
    return report, paths


# ------------------------------------------------------------------------------ CLI

def add_args(parser: argparse.ArgumentParser) -> None:
    """Prepare SpeechCraft labels/captions joined with their audio (GigaSpeech or segment files)."""
    parser.add_argument("--labels", type=Path, nargs="+", required=True, metavar="PATH",
                        help="SpeechCraft label files (.json/.jsonl) or folders of them; "
                             "records of one key in several files are merged")
    parser.add_argument("--audio", "--root", dest="audio", type=Path, required=True,
                        metavar="AUDIO_ROOT",
                        help="folder searched (recursively) for <segment id>.wav|.flac|.opus "
                             "files or long <recording id>.opus|.wav|.flac GigaSpeech files")
    parser.add_argument("--out", type=Path, required=True, metavar="OUT_DIR",
                        help="output directory: manifests and speechcraft_report.json")
    parser.add_argument("--gigaspeech-manifest", type=Path, nargs="+", default=[],
                        metavar="JSONL_GZ", dest="gigaspeech_manifests",
                        help="lhotse GigaSpeech supervision manifest(s) "
                             "(gigaspeech_supervisions_*.jsonl.gz) giving segment times in "
                             "the long recordings")
    parser.add_argument("--dev-fraction", type=fraction, default=DEFAULT_DEV_FRACTION,
                        metavar="F", help="share of recordings in dev (default: %(default)s)")
    parser.add_argument("--test-fraction", type=fraction, default=DEFAULT_TEST_FRACTION,
                        metavar="F", help="share of recordings in test (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, metavar="S",
                        help="seed of the recording split (default: 0)")
    parser.add_argument("--shar", action="store_true",
                        help="also write Shar shards per split (segments' audio as FLAC)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    if args.dev_fraction + args.test_fraction >= 1.0:
        print("error: --dev-fraction + --test-fraction must be below 1", file=sys.stderr)
        return 2
    opts = Options(labels=list(args.labels), audio=args.audio, out=args.out,
                   gigaspeech_manifests=list(args.gigaspeech_manifests),
                   dev_fraction=args.dev_fraction, test_fraction=args.test_fraction,
                   seed=args.seed, shar=args.shar, progress=not args.no_progress)
    try:
        report, _ = prepare(opts)
    except LayoutError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0 if sum(report.kept.values()) else 1
