"""The web page: upload or record a clip and see its transcript, descriptor caption or rationale,
emotion with its scores, each cue the explanation states beside the clip's measurement (a model
trained on evidence rationales), a timeline for long recordings and the layer weights; refusals
explained in plain words."""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import matplotlib
import matplotlib.pyplot as plt
import pandas as pd

from explainable_ser.serving.inference import AudioError, Explainer, probe_seconds


@dataclass
class Limits:
    """What the page accepts."""

    max_mb: float = 50.0
    """Largest file, in MB (10^6 bytes)."""
    max_seconds: float = 600.0
    """Longest recording, in seconds (one longer than the model's ``data.max_clip_seconds`` is
    explained in pieces)."""


class RefusedError(AudioError):
    """A file the page will not explain (too large, too long, unreadable): shown to the user."""


_ERRNO = re.compile(r"\[Errno -?\d+\]\s*")


def plain_reason(text: str, path: str | Path) -> str:
    """A reason as a user should read it: the uploaded file's server path cut down to its name,
    errno numbers left out."""
    p = Path(path)
    for long in (str(p.resolve()), str(p)):
        text = text.replace(f"'{long}'", p.name).replace(long, p.name)
    return _ERRNO.sub("", text)


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
    except (AudioError, OSError) as err:
        raise RefusedError(f"{p.name}: {plain_reason(str(err), p)}") from None
    if seconds > limits.max_seconds:
        raise RefusedError(f"{p.name} lasts {seconds:.1f} s; this page takes recordings up to {limits.max_seconds:g} s")
    return seconds


def score_table(scores: dict[str, float]):
    """Per-class scores as the bar chart's frame: one row per emotion, in the model's order."""

    return pd.DataFrame({"emotion": list(scores), "probability": [float(v) for v in scores.values()]})


def layer_table(weights: dict[str, list[float]]):
    """Layer weights as a frame: (branch, layer, weight) rows."""

    rows = [(b, i, float(v)) for b, ws in weights.items() for i, v in enumerate(ws)]
    return pd.DataFrame(rows, columns=["branch", "layer", "weight"])


def layer_figure(weights: dict[str, list[float]]):
    """One panel per branch, bars per encoder layer (0 = the input embeddings), the same y scale
    for all and a dashed line at the uniform weight 1/L the weights start from, so a small
    departure does not look large."""

    matplotlib.use("Agg")

    fig, axes = plt.subplots(1, len(weights), figsize=(4.2 * len(weights), 2.6), sharey=True, squeeze=False)
    top = max(max(ws) for ws in weights.values())
    for ax, (branch, ws) in zip(axes[0], weights.items()):
        ax.bar(range(len(ws)), ws, color="#4878a8")
        ax.axhline(1.0 / len(ws), color="#c44e52", linestyle="--", linewidth=1, label=f"uniform 1/{len(ws)}")
        ax.set_title(f"{branch} branch", fontsize=10)
        ax.set_xlabel("encoder layer")
        ax.set_xticks(range(len(ws)))
        ax.set_ylim(0, top * 1.15)
        ax.legend(fontsize=8, loc="upper right")
    axes[0][0].set_ylabel("softmax weight")
    fig.tight_layout()
    return fig


def timeline_table(summary: dict):
    """A recording's pieces as the timeline's rows (empty for a single clip)."""

    cols = ["piece", "start (s)", "end (s)", "emotion", "probability", "caption", "transcript"]
    rows = [
        [
            p["piece"],
            p["start"],
            p["end"],
            p["emotion"],
            round(p["emotion_scores"][p["emotion"]], 2),
            p.get("caption") or "",
            p.get("transcript") or "",
        ]
        for p in summary.get("pieces", [])
    ]
    return pd.DataFrame(rows, columns=cols)


CUE_COLUMNS = ["cue", "stated", "measured", "usual", "verdict"]


def _number(value, unit: str | None) -> str:
    return "" if value is None else f"{value:g} {unit or ''}".strip()


