"""Training curves from a run's TensorBoard events: read, join the stages on one axis, plot;
and the learned layer weights of both branches. What the training notebook shows."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from explainable_ser.analysis.explore import resolve, run_specs
from explainable_ser.evaluation import plots

DEFAULT_CURVES = (
    "train/loss_asr",
    "train/loss_ser_sed",
    "train/loss_ser",
    "train/kl_content",
    "train/kl_descriptor",
    "train/beta",
    "lr-AdamW",
    "val/ce_per_token_asr",
    "val/ce_per_token_ser_sed",
    "val/ua",
    "val/wer",
    "val/bleu4",
)


def stage_names(run_dir: str | Path) -> list[str]:
    """Stages in training order: from config.yaml, else the TensorBoard folders by name."""
    path = resolve(run_dir)
    tb = path / "tensorboard"
    present = sorted(p.name for p in tb.iterdir() if p.is_dir()) if tb.is_dir() else []
    if (path / "config.yaml").is_file():
        cfg = OmegaConf.load(path / "config.yaml")
        ordered = [s["name"] for s in cfg.get("training", {}).get("stages", [])]
        return [s for s in ordered if s in present] + [s for s in present if s not in ordered]
    return present


def read_scalars(run_dir: str | Path) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """Every scalar of every stage: ``{stage: {tag: [(step, value), ...]}}``."""

    out = {}
    for stage in stage_names(run_dir):
        acc = EventAccumulator(str(resolve(run_dir) / "tensorboard" / stage), size_guidance={"scalars": 0})
        acc.Reload()
        out[stage] = {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    return out


def concatenated_curves(
    scalars: dict[str, dict[str, list[tuple[int, float]]]],
) -> tuple[dict[str, list[tuple[int, float]]], list[int]]:
    """Stages joined on one step axis (each stage's trainer counts from 0): ``(curves, stage
    boundaries)``; stage s starts after the last step of the stages before it."""
    curves: dict[str, list[tuple[int, float]]] = {}
    offset, bounds = 0, []
    for i, tags in enumerate(scalars.values()):
        if i:
            bounds.append(offset)
        last = -1
        for tag, points in tags.items():
            curves.setdefault(tag, []).extend((offset + s, v) for s, v in points)
            last = max([last] + [s for s, _ in points])
        offset += last + 1
    return curves, bounds


def curves_figure(runs: dict[str, str | Path], tags: Sequence[str] = DEFAULT_CURVES, ncols: int = 3):
    """One panel per tag that any run logged, one line per run, stages joined (dotted lines
    mark the stage boundaries of the first run)."""

    data = {label: concatenated_curves(read_scalars(d)) for label, d in runs.items()}
    present = [t for t in tags if any(t in curves for curves, _ in data.values())]
    if not present:
        raise ValueError(f"none of the tags {list(tags)} was logged by {list(runs)}")
    nrows = math.ceil(len(present) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.0 * nrows), squeeze=False)
    for ax, tag in zip(axes.flat, present):
        for label, (curves, _) in data.items():
            if tag in curves:
                steps, values = zip(*sorted(curves[tag]))
                ax.plot(steps, values, marker="." if len(steps) < 20 else None, label=label)
        for b in next(iter(data.values()))[1]:
            ax.axvline(b, color="grey", linestyle=":", linewidth=1)
        ax.set_title(tag, fontsize=9)
        ax.set_xlabel("step (stages joined)", fontsize=8)
    for ax in list(axes.flat)[len(present) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def tensorboard_runs(specs: str | Iterable[str]) -> dict[str, Path]:
    """Label -> run directory for every run with TensorBoard events under the specs (a run
    directory, or a folder of runs such as ``runs/synthcraft/sys7`` holding seeds)."""
    if isinstance(specs, str):
        specs = run_specs(specs)
    out: dict[str, Path] = {}
    for spec in specs:
        root = resolve(spec)
        found = [root] if (root / "tensorboard").is_dir() else sorted(p.parent for p in root.rglob("tensorboard"))
        if not found:
            raise FileNotFoundError(f"no tensorboard/ folder at or below {spec!r} (looked in {root})")
        for d in found:
            out[spec if d == root else f"{spec}/{d.relative_to(root)}"] = d
    return out


def layer_weights(run_dir: str | Path) -> dict[str, list[float]]:
    """The last logged softmax layer weights of both branches (``layer_weights/{branch}/{i}``),
    from the last stage that logged them."""
    for _stage, tags in reversed(list(read_scalars(run_dir).items())):
        out: dict[str, list[float]] = {}
        for branch in ("content", "descriptor"):
            layer_tags = sorted(t for t in tags if t.startswith(f"layer_weights/{branch}/"))
            if layer_tags:
                out[branch] = [tags[t][-1][1] for t in layer_tags]
        if out:
            return out
    raise ValueError(f"{run_dir}: no layer_weights/* scalars in its TensorBoard events")


def layer_weights_figure(run_dir: str | Path, title: str | None = None):
    """Bars of both branches' softmax layer weights beside the uniform 1/L they start from."""
    return plots.layer_weights_figure(layer_weights(run_dir), title=title or f"layer weights: {run_dir}")
