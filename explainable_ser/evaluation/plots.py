"""Figures shared by TensorBoard logging and the notebooks (matplotlib, headless)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display on training nodes or in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from explainable_ser.model.prompts import get_task  # noqa: E402


def confusion_figure(confusion: list[list[int]], labels: list[str], title: str = "confusion"):
    """Rows: reference labels; columns: predicted labels plus 'unparsed'."""
    mat = np.asarray(confusion, dtype=float)
    cols = list(labels) + (["unparsed"] if mat.shape[1] == len(labels) + 1 else [])
    fig, ax = plt.subplots(figsize=(1.1 * len(cols) + 1.5, 0.9 * len(labels) + 1.2))
    ax.imshow(mat, cmap="Blues")
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    for i in range(mat.shape[0]):
        for j in range(mat.shape[1]):
            ax.text(
                j, i, int(mat[i, j]), ha="center", va="center", color="white" if mat[i, j] > mat.max() / 2 else "black"
            )
    ax.set_title(title)
    fig.tight_layout()
    return fig


def layer_weights_figure(weights: dict[str, list[float]], title: str = "learned layer weights"):
    """One bar group per branch: the softmax weight of each encoder layer, and the uniform
    1/L the weights start from (a bar only means a preference where it stands clear of it)."""
    fig, ax = plt.subplots(figsize=(7.5, 3))
    n = max(len(w) for w in weights.values())
    width = 0.8 / len(weights)
    for k, (name, w) in enumerate(weights.items()):
        ax.bar(np.arange(len(w)) + k * width, w, width=width, label=name)
    ax.axhline(1 / n, color="black", linestyle=":", linewidth=1, label=f"uniform 1/{n}")
    ax.set_xticks(np.arange(n) + 0.4 - width / 2, [str(i) for i in range(n)])
    ax.set_xlabel("encoder layer (0 = embedding output)")
    ax.set_ylabel("softmax weight")
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)  # beside the bars, not on them
    fig.tight_layout()
    return fig


def predictions_table(rows: list[dict], n: int = 8) -> str:
    """A markdown table of references beside predictions (TensorBoard text, notebooks)."""
    lines = ["| id | task | reference | prediction |", "|---|---|---|---|"]
    for r in rows[:n]:
        ref = " / ".join(
            str(r.get(k))
            for k in ("transcript_ref", "caption_ref", "emotion_ref")
            if r.get(k) and k.split("_")[0] in get_task(r["task"]).fields
        )
        hyp = (r.get("raw") or "").replace("\n", " / ")
        lines.append(f"| {r['id']} | {r['task']} | {_cell(ref)} | {_cell(hyp)} |")
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")
