"""A web page to show a trained model: ``python -m explainable_ser.app --model DIR [--port P]``.

Upload a file or record from the microphone; the page shows the transcript, the descriptor
caption, the emotion with its probability, a bar chart of the per-class scores and the learned
layer weights of each branch (one scale, the uniform weight marked). Ticking "counterfactual"
explains the clip a second time with the descriptor tokens zeroed, so one sees how much of the
emotion the explanation stream carries. A recording longer than the model's
``data.max_clip_seconds`` is cut at its pauses and explained piece by piece: a timeline table
lists each piece's time, emotion, probability and caption, the boxes above show the whole.

The model (``--model``, a directory written by ``python -m explainable_ser.export``, or
``--ckpt``) is loaded once, before the server starts; requests are queued and served
``--concurrency`` at a time. Files over ``--max-mb`` or longer than ``--max-seconds``, and files
that cannot be read, are refused in plain words in the status line (the file's name, the
reason, the limit; no server path), with the output boxes cleared, and one line in the log.
The server listens on 127.0.0.1 (this machine only) unless
``--host`` says otherwise (``--host 0.0.0.0`` shows it on the network: anyone who reaches
the port can use it). Gradio's usage analytics are off.

The outputs are those of ``python -m explainable_ser.predict`` for the same file (the same
:class:`~explainable_ser.serving.inference.Explainer`); the "raw" panel shows predict's JSON line.
Needs the ``app`` extra: ``pip install -e ".[app]"``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m explainable_ser.app", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--model", metavar="DIR", help="an exported model (python -m explainable_ser.export)")
    model.add_argument(
        "--ckpt",
        help="a run's checkpoint: a file (runs/demo/stage2/final.ckpt), a stage "
        "directory (its final.ckpt) or a run directory (its last stage's final.ckpt)",
    )
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. eval.num_beams=4")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)"
    )
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: a GPU if any)")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=2,
        help="requests explained at the same time; the rest wait in the queue (default 2)",
    )
    parser.add_argument("--max-mb", type=float, default=50.0, help="largest file accepted, MB (default 50)")
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=600.0,
        help="longest recording accepted, seconds (default 600; one longer than the model's "
        "data.max_clip_seconds is explained in pieces cut at its pauses)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The implementation (torch, lhotse, the models) loads after the arguments are checked,
    # so that --help and argument errors answer at once.
    from explainable_ser.serving.page import Limits, build

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # read when gradio is imported
    try:
        import gradio  # noqa: F401
    except ImportError:
        print('error: the web page needs Gradio: pip install -e ".[app]"', file=sys.stderr)
        return 2
    from explainable_ser.config import ConfigError
    from explainable_ser.serving import batch

    source = args.model or args.ckpt
    if not Path(source).exists():
        print(f"error: {'model directory' if args.model else 'checkpoint'} not found: {source}", file=sys.stderr)
        return 2
    if args.ckpt:
        from explainable_ser.training.runs import resolve_ckpt_arg

        try:
            args.ckpt = source = resolve_ckpt_arg(args.ckpt)
        except ConfigError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    print(f"loading {source} ...", file=sys.stderr)
    try:
        ser = batch.load(
            argparse.Namespace(model=args.model, ckpt=args.ckpt, device=args.device, overrides=args.overrides)
        )
    except (ConfigError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    limits = Limits(max_mb=args.max_mb, max_seconds=args.max_seconds)
    page = build(ser, limits)
    page.queue(default_concurrency_limit=max(1, args.concurrency))
    import gradio as gr

    # System fonts: the default theme would ask Google's servers for its web font.
    theme = gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
    )
    page.launch(
        server_name=args.host,
        server_port=args.port,
        max_file_size=f"{args.max_mb:g}mb",
        show_error=True,
        share=False,
        ssr_mode=False,
        theme=theme,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
