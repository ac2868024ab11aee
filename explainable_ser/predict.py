"""Explain audio files and folders:
``python -m explainable_ser.predict --model DIR|--ckpt PATH AUDIO_OR_DIR... [--out preds.jsonl]``.

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
import sys
from pathlib import Path

from explainable_ser.config import ConfigError
from explainable_ser.training.runs import resolve_ckpt_arg


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m explainable_ser.predict",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="exit status: 0 every file explained; 1 some inputs could not "
        "be explained (a missing path or unreadable file among others: "
        "each has a JSON line with its 'error'); 2 nothing was explained "
        "for a reason known before any audio was read: a bad argument, "
        "config, model or checkpoint, or no input exists or holds audio",
    )
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--model", metavar="DIR", help="an exported model (python -m explainable_ser.export)")
    model.add_argument(
        "--ckpt",
        help="a run's checkpoint: a file (runs/demo/stage2/final.ckpt), a stage "
        "directory (its final.ckpt) or a run directory (its last stage's final.ckpt)",
    )
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="AUDIO|DIR|OVERRIDE",
        help="audio files, folders of audio, and YAML files or key=value overrides",
    )
    parser.add_argument(
        "--out", metavar="FILE", help="append the JSON lines to FILE (resumable: files already in it are skipped)"
    )
    parser.add_argument(
        "--batch-seconds",
        type=float,
        default=60.0,
        metavar="S",
        help="audio seconds per batch, files of similar length together (default 60; 0: one file at a time)",
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: a GPU if any)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--language-id",
        default="auto",
        metavar="WHISPER|auto|off",
        help="check the spoken language with a Whisper checkpoint and warn when the "
        "model was trained on another; auto (default): the run's encoder when it "
        "is a Whisper, else off",
    )
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="overrides, the older spelling (same as key=value among the arguments)",
    )
    args = parser.parse_args(argv)
    # An argument is an override when it is key=value or a YAML file, unless a file of that name exists.
    is_override = [a.endswith((".yaml", ".yml")) or ("=" in a and not Path(a).exists()) for a in args.inputs]
    args.audio = [a for a, o in zip(args.inputs, is_override) if not o]
    args.overrides = [a for a, o in zip(args.inputs, is_override) if o] + list(args.set)
    if not args.audio:
        parser.error("no audio file or folder given (only overrides)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The implementation (torch, lhotse, the models) loads after the arguments are checked,
    # so that --help and argument errors answer at once.
    from explainable_ser.serving.batch import already_done, collect, key, language_check, load, run

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
        print(f"resuming: {len(files) - len(todo)} of {len(files)} files are already in {out_path}", file=sys.stderr)
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


if __name__ == "__main__":
    sys.exit(main())
