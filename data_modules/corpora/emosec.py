"""EMOSEC reader: SECap's 600-utterance Mandarin emotion-caption test set.

Raw layout (thuhcsi/SECap ``dataset/``; ``--root`` may be that folder or the repository root
holding ``dataset/``)::

    fid2captions.json   {"<utt_id>": "<one Mandarin caption>", ...}   (required)
    text.txt            "<utt_id> <transcript> " per line (Mandarin; tx_emotion_* lines have a
                        trailing space, tx_emulate_* lines a tab after the id and none)
    wav.scp             "<utt_id> <path>" per line, e.g. "dataset/wav/<utt_id>.wav"
    wav/<utt_id>.wav    24 kHz mono; 16-bit PCM, two files WAVE_FORMAT_EXTENSIBLE 24-bit

Every record is corpus ``emosec``, split ``test``, language ``zh``, with the caption as its
target. EMOSEC has no categorical emotion labels, speakers or genders: ``emotion``,
``speaker`` and ``gender`` are ``None`` (the caption is the only reference).

Choices:

* **utterances**: the union of the ids in ``fid2captions.json`` and ``wav.scp``, sorted. An id
  with no (string, non-empty) caption is skipped (``missing_caption`` / ``bad_caption``).
* **audio path**: the ``wav.scp`` path as is when absolute, else tried relative to ``--root``,
  to the folder of the metadata files, and finally ``<metadata folder>/wav/<basename>`` (the
  scp's paths are relative to the SECap repository root); ids absent from ``wav.scp`` try
  ``wav/<utt_id>.wav``. Nothing found: ``missing_audio``; soundfile cannot decode it or it
  is empty: ``bad_audio``.
* **audio**: decoded once with soundfile (``wave`` cannot read WAVE_FORMAT_EXTENSIBLE),
  averaged to mono if needed, resampled to 16 kHz with soxr and written as 16-bit FLAC to
  ``OUT/audio/<utt_id>.flac``; a FLAC already there that soundfile reads as 16 kHz and
  non-empty is reused, so a second run decodes nothing.
* **transcript**: from ``text.txt``; an id with no line there is kept with transcript
  ``None`` (the captioning task does not need it) and listed in a report note.
* **broken JSON**: when ``fid2captions.json`` does not parse as a whole it is read line by
  line (``"<id>": "<caption>",`` per line, as SECap writes it); a line that still does not
  parse is skipped as ``broken_caption_line`` (its utterance, when the id can be read; the
  line otherwise). Broken ``wav.scp`` lines are ``broken_wav_scp_line``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from tqdm import tqdm

from data_modules.corpora.common import BadInput, LayoutError, PrepareReport, write_prepared
from data_modules.records import make_cut

CORPUS = "emosec"
SPLIT = "test"
SAMPLING_RATE = 16000
CAPTIONS, TEXT, WAV_SCP = "fid2captions.json", "text.txt", "wav.scp"
CAPTION_KEY = re.compile(r'"([^"\\]+)"\s*:')  # the id of a (possibly broken) caption line


# --------------------------------------------------------------------------- layout


def find_metadata_dir(root: Path) -> Path:
    """The folder holding ``fid2captions.json``: ``root`` or ``root/dataset``."""
    if not root.is_dir():
        raise LayoutError(f"EMOSEC root does not exist or is not a directory: {root}")
    for candidate in (root, root / "dataset"):
        if (candidate / CAPTIONS).is_file():
            return candidate
    raise LayoutError(
        f"no EMOSEC set found under {root}: expected {root}/[dataset/]{CAPTIONS} (with {TEXT}, {WAV_SCP} and wav/)"
    )


# --------------------------------------------------------------------------- parsing


def read_captions(path: Path, report) -> tuple[dict[str, object], dict[str, str]]:
    """``(utt_id -> caption, utt_id -> why its line is broken)``; values are not checked yet.

    When the file is not valid JSON it is read line by line; a broken line whose id can still
    be read is returned in the second dict (skipped per utterance later, so counted once), one
    without a readable id is counted here as ``broken_caption_line``.
    """
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    try:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        return data, {}
    except (ValueError, RecursionError) as err:  # RecursionError: absurdly deep nesting
        report.note(f"{path} is not valid JSON ({err}); read line by line")
    captions: dict[str, object] = {}
    broken: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip().rstrip(",")
        if line in ("", "{", "}"):
            continue
        try:
            captions.update(json.loads("{" + line + "}"))
        except (ValueError, RecursionError) as err:
            detail = f"{path}:{lineno}: {err}: {line!r}"
            utt_id = CAPTION_KEY.match(line)
            if utt_id:
                broken[utt_id[1]] = detail
            else:
                report.skip("broken_caption_line", f"{path}:{lineno}", detail)
    return captions, broken


def read_transcripts(path: Path) -> dict[str, str]:
    """``utt_id -> transcript`` from ``text.txt`` (an id alone on its line gives no entry)."""
    out = {}
    for line in path.read_text(encoding="utf-8-sig", errors="replace").splitlines():
        parts = line.strip().split(maxsplit=1)
        if len(parts) == 2:
            out[parts[0]] = parts[1].strip()
    return out


def read_wav_scp(path: Path, report) -> dict[str, str]:
    """``utt_id -> path as written`` from ``wav.scp``; malformed lines are counted."""
    out = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8-sig", errors="replace").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            report.skip("broken_wav_scp_line", f"{path}:{lineno}", repr(line))
            continue
        out[parts[0]] = parts[1]
    return out


def audio_candidates(utt_id: str, scp_path: str | None, root: Path, meta: Path) -> list[Path]:
    """Where an utterance's wav may be, in order (see the module docstring)."""
    if scp_path is None:
        return [meta / "wav" / f"{utt_id}.wav"]
    path = Path(scp_path)
    if path.is_absolute():
        return [path, meta / "wav" / path.name]
    return [root / path, meta / path, meta / "wav" / path.name]


