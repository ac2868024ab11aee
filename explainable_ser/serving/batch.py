"""Batch prediction on audio files: collecting inputs, batching by duration, resuming an interrupted
output, the language check, and the loop that writes one JSON line per file (per piece for long
recordings)."""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

from lhotse import CutSet
from lhotse.dataset import SimpleCutSampler
from tqdm import tqdm

from data_modules.records import make_cut, read_appended_jsonl
from explainable_ser.config import ConfigError
from explainable_ser.serving.bundle import ExportError
from explainable_ser.serving.inference import AudioError, Explainer, probe_seconds
from explainable_ser.serving.language_id import LanguageID, training_languages

AUDIO_EXTENSIONS = {
    ".wav",
    ".flac",
    ".ogg",
    ".oga",
    ".opus",
    ".mp3",
    ".m4a",
    ".mp4",
    ".aac",
    ".webm",
    ".mka",
    ".mkv",
    ".aif",
    ".aiff",
    ".au",
    ".caf",
    ".wma",
    ".w64",
}
"""What a folder is searched for (case-insensitive); a file named on the command line is read
whatever its extension."""


def collect(paths: list[str]) -> tuple[list[str], list[str]]:
    """``(files, missing)``: the named files and the audio files under the named folders
    (recursive, sorted), and the paths that exist as neither."""
    files, missing = [], []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            files += sorted(str(f) for f in path.rglob("*") if f.suffix.lower() in AUDIO_EXTENSIONS and f.is_file())
        elif path.is_file():
            files.append(p)
        else:
            missing.append(p)
    return list(dict.fromkeys(files)), missing


def key(path: str) -> str:
    """What resuming compares: the absolute path (a re-run from another directory still matches)."""
    return str(Path(path).resolve())


def already_done(out: Path) -> set[str]:
    """The files an earlier (interrupted) run wrote to ``out``. A last line cut off mid-write is
    removed, so the lines appended next start on a line of their own."""

    try:
        rows, dropped = read_appended_jsonl(out)
    except ValueError as err:
        raise ConfigError(f"{err}: not a predict output to append to") from None
    if dropped:
        print(f"note: {out}: dropped an incomplete last line (written when the run stopped)", file=sys.stderr)
    done = {key(row["file"]) for row in rows if isinstance(row, dict) and "file" in row}
    # A recording's piece lines come before its own line; pieces without it at the end of the
    # file are of a recording cut off mid-write: removed, the recording is explained again.
    orphans = 0
    while rows and isinstance(rows[-1], dict) and "recording" in rows[-1] and "file" not in rows[-1]:
        rows.pop()
        orphans += 1
    if orphans:
        lines = out.read_text(encoding="utf-8").splitlines(keepends=True)
        out.write_text("".join(lines[: len(lines) - orphans]), encoding="utf-8")
        print(f"note: {out}: removed {orphans} piece line(s) of a recording the run did not finish", file=sys.stderr)
    return done


def batches(files: list[str], seconds: dict[str, float], batch_seconds: float):
    """Lists of files of similar duration, up to ``batch_seconds`` of audio each (lhotse's
    sampler over the files sorted by duration; a file longer than that is a batch alone)."""
    if batch_seconds <= 0 or len(files) == 1:
        yield from ([f] for f in files)
        return

    rate = 16000  # durations only: the sampler never reads the audio
    cuts = CutSet.from_cuts(
        make_cut(
            str(i), f, sampling_rate=rate, num_samples=max(1, int(seconds[f] * rate)), corpus="files", split="predict"
        )
        for i, f in enumerate(files)
    )
    sampler = SimpleCutSampler(
        cuts.sort_by_duration(ascending=False), max_duration=batch_seconds, shuffle=False, drop_last=False
    )
    seen = set()
    with warnings.catch_warnings():  # a file longer than batch_seconds is a batch alone, as said
        warnings.filterwarnings("ignore", message=".*exceeded the max_duration.*")
        warnings.filterwarnings("ignore", message=".*violates the max_duration.*")
        for batch in sampler:
            ids = [int(c.id) for c in batch]
            seen.update(ids)
            yield [files[i] for i in ids]
    if len(seen) != len(files):  # never expected; no file may be dropped silently
        yield from ([files[i]] for i in range(len(files)) if i not in seen)


def language_check(cfg, choice: str, device):
    """``(LanguageID or None, training languages or None)`` for ``--language-id``."""
    name = choice
    if choice == "auto":
        enc = cfg.model.encoder
        name = enc.name_or_path if enc.kind == "whisper" and enc.name_or_path else "off"
    if name == "off":
        return None, None

    trained_on = training_languages(cfg.data)
    if trained_on is None:
        print(
            "note: the run's training manifests are not here: the spoken language is reported, not compared",
            file=sys.stderr,
        )
    return LanguageID(name, device, cfg.model.encoder.trust_remote_code), trained_on


