"""A web page to show a trained model: ``python -m explainable_ser.app --model DIR [--port P]``.

Upload a file or record from the microphone; the page shows the transcript, the descriptor
caption, the emotion, a bar chart of the per-class scores and the learned layer weights of
each branch. Ticking "counterfactual" explains the clip a second time with the descriptor
tokens zeroed, so one sees how much of the emotion the explanation stream carries.

The model (``--model``, a directory written by ``python -m explainable_ser.export``, or
``--ckpt``) is loaded once, before the server starts; requests are queued and served
``--concurrency`` at a time. Files over ``--max-mb`` or longer than ``--max-seconds`` are
refused with a message saying so. The server listens on 127.0.0.1 (this machine only) unless
``--host`` says otherwise (``--host 0.0.0.0`` shows it on the network: anyone who reaches
the port can use it). Gradio's usage analytics are off.

The outputs are those of ``python -m explainable_ser.predict`` for the same file (the same
:class:`~explainable_ser.inference.Explainer`); the "raw" panel shows predict's JSON line.
Needs the ``app`` extra: ``pip install -e ".[app]"``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from explainable_ser.inference import AudioError, Explainer, probe_seconds


@dataclass
class Limits:
    """What the page accepts."""

    max_mb: float = 50.0
    """Largest file, in MB (10^6 bytes)."""
    max_seconds: float = 60.0
    """Longest clip, in seconds (the model's own ``data.max_clip_seconds`` by default)."""


class RefusedError(AudioError):
    """A file the page will not explain (too large, too long, unreadable): shown to the user."""


def check_file(path: str, limits: Limits) -> float:
    """The clip's duration in seconds, or :class:`RefusedError` saying which limit it breaks."""
    p = Path(path)
    if not p.is_file():
        raise RefusedError("the uploaded file is gone (upload it again)")
    mb = p.stat().st_size / 1e6
    if mb > limits.max_mb:
        raise RefusedError(f"{p.name} is {mb:.1f} MB; this page takes files up to {limits.max_mb:g} MB")
    try:
        seconds = probe_seconds(p)
    except AudioError as err:
        raise RefusedError(f"{p.name}: {err}") from None
    if seconds > limits.max_seconds:
        raise RefusedError(f"{p.name} lasts {seconds:.1f} s; this page takes clips up to "
                           f"{limits.max_seconds:g} s")
    return seconds


def score_table(scores: dict[str, float]):
    """Per-class scores as the bar chart's frame: one row per emotion, in the model's order."""
    import pandas as pd

    return pd.DataFrame({"emotion": list(scores), "probability": [float(v) for v in scores.values()]})


def layer_table(weights: dict[str, list[float]]):
    """Layer weights as the line chart's frame: (branch, layer, weight) rows."""
    import pandas as pd

    rows = [(b, i, float(v)) for b, ws in weights.items() for i, v in enumerate(ws)]
    return pd.DataFrame(rows, columns=["branch", "layer", "weight"])


def counterfactual_summary(row: dict, cf: dict) -> str:
    """In words: what zeroing the descriptor tokens did to the emotion and its probability."""
    emo = row["emotion"]
    before, after = row["emotion_scores"].get(emo), cf["emotion_scores"].get(emo)
    change = (f"the emotion stays **{emo}**" if cf["emotion"] == emo else
              f"the emotion changes from **{emo}** to **{cf['emotion']}**")
    prob = (f"; the probability of {emo} goes from {before:.2f} to {after:.2f}"
            if before is not None and after is not None else "")
    return f"With the descriptor tokens zeroed, {change}{prob}."


def explain_file(ser: Explainer, path: str, counterfactual: bool, limits: Limits) -> dict:
    """What the page shows for one file (no Gradio here, so it is testable on its own):
    ``row`` (predict's fields), ``counterfactual`` (the same with the descriptor zeroed, or
    None), ``seconds`` (clip) and ``wall`` (time to explain). :class:`RefusedError` on a file
    over the limits or one that cannot be read."""
    seconds = check_file(path, limits)
    t0 = time.perf_counter()
    try:
        wave = ser.read(path)
    except AudioError as err:
        raise RefusedError(f"{Path(path).name}: {err}") from None
    row = ser.explain(wave)
    cf = ser.explain(wave, zero_descriptor=True) if counterfactual else None
    return {"row": row, "counterfactual": cf, "seconds": seconds, "wall": time.perf_counter() - t0}


def build(ser: Explainer, limits: Limits, title: str = "explainable-ser"):
    """The Gradio page around a loaded model (``.launch()`` serves it)."""
    import gradio as gr

    labels = ser.labels
    has_descriptor = getattr(ser.model, "has_descriptor", True)

    def respond(path, counterfactual):
        empty = score_table({lab: 0.0 for lab in labels})
        if not path:  # the audio was cleared
            return ("Upload a file or record a clip.", "", "", "", empty, gr.update(visible=False),
                    gr.update(visible=False), "", None)
        try:
            out = explain_file(ser, path, counterfactual and has_descriptor, limits)
        except RefusedError as err:
            raise gr.Error(str(err), title="File refused") from None
        row, cf = out["row"], out["counterfactual"]
        source = "" if row["emotion_source"] == "generated" else (
            " The generated text named no known emotion: the emotion shown is the best-scoring one.")
        status = (f"**{Path(path).name}**: {out['seconds']:.2f} s of audio, explained in "
                  f"{out['wall']:.2f} s.{source}")
        cf_visible = cf is not None
        return (status, row["transcript"] or "", row["caption"] or "", row["emotion"],
                score_table(row["emotion_scores"]),
                gr.update(value=cf["emotion"] if cf_visible else "", visible=cf_visible),
                gr.update(value=score_table(cf["emotion_scores"]) if cf_visible else empty,
                          visible=cf_visible),
                counterfactual_summary(row, cf) if cf_visible else "",
                {**row, **({"counterfactual": cf} if cf_visible else {})})

    with gr.Blocks(title=title) as page:
        gr.Markdown(f"# {title}\nModel: `{ser.source}`. Emotions: {', '.join(labels)}. "
                    f"Files up to {limits.max_mb:g} MB and {limits.max_seconds:g} s.")
        with gr.Row():
            with gr.Column():
                audio = gr.Audio(sources=["upload", "microphone"], type="filepath",
                                 label="Speech (upload or record)", elem_id="audio")
                counterfactual = gr.Checkbox(
                    label="Counterfactual: rerun with the descriptor tokens zeroed", value=False,
                    interactive=has_descriptor, elem_id="counterfactual",
                    info=None if has_descriptor else "this model has no descriptor stream")
                status = gr.Markdown("Upload a file or record a clip.", elem_id="status")
            with gr.Column():
                none = "(none in the model's answer)"
                transcript = gr.Textbox(label="Transcript", interactive=False, placeholder=none,
                                        elem_id="transcript")
                caption = gr.Textbox(label="Descriptor caption", interactive=False, placeholder=none,
                                     elem_id="caption")
                emotion = gr.Textbox(label="Emotion", interactive=False, elem_id="emotion")
        with gr.Row():
            scores = gr.BarPlot(score_table({lab: 0.0 for lab in labels}), x="emotion", y="probability",
                                y_lim=[0, 1], sort=labels, label="Per-class scores", elem_id="scores")
            cf_scores = gr.BarPlot(score_table({lab: 0.0 for lab in labels}), x="emotion", y="probability",
                                   y_lim=[0, 1], sort=labels, visible=False,
                                   label="Per-class scores, descriptor zeroed", elem_id="cf_scores")
        cf_emotion = gr.Textbox(label="Emotion with the descriptor zeroed", interactive=False,
                                visible=False, elem_id="cf_emotion")
        cf_summary = gr.Markdown("", elem_id="cf_summary")
        weights = layer_table(ser.layer_weights())
        with gr.Row():  # one chart per branch: a bar per encoder layer (0 = the input embeddings)
            for branch, part in weights.groupby("branch", sort=False):
                gr.BarPlot(part.assign(layer=part["layer"].astype(str)), x="layer", y="weight",
                           sort=[str(i) for i in part["layer"]], x_title="encoder layer", y_lim=[0, None],
                           label=f"Learned layer weights, {branch} branch (softmax over layers)",
                           elem_id=f"layers_{branch}")
        with gr.Accordion("Raw output (predict's JSON line)", open=False):
            raw = gr.JSON(elem_id="raw")
        outputs = [status, transcript, caption, emotion, scores, cf_emotion, cf_scores, cf_summary, raw]
        # A new clip and a flip of the checkbox both (re)explain what is in the audio box.
        audio.change(respond, [audio, counterfactual], outputs)
        counterfactual.change(respond, [audio, counterfactual], outputs)
    return page


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m explainable_ser.app", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--model", metavar="DIR", help="an exported model (python -m explainable_ser.export)")
    model.add_argument("--ckpt", help="a run's checkpoint: a file (runs/demo/stage2/final.ckpt), a stage "
                       "directory (its final.ckpt) or a run directory (its last stage's final.ckpt)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. eval.num_beams=4")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: a GPU if any)")
    parser.add_argument("--concurrency", type=int, default=2,
                        help="requests explained at the same time; the rest wait in the queue (default 2)")
    parser.add_argument("--max-mb", type=float, default=50.0, help="largest file accepted, MB (default 50)")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="longest clip accepted, seconds (default: the model's data.max_clip_seconds)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # read when gradio is imported
    try:
        import gradio  # noqa: F401
    except ImportError:
        print('error: the web page needs Gradio: pip install -e ".[app]"', file=sys.stderr)
        return 2
    from explainable_ser import predict
    from explainable_ser.config import ConfigError

    source = args.model or args.ckpt
    if not Path(source).exists():
        print(f"error: {'model directory' if args.model else 'checkpoint'} not found: {source}", file=sys.stderr)
        return 2
    if args.ckpt:
        from explainable_ser.runs import resolve_ckpt_arg

        try:
            args.ckpt = source = resolve_ckpt_arg(args.ckpt)
        except ConfigError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    print(f"loading {source} ...", file=sys.stderr)
    try:
        ser = predict.load(argparse.Namespace(model=args.model, ckpt=args.ckpt, device=args.device,
                                              overrides=args.overrides))
    except (ConfigError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    limits = Limits(max_mb=args.max_mb, max_seconds=args.max_seconds or float(ser.cfg.data.max_clip_seconds))
    page = build(ser, limits)
    page.queue(default_concurrency_limit=max(1, args.concurrency))
    import gradio as gr

    # System fonts: the default theme would ask Google's servers for its web font.
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])
    page.launch(server_name=args.host, server_port=args.port, max_file_size=f"{args.max_mb:g}mb",
                show_error=True, share=False, ssr_mode=False, theme=theme)
    return 0


if __name__ == "__main__":
    sys.exit(main())