# --------------------------------------------------------------------------- audio


def valid_flac(path: Path) -> int | None:
    """Number of samples of an existing, readable 16 kHz FLAC; ``None`` otherwise."""

    if not path.is_file():
        return None
    try:
        info = sf.info(str(path))
    except (sf.SoundFileError, OSError):
        return None
    ok = info.samplerate == SAMPLING_RATE and info.frames > 0 and info.format == "FLAC"
    return info.frames if ok else None


def convert(src: Path, dst: Path) -> int:
    """Decode ``src``, resample to 16 kHz mono and write ``dst`` (FLAC); returns its samples."""

    try:
        audio, sr = sf.read(str(src), dtype="float32", always_2d=True)
    except (sf.SoundFileError, OSError) as err:
        raise BadInput("bad_audio", f"{src}: {err}") from None
    if audio.shape[0] == 0:
        raise BadInput("bad_audio", f"{src}: no samples")
    audio = audio.mean(axis=1)
    if sr != SAMPLING_RATE:
        audio = soxr.resample(audio, sr, SAMPLING_RATE)
    dst.parent.mkdir(parents=True, exist_ok=True)
    # Written under a temporary name first: an interrupted run never leaves a truncated FLAC
    # that a later run would take for a finished one.
    tmp = dst.with_name(dst.name + ".tmp")
    sf.write(str(tmp), np.clip(audio, -1.0, 32767 / 32768), SAMPLING_RATE, format="FLAC", subtype="PCM_16")
    tmp.replace(dst)
    return len(audio)


def prepare_audio(candidates: list[Path], dst: Path) -> int:
    """Samples of the 16 kHz FLAC at ``dst``, converting the first existing candidate."""

    existing = valid_flac(dst)
    if existing is not None:
        return existing
    for src in candidates:
        if src.is_file():
            return convert(src, dst)
    raise BadInput("missing_audio", "not found: " + ", ".join(str(c) for c in candidates))