def cues_table(row: dict):
    """Each cue the explanation states beside the clip's measurement and its usual value (a
    concept-led rationale's cue with its head's probability)."""
    sure = {c["cue"]: c["confidence"] for c in row.get("concept_cues") or []}
    rows = [
        [
            c["cue"],
            c["direction"]
            + (f" ({_number(c['value'], c['unit'])})" if c.get("value") is not None else "")
            + (f" (p = {sure[c['cue']]:.2f})" if c["cue"] in sure else ""),
            "" if c["measured"] is None else f"{c['measured_direction']} ({c['measured']:g})",
            "" if c["reference"] is None else f"{c['reference']:g}",
            c["verdict"],
        ]
        for c in row.get("cues") or []
    ]
    return pd.DataFrame(rows, columns=CUE_COLUMNS)


def emotion_text(row: dict) -> str:
    """The emotion with the model's probability for it."""
    p = row["emotion_scores"].get(row["emotion"])
    return row["emotion"] if p is None else f"{row['emotion']} (p = {p:.2f})"


def counterfactual_summary(row: dict, cf: dict) -> str:
    """In words: what zeroing the descriptor tokens did to the emotion and its probability."""
    emo = row["emotion"]
    before, after = row["emotion_scores"].get(emo), cf["emotion_scores"].get(emo)
    change = (
        f"the emotion stays **{emo}**"
        if cf["emotion"] == emo
        else f"the emotion changes from **{emo}** to **{cf['emotion']}**"
    )
    prob = (
        f"; the probability of {emo} goes from {before:.2f} to {after:.2f}"
        if before is not None and after is not None
        else ""
    )
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
        row = ser.explain(wave)  # a long recording: its summary, with the pieces
    except AudioError as err:
        raise RefusedError(f"{Path(path).name}: {plain_reason(str(err), path)}") from None
    cf = ser.explain(wave, zero_descriptor=True) if counterfactual else None
    return {"row": row, "counterfactual": cf, "seconds": seconds, "wall": time.perf_counter() - t0}


def _hidden_table(value, label: str, elem_id: str):
    """A read-only table, shown once there is something to show."""
    return gr.Dataframe(value, label=label, visible=False, interactive=False, wrap=True, elem_id=elem_id)


