"""Explain audio files and folders: ``python -m explainable_ser.predict --model DIR|--ckpt PATH AUDIO_OR_DIR... [--out preds.jsonl]``.

One JSON line per file, in the order of the inputs: the transcript (``asr``), the descriptor caption and emotion
(``ser_sed``), the attributes read back from the caption, and the per-class scores of the
emotion (the model's probability of ``Emotion: {label}`` after its own caption). ``emotion``
is the generated one (``emotion_source: generated``) or, when the generated text names no
known label, the best-scoring label (``emotion_source: scores``).

The model: ``--model DIR`` (written by ``python -m explainable_ser.export``) or ``--ckpt``
(a run's checkpoint; its run directory holds the config and tokenizer).

Inputs: audio files and folders (searched recursively for audio by extension). Any format
soundfile reads, else PyAV (MP3, M4A, MP4, WebM, ...); any rate (resampled to 16 kHz),
multichannel downmixed. Files are decoded in batches of similar duration (``--batch-seconds``
of audio per batch, sorted by length: little padding); ``--batch-seconds 0`` explains one file
at a time. A file that cannot be read gets a line with an ``error`` and the rest go on.

A recording longer than the model's ``data.max_clip_seconds`` is cut at its pauses into pieces
(a voice-activity measure on the signal; :mod:`data_modules.segment`), each explained alone: one
line per piece (``recording``: the file, ``piece``, ``start`` and ``end`` in seconds, then the
fields above), then the recording's own line (``file``, ``duration``, ``n_pieces``,
``timeline``: ``[start, end, emotion]`` per piece, ``emotion`` and ``emotion_scores``: the
pieces' scores weighted by duration, ``emotion_share``, the joined ``transcript``,
``skipped_short``: speech runs too short to explain).

``--out FILE`` appends to FILE and shows a progress bar; run the same command again after an
interruption and only the files not yet in FILE are explained. Without ``--out`` the lines go
to standard output.

Config overrides (``key=value``, YAML files) go among the arguments as in ``fit`` and
``evaluate``. With a Whisper encoder (the demo) each file's spoken language is identified
(``language``) and a language the model was not trained on is warned about (``warnings``;
``--language-id``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from explainable_ser.config import ConfigError
from explainable_ser.training.runs import resolve_ckpt_arg

AUDIO_EXTENSIONS = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".mp4", ".aac",
                    ".webm", ".mka", ".mkv", ".aif", ".aiff", ".au", ".caf", ".wma", ".w64"}
"""What a folder is searched for (case-insensitive); a file named on the command line is read
whatever its extension."""


def collect(paths: list[str]) -> tuple[list[str], list[str]]:
    """``(files, missing)``: the named files and the audio files under the named folders
    (recursive, sorted), and the paths that exist as neither."""
    files, missing = [], []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            files += sorted(str(f) for f in path.rglob("*")
                            if f.suffix.lower() in AUDIO_EXTENSIONS and f.is_file())
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
    from data_modules.records import read_appended_jsonl

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
        print(f"note: {out}: removed {orphans} piece line(s) of a recording the run did not finish",
              file=sys.stderr)
    return done


def batches(files: list[str], seconds: dict[str, float], batch_seconds: float):
    """Lists of files of similar duration, up to ``batch_seconds`` of audio each (lhotse's
    sampler over the files sorted by duration; a file longer than that is a batch alone)."""
    if batch_seconds <= 0 or len(files) == 1:
        yield from ([f] for f in files)
        return
    import warnings

    from lhotse import CutSet
    from lhotse.dataset import SimpleCutSampler

    from data_modules.records import make_cut

    rate = 16000  # durations only: the sampler never reads the audio
    cuts = CutSet.from_cuts(make_cut(str(i), f, sampling_rate=rate, num_samples=max(1, int(seconds[f] * rate)),
                                     corpus="files", split="predict") for i, f in enumerate(files))
    sampler = SimpleCutSampler(cuts.sort_by_duration(ascending=False), max_duration=batch_seconds,
                               shuffle=False, drop_last=False)
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
    from explainable_ser.serving.language_id import LanguageID, training_languages

    trained_on = training_languages(cfg.data)
    if trained_on is None:
        print("note: the run's training manifests are not here: the spoken language is reported, "
              "not compared", file=sys.stderr)
    return LanguageID(name, device, cfg.model.encoder.trust_remote_code), trained_on


def add_language(out: dict, path: str, wave, lid, trained_on) -> None:
    code, prob = lid(wave)
    out["language"] = {"detected": code, "probability": round(prob, 3),
                       "training": sorted(trained_on) if trained_on else None}
    if trained_on and code not in trained_on and prob >= 0.5:
        warning = (f"Whisper hears '{code}' (p={prob:.2f}) but the model was trained on "
                   f"{sorted(trained_on)} speech: its output is unlikely to mean anything here")
        out["warnings"] = [warning]
        print(f"warning: {path}: {warning}", file=sys.stderr)


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m explainable_ser.predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="exit status: 0 every file explained; 1 some inputs could not "
                                            "be explained (a missing path or unreadable file among others: "
                                            "each has a JSON line with its 'error'); 2 nothing was explained "
                                            "for a reason known before any audio was read: a bad argument, "
                                            "config, model or checkpoint, or no input exists or holds audio")
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--model", metavar="DIR", help="an exported model (python -m explainable_ser.export)")
    model.add_argument("--ckpt", help="a run's checkpoint: a file (runs/demo/stage2/final.ckpt), a stage "
                       "directory (its final.ckpt) or a run directory (its last stage's final.ckpt)")
    parser.add_argument("inputs", nargs="+", metavar="AUDIO|DIR|OVERRIDE",
                        help="audio files, folders of audio, and YAML files or key=value overrides")
    parser.add_argument("--out", metavar="FILE",
                        help="append the JSON lines to FILE (resumable: files already in it are skipped)")
    parser.add_argument("--batch-seconds", type=float, default=60.0, metavar="S",
                        help="audio seconds per batch, files of similar length together "
                             "(default 60; 0: one file at a time)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: a GPU if any)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--language-id", default="auto", metavar="WHISPER|auto|off",
                        help="check the spoken language with a Whisper checkpoint and warn when the "
                             "model was trained on another; auto (default): the run's encoder when it "
                             "is a Whisper, else off")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="overrides, the older spelling (same as key=value among the arguments)")
    args = parser.parse_args(argv)
    # An argument is an override when it is key=value or a YAML file, unless a file of that name exists.
    is_override = [a.endswith((".yaml", ".yml")) or ("=" in a and not Path(a).exists())
                   for a in args.inputs]
    args.audio = [a for a, o in zip(args.inputs, is_override) if not o]
    args.overrides = [a for a, o in zip(args.inputs, is_override) if o] + list(args.set)
    if not args.audio:
        parser.error("no audio file or folder given (only overrides)")
    return args


def load(args):
    """The :class:`~explainable_ser.serving.inference.Explainer` the arguments name; raises ConfigError."""
    from explainable_ser.serving.inference import Explainer

    if args.model:
        from explainable_ser.export import ExportError

        try:
            ser = Explainer.from_export(args.model, device=args.device, overrides=args.overrides)
        except ExportError as err:
            raise ConfigError(str(err)) from None
        return ser
    ser = Explainer.from_checkpoint(args.ckpt, args.overrides)
    if args.device:
        ser.model.to(args.device)
    return ser


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    files, missing = collect(args.audio)
    if not files:  # nothing to do: say so before loading any model
        what = ", ".join(missing) if missing else ", ".join(args.audio)
        reason = "not found" if missing else "holds no audio file"
        print(f"error: {what}: {reason}", file=sys.stderr)
        return 2
    source = args.model or args.ckpt
    if not Path(source).exists():  # said before the model stack loads (seconds)
        print(f"error: {'model directory' if args.model else 'checkpoint'} not found: {source}", file=sys.stderr)
        return 2
    if args.ckpt:
        try:
            args.ckpt = resolve_ckpt_arg(args.ckpt)
        except ConfigError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    out_path = Path(args.out) if args.out else None
    try:
        done = already_done(out_path) if out_path else set()
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    todo = [f for f in files if key(f) not in done]
    if out_path and done:
        print(f"resuming: {len(files) - len(todo)} of {len(files)} files are already in {out_path}",
              file=sys.stderr)
    try:
        ser = load(args)
    except (ConfigError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        lid, trained_on = language_check(ser.cfg, args.language_id, ser.device)
    except Exception as err:  # an English-only Whisper, an unreachable registry ...: go on without
        print(f"note: no language check ({type(err).__name__}: {err})", file=sys.stderr)
        lid, trained_on = None, None
    sink = open(out_path, "a", encoding="utf-8") if out_path else sys.stdout
    try:
        return run(ser, todo, missing, args, sink, lid, trained_on)
    finally:
        if out_path:
            sink.close()


def run(ser, todo: list[str], missing: list[str], args, sink, lid, trained_on) -> int:
    from tqdm import tqdm

    from explainable_ser.serving.inference import AudioError, probe_seconds

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
    bar = tqdm(total=len(readable) + len(recordings), unit="file", desc="explaining", file=sys.stderr,
               disable=args.no_progress or (args.out is None and not sys.stderr.isatty()))
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
        print(f"explained {n_done} file(s) in {wall:.1f} s{rate}; {errors} could not be read; "
              f"-> {args.out}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
