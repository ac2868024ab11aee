"""MELD (Multimodal EmotionLines Dataset): Friends utterances with 7 emotion labels.

Layout of the raw release (``MELD.Raw.tar.gz`` unpacked; the root may also be its parent that
holds ``MELD.Raw/``)::

    ROOT/train_sent_emo.csv  (or ROOT/train/train_sent_emo.csv)
    ROOT/dev_sent_emo.csv    (or ROOT/dev/dev_sent_emo.csv)
    ROOT/test_sent_emo.csv   (or ROOT/test/test_sent_emo.csv)
    ROOT/train/train_splits/dia{D}_utt{U}.mp4
    ROOT/dev_splits_complete/dia{D}_utt{U}.mp4         (Kaggle mirrors: ROOT/dev/dev_splits_complete/)
    ROOT/output_repeated_splits_test/dia{D}_utt{U}.mp4 (mirrors: ROOT/test/output_repeated_splits_test/)

Every candidate folder of a split is searched (the plain and the nested mirror layout, and a
bare ``ROOT/train_splits``); a clip found in both is taken from the first (:data:`CLIP_DIRS`).

Choices:

* The CSVs are read with the ``csv`` module (quoted fields with commas, CRLF). They are UTF-8;
  a line that is not valid UTF-8 (edited copies in the wild) is decoded as cp1252 instead of
  failing the file, and the report notes how many lines needed it.
* An utterance is identified by ``Dialogue_ID``/``Utterance_ID`` (``dia{D}_utt{U}``, the clip's
  file name); ``Sr No.`` is not unique in train and is never used. Cut ids carry the split
  (``meld-train-dia0_utt0``) because dialogue numbers restart in every split. A row whose ids
  are not integers is skipped (``bad_csv_row``); a repeated id keeps the first row
  (``duplicate_id``).
* ``final_videos_test*.mp4`` (re-cuts without CSV rows) and macOS ``._*`` files are ignored;
  other videos without a CSV row are counted in a note.
* Audio is decoded once from the mp4 with PyAV, downmixed to mono and resampled to 16 kHz by
  libswresample (PyAV's ``AudioResampler``: the standard 5.1 downmix matrix, which keeps the
  centre dialogue channel at full level, unlike a plain channel mean), clipped to [-1, 1) and
  cached as 16-bit FLAC in ``OUT/audio/{split}/dia{D}_utt{U}.flac``. An existing readable
  16 kHz mono FLAC is reused, so a second run decodes nothing. Decoding runs in a process pool.
* A clip that cannot be decoded is skipped (``corrupt_audio``: train ``dia125_utt3`` in the
  real release), a CSV row without a clip likewise (``missing_audio``: dev ``dia110_utt7``).
* Clips longer than ``--max-duration`` (default 30 s) are skipped (``too_long``): three real
  clips are cut wrongly (test ``dia38_utt4`` 305 s, test ``dia220_utt0`` 235 s, train
  ``dia309_utt0`` 41 s). Their audio stays cached, so a rerun with another limit is cheap.
  Very short clips (0.064 s exist) are kept; the data module filters by its own minimum.
* Emotions map to the canonical labels (joy -> happy, anger -> angry, sadness -> sad,
  surprise -> surprised, fear -> fearful, disgust -> disgusted, neutral). Transcript =
  ``Utterance``, speaker = ``Speaker``; sentiment, dialogue/utterance ids, season and episode
  are kept in the supervision's ``custom`` dict.

On the real release this keeps 9,988 / 1,108 / 2,610 decodable clips (EmoBox's counts), of
which the 30 s limit removes 1 train and 2 test clips.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import multiprocessing
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from tqdm import tqdm

from data_modules.audio import SAMPLING_RATE, cached_samples, decode_mp4, write_flac
from data_modules.cli_types import default_workers, positive_float, positive_int
from data_modules.corpora.common import BadInput, LayoutError, PrepareReport, write_prepared
from data_modules.records import canonical_emotion, make_cut

CORPUS = "meld"
SPLITS: tuple[str, ...] = ("train", "dev", "test")
DEFAULT_MAX_DURATION = 30.0

# Candidate clip folders per split, relative to the root, in order of preference.
CLIP_DIRS: dict[str, tuple[str, ...]] = {
    "train": ("train/train_splits", "train_splits"),
    "dev": ("dev_splits_complete", "dev/dev_splits_complete"),
    "test": ("output_repeated_splits_test", "test/output_repeated_splits_test"),
}
# Candidate CSV locations per split, relative to the root.
CSV_PATHS: dict[str, tuple[str, ...]] = {
    split: (f"{split}_sent_emo.csv", f"{split}/{split}_sent_emo.csv") for split in SPLITS
}
REQUIRED_COLUMNS = ("Utterance", "Speaker", "Emotion", "Dialogue_ID", "Utterance_ID")

# Known defects of the real release (declare-lab/MELD issues #22, #27, #39, #52), named in the
# skip details so that a user recognises them; detection never relies on this table.
KNOWN_BAD_CLIPS: dict[tuple[str, str], str] = {
    ("train", "dia125_utt3"): "corrupt in the raw release (MELD issues #39, #52)",
    ("dev", "dia110_utt7"): "absent from the raw release (MELD issues #22, #27)",
}


# ------------------------------------------------------------------------------- planning
@dataclass(frozen=True)
class MeldItem:
    """One CSV row: an utterance to prepare, with its clip when one was found."""

    split: str
    dialogue_id: int
    utterance_id: int
    transcript: str | None
    speaker: str | None
    emotion: str  # canonical label
    sentiment: str | None
    season: str | None
    episode: str | None
    csv_seconds: float | None  # EndTime - StartTime from the CSV (close to the clip's length)
    mp4: Path | None = None

    @property
    def name(self) -> str:
        """``dia{D}_utt{U}``: the clip's file stem."""
        return f"dia{self.dialogue_id}_utt{self.utterance_id}"

    @property
    def cut_id(self) -> str:
        return f"{CORPUS}-{self.split}-{self.name}"