def add_language(out: dict, path: str, wave, lid, trained_on) -> None:
    code, prob = lid(wave)
    out["language"] = {
        "detected": code,
        "probability": round(prob, 3),
        "training": sorted(trained_on) if trained_on else None,
    }
    if trained_on and code not in trained_on and prob >= 0.5:
        warning = (
            f"Whisper hears '{code}' (p={prob:.2f}) but the model was trained on "
            f"{sorted(trained_on)} speech: its output is unlikely to mean anything here"
        )
        out["warnings"] = [warning]
        print(f"warning: {path}: {warning}", file=sys.stderr)


def load(args):
    """The :class:`~explainable_ser.serving.inference.Explainer` the arguments name; raises ConfigError."""

    if args.model:
        try:
            ser = Explainer.from_export(args.model, device=args.device, overrides=args.overrides)
        except ExportError as err:
            raise ConfigError(str(err)) from None
        return ser
    ser = Explainer.from_checkpoint(args.ckpt, args.overrides)
    if args.device:
        ser.model.to(args.device)
    return ser


def run(ser, todo: list[str], missing: list[str], args, sink, lid, trained_on) -> int:

    errors = 0
    # Lines go out in the order of the inputs (files batched by length finish out of order):
    # each file's lines wait in ``ready`` until every file before it has been written.
    ready: dict[str, list[dict]] = {}
    written = 0

    def flush() -> None:
        nonlocal written
        while written < len(todo) and todo[written] in ready:
            lines = ready.pop(todo[written])
            # one write per file: a kill leaves at most its last line cut (dropped on resume)
            sink.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in lines))
            sink.flush()
            written += 1

    def fail(path: str, reason: str) -> None:
        nonlocal errors
        errors += 1
        ready[path] = [{"file": path, "error": reason}]
        print(f"error: {path}: {reason}", file=sys.stderr)

    for path in missing:  # known before any work: first
        sink.write(json.dumps({"file": path, "error": "file not found"}) + "\n")
        errors += 1
        print(f"error: {path}: file not found", file=sys.stderr)
    seconds = {}
    for path in todo:
        try:
            seconds[path] = probe_seconds(path)
        except (AudioError, OSError) as err:
            fail(path, str(err))
    readable = [p for p in todo if p in seconds and seconds[p] <= ser.max_seconds]
    recordings = [p for p in todo if p in seconds and seconds[p] > ser.max_seconds]
    t0, n_done = time.perf_counter(), 0
    bar = tqdm(
        total=len(readable) + len(recordings),
        unit="file",
        desc="explaining",
        file=sys.stderr,
        disable=args.no_progress or (args.out is None and not sys.stderr.isatty()),
    )
    for group in batches(readable, seconds, args.batch_seconds):
        waves, kept = [], []
        for path in group:
            try:
                waves.append(ser.read(path, any_length=False))
                kept.append(path)
            except Exception as err:  # one unreadable file must not stop the others
                fail(path, str(err) if isinstance(err, AudioError) else f"{type(err).__name__}: {err}")
        if waves:
            for path, wave, row in zip(kept, waves, ser.explain_batch(waves)):
                if lid is not None:
                    add_language(row, path, wave, lid, trained_on)
                ready[path] = [{"file": path, **row}]
        n_done += len(kept)
        bar.update(len(group))
        flush()
    for path in recordings:  # longer than the model takes whole: cut at pauses, piece by piece
        try:
            wave = ser.read(path)
            bar.set_postfix_str(f"{Path(path).name}: {seconds[path]:.0f} s in pieces")
            summary = ser.explain_recording(wave, batch_seconds=max(args.batch_seconds, ser.max_seconds))
        except Exception as err:
            fail(path, str(err) if isinstance(err, AudioError) else f"{type(err).__name__}: {err}")
        else:
            if lid is not None:
                add_language(summary, path, wave, lid, trained_on)
            pieces = summary.pop("pieces")
            ready[path] = [*({"recording": path, **p} for p in pieces), {"file": path, **summary}]
            n_done += 1
        bar.update(1)
        flush()
    flush()
    bar.close()
    wall = time.perf_counter() - t0
    if args.out:
        rate = f", {n_done / wall:.2f} utt/s" if n_done and wall > 0 else ""
        print(
            f"explained {n_done} file(s) in {wall:.1f} s{rate}; {errors} could not be read; -> {args.out}",
            file=sys.stderr,
        )
    return 1 if errors else 0