def build(ser: Explainer, limits: Limits, title: str = "explainable-ser"):
    """The Gradio page around a loaded model (``.launch()`` serves it)."""

    labels = ser.labels
    has_descriptor = getattr(ser.model, "has_descriptor", True)
    has_rationale = "rationale" in ser.explain_task.fields

    def cleared(status: str) -> tuple:
        empty = score_table({lab: 0.0 for lab in labels})
        return (
            status,
            "",
            "",
            "",
            empty,
            gr.update(value="", visible=False),
            gr.update(value=empty, visible=False),
            "",
            gr.update(value=timeline_table({}), visible=False),
            None,
            gr.update(value="", visible=has_rationale),
            gr.update(value=cues_table({}), visible=False),
        )

    def respond(path, counterfactual):
        if not path:  # the audio was cleared
            return cleared("Upload a file or record a clip.")
        try:
            out = explain_file(ser, path, counterfactual and has_descriptor, limits)
        except RefusedError as err:
            print(f"refused {Path(path).name}: {err}", file=sys.stderr)  # one line, no traceback
            return cleared(f"**Refused.** {err}")
        row, cf = out["row"], out["counterfactual"]
        long = "pieces" in row
        source = (
            ""
            if long or row["emotion_source"] == "generated"
            else (" The generated text named no known emotion: the emotion shown is the best-scoring one.")
        )
        pieces = (
            (
                f" A long recording: {row['n_pieces']} pieces cut at its pauses (timeline below); the "
                f"emotion is their scores weighted by duration."
            )
            if long
            else ""
        )
        status = (
            f"**{Path(path).name}**: {out['seconds']:.2f} s of audio, explained in {out['wall']:.2f} s.{source}{pieces}"
        )
        cf_visible = cf is not None
        caption = "(one caption per piece: see the timeline)" if long else (row["caption"] or "")
        return (
            status,
            row["transcript"] or "",
            caption,
            emotion_text(row),
            score_table(row["emotion_scores"]),
            gr.update(value=emotion_text(cf) if cf_visible else "", visible=cf_visible),
            gr.update(
                value=score_table(cf["emotion_scores"]) if cf_visible else score_table({lab: 0.0 for lab in labels}),
                visible=cf_visible,
            ),
            counterfactual_summary(row, cf) if cf_visible else "",
            gr.update(value=timeline_table(row), visible=long),
            {**row, **({"counterfactual": cf} if cf_visible else {})},
            gr.update(value=row.get("rationale") or "", visible=has_rationale),
            gr.update(value=cues_table(row), visible=bool(row.get("cues"))),
        )

    with gr.Blocks(title=title) as page:
        gr.Markdown(
            f"# {title}\nModel: `{ser.source}`. Emotions: {', '.join(labels)}. "
            f"Files up to {limits.max_mb:g} MB and {limits.max_seconds:g} s; longer than "
            f"{ser.max_seconds:g} s, a recording is explained in pieces cut at its pauses."
        )
        with gr.Row():
            with gr.Column():
                audio = gr.Audio(
                    sources=["upload", "microphone"],
                    type="filepath",
                    label="Speech (upload or record)",
                    elem_id="audio",
                )
                counterfactual = gr.Checkbox(
                    label="Counterfactual: rerun with the descriptor tokens zeroed",
                    value=False,
                    interactive=has_descriptor,
                    elem_id="counterfactual",
                    info=None if has_descriptor else "this model has no descriptor stream",
                )
                status = gr.Markdown("Upload a file or record a clip.", elem_id="status")
            with gr.Column():
                none = "(none in the model's answer)"
                transcript = gr.Textbox(label="Transcript", interactive=False, placeholder=none, elem_id="transcript")
                caption = gr.Textbox(label="Descriptor caption", interactive=False, placeholder=none, elem_id="caption")
                rationale = gr.Textbox(
                    label="Rationale", interactive=False, placeholder=none, visible=has_rationale, elem_id="rationale"
                )
                emotion = gr.Textbox(label="Emotion", interactive=False, elem_id="emotion")
        with gr.Row():
            scores = gr.BarPlot(
                score_table({lab: 0.0 for lab in labels}),
                x="emotion",
                y="probability",
                y_lim=[0, 1],
                sort=labels,
                label="Per-class scores",
                elem_id="scores",
            )
            cf_scores = gr.BarPlot(
                score_table({lab: 0.0 for lab in labels}),
                x="emotion",
                y="probability",
                y_lim=[0, 1],
                sort=labels,
                visible=False,
                label="Per-class scores, descriptor zeroed",
                elem_id="cf_scores",
            )
        cf_emotion = gr.Textbox(
            label="Emotion with the descriptor zeroed", interactive=False, visible=False, elem_id="cf_emotion"
        )
        cf_summary = gr.Markdown("", elem_id="cf_summary")
        cues = _hidden_table(
            cues_table({}),
            "Each stated cue beside the clip's measurement (usual: the training corpus's neutral voice)",
            "cues",
        )
        timeline = _hidden_table(timeline_table({}), "Timeline: the recording's pieces", "timeline")
        gr.Plot(
            layer_figure(ser.layer_weights()),
            label="Learned layer weights (softmax over the encoder layers)",
            elem_id="layers",
        )
        with gr.Accordion("Raw output (predict's JSON line)", open=False):
            raw = gr.JSON(elem_id="raw")
        outputs = [
            *(status, transcript, caption, emotion, scores, cf_emotion, cf_scores, cf_summary, timeline, raw),
            *(rationale, cues),
        ]
        # A new clip and a flip of the checkbox both (re)explain what is in the audio box.
        audio.change(respond, [audio, counterfactual], outputs)
        counterfactual.change(respond, [audio, counterfactual], outputs)
    return page