# --------------------------------------------------------------------------- records


def caption_of(utt_id: str, captions: dict[str, object], broken: dict[str, str]) -> str:
    """The utterance's caption; BadInput when it is broken, missing or not a non-empty string."""

    if utt_id in broken:
        raise BadInput("broken_caption_line", broken[utt_id])
    caption = captions.get(utt_id)
    if caption is None:
        raise BadInput("missing_caption", f"no entry in {CAPTIONS}")
    if not isinstance(caption, str) or not caption.strip():
        raise BadInput("bad_caption", f"not a non-empty string: {caption!r}")
    return caption.strip()


def prepare_emosec(
    root: str | Path, out_dir: str | Path, *, shar: bool = False, progress: bool = True
) -> dict[str, Path]:
    """Read the set under ``root``, write FLACs, the ``test`` manifest and the report.

    Returns split -> manifest path. Raises :class:`LayoutError` when ``root`` holds no set.
    """

    root = Path(root)
    meta = find_metadata_dir(root)
    out_dir = Path(out_dir)
    report = PrepareReport(CORPUS, meta)
    captions, broken = read_captions(meta / CAPTIONS, report)
    if (meta / TEXT).is_file():
        transcripts = read_transcripts(meta / TEXT)
    else:
        transcripts = {}
        report.note(f"{meta / TEXT} not found: every transcript is None")
    if (meta / WAV_SCP).is_file():
        scp = read_wav_scp(meta / WAV_SCP, report)
    else:
        scp = {}
        report.note(f"{meta / WAV_SCP} not found: audio looked up as {meta}/wav/<utt_id>.wav")

    cuts, no_transcript = [], []
    utt_ids = sorted(set(captions) | set(broken) | set(scp))
    for utt_id in tqdm(utt_ids, desc=CORPUS, unit="utt", disable=not progress):
        try:
            caption = caption_of(utt_id, captions, broken)
            flac = out_dir / "audio" / f"{utt_id}.flac"
            num_samples = prepare_audio(audio_candidates(utt_id, scp.get(utt_id), root, meta), flac)
        except BadInput as err:
            report.skip(err.reason, utt_id, err.detail)
            continue
        transcript = transcripts.get(utt_id)
        if transcript is None:
            no_transcript.append(utt_id)
        cuts.append(
            make_cut(
                utt_id,
                flac.resolve(),
                sampling_rate=SAMPLING_RATE,
                num_samples=num_samples,
                corpus=CORPUS,
                split=SPLIT,
                transcript=transcript,
                caption=caption,
                language="zh",
            )
        )
    if no_transcript:
        report.note(
            f"{len(no_transcript)} kept utterance(s) have no line in {TEXT} "
            f"(transcript None): {', '.join(no_transcript[:20])}"
        )
    if not cuts:  # lhotse reads an empty manifest back as None: write none
        report.note("no utterance kept: the test split was not written")
    return write_prepared({SPLIT: cuts} if cuts else {}, out_dir, report, shar=shar)


# --------------------------------------------------------------------------- CLI


def add_args(parser: argparse.ArgumentParser) -> None:
    """Prepare EMOSEC (SECap's Mandarin caption test set): 16 kHz FLAC and one test split."""
    parser.add_argument(
        "--root",
        type=Path,
        required=True,
        metavar="RAW_DIR",
        help=f"folder with {CAPTIONS}, {TEXT}, {WAV_SCP} and wav/ (SECap's dataset/, or the SECap repository root)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="OUT_DIR",
        help="output directory (audio/*.flac, manifest, emosec_report.json)",
    )
    parser.add_argument(
        "--shar", action="store_true", help="also write Shar shards with the audio as FLAC under OUT_DIR/shar/"
    )


def run(args: argparse.Namespace) -> int:
    try:
        prepare_emosec(args.root, args.out, shar=args.shar)
    except LayoutError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