def _decode_csv_bytes(raw: bytes) -> tuple[str, int]:
    """The CSV text and the number of lines that were not UTF-8 (decoded as cp1252 instead)."""
    try:
        return raw.decode("utf-8-sig"), 0
    except UnicodeDecodeError:
        pass
    lines, fallback = [], 0
    for line in raw.splitlines(keepends=True):
        try:
            lines.append(line.decode("utf-8"))
        except UnicodeDecodeError:
            lines.append(line.decode("cp1252", errors="replace"))
            fallback += 1
    return "".join(lines).lstrip("\ufeff"), fallback


def _timestamp_seconds(text: str | None) -> float | None:
    """``"00:16:16,059"`` -> 976.059; ``None`` when the field is not such a time."""
    try:
        hours, minutes, seconds = (text or "").strip().replace(",", ".").split(":")
        value = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        return None
    return value if math.isfinite(value) else None  # "nan", "1e999" parse as floats


def _clean(text: str | None) -> str | None:
    text = (text or "").strip()
    return text or None


def read_csv(path: str | Path, split: str, report: PrepareReport) -> list[MeldItem]:
    """The usable rows of one ``*_sent_emo.csv`` (without clips); bad rows are skipped.

    Raises :class:`BadInput` (``unrecognised_csv``/``unreadable_csv``) when the header lacks
    MELD's columns or the file cannot be read: a whole-file problem, not a row's.
    """

    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise BadInput("unreadable_csv", f"{path}: {err}") from None
    text, fallback = _decode_csv_bytes(raw)
    if fallback:
        report.note(f"{path}: {fallback} line(s) were not UTF-8 and were read as cp1252")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise BadInput("unrecognised_csv", f"{path}: no column(s) {', '.join(missing)}")
    items: list[MeldItem] = []
    seen: set[str] = set()
    failures = 0  # in a row; each consumes input, the bound is only a safety net
    while failures < 1000:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as err:  # e.g. a field over csv's size limit: that row only
            failures += 1
            report.skip("bad_csv_row", f"{split}:{path.name}:after line {reader.line_num}", str(err))
            continue
        failures = 0
        where = f"{split}:{path.name}:{reader.line_num}"
        try:
            dia, utt = int(row["Dialogue_ID"]), int(row["Utterance_ID"])
        except (TypeError, ValueError):
            report.skip(
                "bad_csv_row", where, f"Dialogue_ID={row.get('Dialogue_ID')!r} Utterance_ID={row.get('Utterance_ID')!r}"
            )
            continue
        emotion = canonical_emotion(row.get("Emotion"))
        name = f"dia{dia}_utt{utt}"
        if emotion is None:
            report.skip("unknown_emotion", f"{split}/{name}", repr(row.get("Emotion")))
            continue
        if name in seen:
            report.skip("duplicate_id", f"{split}/{name}", f"{where}: repeats an earlier row")
            continue
        seen.add(name)
        start, end = _timestamp_seconds(row.get("StartTime")), _timestamp_seconds(row.get("EndTime"))
        items.append(
            MeldItem(
                split=split,
                dialogue_id=dia,
                utterance_id=utt,
                transcript=_clean(row.get("Utterance")),
                speaker=_clean(row.get("Speaker")),
                emotion=emotion,
                sentiment=_clean(row.get("Sentiment")),
                season=_clean(row.get("Season")),
                episode=_clean(row.get("Episode")),
                csv_seconds=round(end - start, 3) if start is not None and end is not None else None,
            )
        )
    return items


def find_csv(root: Path, split: str) -> Path | None:
    """The split's CSV under ``root`` (first candidate of :data:`CSV_PATHS`), or ``None``."""
    return next((root / rel for rel in CSV_PATHS[split] if (root / rel).is_file()), None)


def clip_dirs(root: Path, split: str) -> list[Path]:
    """The existing clip folders of a split, in order of preference."""
    return [root / rel for rel in CLIP_DIRS[split] if (root / rel).is_dir()]


def _is_clip_name(name: str) -> bool:
    # final_videos_test* are re-cuts without CSV rows; ._* are macOS AppleDouble files.
    return name.endswith(".mp4") and name.startswith("dia") and not name.startswith("final_videos_test")


def index_clips(dirs: list[Path]) -> tuple[dict[str, Path], int]:
    """``{"dia{D}_utt{U}": mp4}`` over the folders (first folder wins) and the number of
    ignored ``final_videos_test*``/``._*`` files."""
    clips: dict[str, Path] = {}
    ignored = 0
    for folder in dirs:
        with os.scandir(folder) as entries:
            for entry in entries:
                if not entry.name.endswith(".mp4"):
                    continue
                if not _is_clip_name(entry.name):
                    ignored += 1
                    continue
                clips.setdefault(entry.name[: -len(".mp4")], Path(entry.path))
    return clips, ignored


def resolve_root(root: str | Path) -> Path:
    """The folder holding the CSVs: ``root`` itself or its ``MELD.Raw`` child."""
    root = Path(root)
    if not any(find_csv(root, s) for s in SPLITS) and (root / "MELD.Raw").is_dir():
        return root / "MELD.Raw"
    return root


def plan_items(root: str | Path, report: PrepareReport) -> dict[str, list[MeldItem]]:
    """Split -> the CSV rows with their clips (``mp4=None`` where none was found).

    Needs only the CSVs: run on a folder of CSVs it plans every row without audio. Rows
    without a clip are *not* skipped here (see :func:`prepare`). Splits without a CSV are
    absent from the result.
    """
    root = resolve_root(root)
    plans: dict[str, list[MeldItem]] = {}
    for split in SPLITS:
        csv_path = find_csv(root, split)
        if csv_path is None:
            continue
        items = read_csv(csv_path, split, report)
        dirs = clip_dirs(root, split)
        clips, ignored = index_clips(dirs)
        if ignored:
            report.note(f"{split}: ignored {ignored} final_videos_test*/._* file(s)")
        names = {item.name for item in items}
        extra = sorted(set(clips) - names)
        if extra:
            report.note(f"{split}: {len(extra)} video(s) without a CSV row, not used (e.g. {', '.join(extra[:5])})")
        plans[split] = [_with_clip(item, clips.get(item.name)) for item in items]
    return plans


def _with_clip(item: MeldItem, mp4: Path | None) -> MeldItem:
    return replace(item, mp4=mp4)


# ------------------------------------------------------------------------------- decoding
def decode_job(job: tuple[str, str]) -> tuple[str, int, str]:
    """Pool task: mp4 -> cached FLAC. Returns ``(status, num_samples, detail)`` where status is
    ``decoded``/``cached`` or a skip reason (``corrupt_audio``, ``empty_audio``)."""
    mp4, flac = Path(job[0]), Path(job[1])
    samples = cached_samples(flac)
    if samples is not None:
        return "cached", samples, ""
    try:
        audio = decode_mp4(mp4)
    except Exception as err:  # any decoder failure concerns this clip only
        return "corrupt_audio", 0, f"{mp4}: {type(err).__name__}: {err}"
    if audio.size == 0:
        return "empty_audio", 0, f"{mp4}: no audio samples decoded"
    write_flac(audio, flac)
    return "decoded", int(audio.size), ""


def _decoded(jobs: list[tuple[str, str]], workers: int, progress: bool) -> Iterator[tuple[str, int, str]]:
    """Results of :func:`decode_job` for ``jobs``, in order, with a progress bar."""

    with tqdm(total=len(jobs), desc=CORPUS, unit="clip", disable=not progress) as bar:
        if workers <= 1 or len(jobs) < 2:
            for job in jobs:
                yield decode_job(job)
                bar.update()
            return
        # Fork on Linux: workers start at once instead of re-importing the packages.
        ctx = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
        # Small chunks: every worker gets work even on a short list, and the bar moves.
        chunksize = max(1, min(8, len(jobs) // (4 * workers)))
        with ctx.Pool(workers) as pool:
            for result in pool.imap(decode_job, jobs, chunksize=chunksize):
                yield result
                bar.update()


# ------------------------------------------------------------------------------- prepare


def _make_cut(item: MeldItem, flac: Path, num_samples: int):

    cut = make_cut(
        item.cut_id,
        flac.resolve(),
        sampling_rate=SAMPLING_RATE,
        num_samples=num_samples,
        corpus=CORPUS,
        split=item.split,
        transcript=item.transcript,
        emotion=item.emotion,
        speaker=item.speaker,
    )
    cut.supervisions[0].custom.update(
        sentiment=item.sentiment,
        dialogue_id=item.dialogue_id,
        utterance_id=item.utterance_id,
        season=item.season,
        episode=item.episode,
    )
    return cut


def prepare(
    root: str | Path,
    out_dir: str | Path,
    *,
    max_duration: float = DEFAULT_MAX_DURATION,
    workers: int | None = None,
    shar: bool = False,
    progress: bool = True,
) -> tuple[PrepareReport, dict[str, Path]]:
    """Prepare MELD from ``root`` into ``out_dir``; returns the report and split -> manifest.

    Raises :class:`LayoutError` when ``root`` is missing or holds no CSV with clips.
    """

    root = Path(root)
    if not root.is_dir():
        raise LayoutError(f"MELD root {root} does not exist or is not a folder")
    report = PrepareReport(CORPUS, root)
    try:
        plans = plan_items(root, report)
    except BadInput as err:
        raise LayoutError(f"unrecognised MELD layout: {err.detail}") from None
    base = resolve_root(root)
    if not plans:
        raise LayoutError(
            f"unrecognised MELD layout under {root}: no *_sent_emo.csv at "
            f"{', '.join(CSV_PATHS['train'])} (or dev/test alike)"
        )
    for split in list(plans):
        if not clip_dirs(base, split):
            report.note(f"{split}: CSV found but no clip folder ({', '.join(CLIP_DIRS[split])}); split not prepared")
            del plans[split]
    if not plans:
        raise LayoutError(
            f"unrecognised MELD layout under {root}: CSVs found but no clip "
            f"folder (looked for {', '.join(d for v in CLIP_DIRS.values() for d in v)})"
        )

    out_dir = Path(out_dir)
    jobs: list[tuple[MeldItem, Path]] = []
    for split, items in plans.items():
        for item in items:
            if item.mp4 is None:
                known = KNOWN_BAD_CLIPS.get((split, item.name))
                report.skip(
                    "missing_audio",
                    item.cut_id,
                    f"no {item.name}.mp4 in {', '.join(CLIP_DIRS[split])}" + (f"; {known}" if known else ""),
                )
                continue
            jobs.append((item, out_dir / "audio" / split / f"{item.name}.flac"))

    cuts: dict[str, list] = {split: [] for split in plans}
    counts = {"decoded": 0, "cached": 0}
    results = _decoded([(str(item.mp4), str(flac)) for item, flac in jobs], workers or default_workers(), progress)
    for (item, flac), (status, num_samples, detail) in zip(jobs, results):
        if status not in counts:
            known = KNOWN_BAD_CLIPS.get((item.split, item.name))
            report.skip(status, item.cut_id, detail + (f"; {known}" if known else ""))
            continue
        counts[status] += 1
        seconds = num_samples / SAMPLING_RATE
        if seconds > max_duration:
            report.skip("too_long", item.cut_id, f"{seconds:.1f} s > {max_duration:g} s")
            continue
        cuts[item.split].append(_make_cut(item, flac, num_samples))
    report.note(f"audio: {counts['decoded']} clip(s) decoded, {counts['cached']} reused from {out_dir / 'audio'}")
    # An empty split is left out: there is nothing to train or evaluate on.
    for split in [s for s, c in cuts.items() if not c]:
        report.note(f"{split}: no usable clip, no manifest written")
        del cuts[split]
    paths = write_prepared(cuts, out_dir, report, shar=shar)
    return report, paths


# ------------------------------------------------------------------------------- CLI


def add_args(parser: argparse.ArgumentParser) -> None:
    """Prepare MELD from the raw release (CSVs + mp4 clips; audio decoded to 16 kHz FLAC)."""
    parser.add_argument(
        "--root",
        type=Path,
        required=True,
        metavar="RAW_DIR",
        help="the unpacked MELD.Raw folder (CSVs and the clip folders)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="OUT_DIR",
        help="output directory: audio/{split}/*.flac, manifests, meld_report.json",
    )
    parser.add_argument("--shar", action="store_true", help="also write Shar shards per split")
    parser.add_argument(
        "--max-duration",
        type=positive_float,
        default=DEFAULT_MAX_DURATION,
        metavar="SECONDS",
        help="skip longer clips (wrongly cut ones run to 305 s; default: 30)",
    )
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        metavar="N",
        help="decoding processes (default: min(2, CPU count))",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    try:
        report, _ = prepare(
            args.root,
            args.out,
            max_duration=args.max_duration,
            workers=args.workers,
            shar=args.shar,
            progress=not args.no_progress,
        )
    except LayoutError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0 if sum(report.kept.values()) else 1
