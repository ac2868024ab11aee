"""Cross-validation over a corpus's folds (IEMOCAP's five sessions): one run per fold, resumable, and
the pooled summary."""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path
from typing import Any

import torch.distributed as dist

from data_modules.records import read_jsonl
from explainable_ser.config import ConfigError, ExperimentConfig, load_config, to_yaml
from explainable_ser.evaluation.report import compute_metrics
from explainable_ser.training.recipe import run

SPLIT_SUFFIX = {"train_split": "train", "val_split": "dev", "test_split": "test"}
"""Corpus split attribute -> fold manifest suffix (``iemocap_cuts_fold{k}_{suffix}``)."""

TABLE_KEYS = ("ua", "wa", "macro_f1", "wer", "bleu4", "meteor", "rouge_l", "cider", "spice", "n_utterances")
"""Columns of the printed table."""


def parse_folds(spec: str) -> list[int]:
    """``"1-5"`` -> [1, 2, 3, 4, 5]; ``"1,3"`` -> [1, 3]; ``"2"`` -> [2]. Folds are >= 1."""
    folds: list[int] = []
    try:
        for part in spec.split(","):
            part = part.strip()
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                if lo > hi:
                    raise ValueError(part)
                folds.extend(range(lo, hi + 1))
            else:
                folds.append(int(part))
    except ValueError:
        raise ConfigError(f"--folds {spec!r}: expected e.g. 1-5, 1,3 or 2") from None
    if not folds or min(folds) < 1:
        raise ConfigError(f"--folds {spec!r}: fold numbers start at 1")
    return list(dict.fromkeys(folds))  # keep order, drop repeats


def corpus_index(cfg: ExperimentConfig, corpus: str) -> int:
    """Position of the cross-validated corpus in ``data.corpora`` (for ``key=value`` paths)."""
    names = [c.name for c in cfg.data.corpora]
    if corpus not in names:
        raise ConfigError(
            f"no corpus named {corpus!r} in data.corpora (have {names}); "
            f"pass e.g. experiments/data_iemocap.yaml or --corpus NAME"
        )
    return names.index(corpus)


def fold_overrides(cfg: ExperimentConfig, corpus: str, fold: int, root: Path) -> list[str]:
    """Overrides that turn the experiment into fold ``fold`` (applied after the user's)."""
    i = corpus_index(cfg, corpus)
    out = [f"data.corpora.{i}.{attr}=fold{fold}_{suffix}" for attr, suffix in SPLIT_SUFFIX.items()]
    return out + [f"run_dir={root / f'fold{fold}'}"]


def is_finished(fold_dir: Path) -> bool:
    """A fold is finished once ``fit`` has written its evaluation."""
    return (fold_dir / "metrics.json").is_file()


def numeric_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The numbers of a ``metrics.json``, nested dicts flattened with dots (lists left out)."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(numeric_metrics(value, f"{name}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def summarize(per_fold: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Mean and sample standard deviation over folds of every numeric metric.

    A metric missing (or null) in some fold is averaged over the folds that have it;
    ``n_folds`` says how many did.
    """
    flat = {k: numeric_metrics(m) for k, m in per_fold.items()}
    keys = sorted({key for m in flat.values() for key in m})
    mean, std, n = {}, {}, {}
    for key in keys:
        values = [m[key] for m in flat.values() if key in m]
        n[key] = len(values)
        mean[key] = statistics.fmean(values)
        std[key] = statistics.stdev(values) if len(values) > 1 else None
    return {
        "folds": sorted(per_fold),
        "per_fold": {f"fold{k}": flat[k] for k in sorted(flat)},
        "mean": mean,
        "std": std,
        "n_folds": n,
    }


def _write_atomic(path: Path, text: str) -> None:
    # Folds may run as parallel jobs that all summarise at the end: never leave half a file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def is_rank_zero() -> bool:
    """Under DDP every rank runs this script; only rank 0 writes the summary."""

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def run_fit(cfg: ExperimentConfig) -> Path:
    """Train and evaluate one fold (a seam for tests)."""

    return run(cfg)


def crossvalidate(args: list[str], folds: list[int], corpus: str = "iemocap") -> dict[str, Any]:
    """Run (or resume) the folds, then write and return the summary (see the module doc)."""
    base = load_config(args)
    if not base.eval.run_after_fit:
        raise ConfigError("crossval reads each fold's metrics.json: needs eval.run_after_fit=true")
    corpus_index(base, corpus)  # fail before any training when the corpus is absent
    root = base.resolved_run_dir()
    root.mkdir(parents=True, exist_ok=True)
    for k in folds:
        fold_cfg = load_config([*args, *fold_overrides(base, corpus, k, root)])
        fold_dir = fold_cfg.resolved_run_dir()
        if is_finished(fold_dir):
            print(f"[crossval] fold {k}: finished earlier ({fold_dir / 'metrics.json'}), skipped")
            continue
        print(f"[crossval] fold {k}: training in {fold_dir}")
        run_fit(fold_cfg)
    if not is_rank_zero():
        return {}
    missing = [k for k in folds if not is_finished(root / f"fold{k}")]
    if missing:
        raise RuntimeError(f"folds {missing} have no metrics.json after training (see their logs)")
    return write_summary(base, root, folds)


def write_summary(cfg: ExperimentConfig, root: Path, folds: list[int]) -> dict[str, Any]:
    """crossval.json, the concatenated predictions.jsonl, pooled metrics.json, config.yaml."""

    per_fold = {k: json.loads((root / f"fold{k}" / "metrics.json").read_text()) for k in folds}
    summary = summarize(per_fold)
    rows = []
    for k in folds:
        rows += [{**r, "fold": k} for r in read_jsonl(root / f"fold{k}" / "predictions.jsonl")]
    _write_atomic(root / "predictions.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    pooled = compute_metrics(rows, list(cfg.training.labels), language=cfg.eval.caption_language)
    pooled["folds"] = folds
    _write_atomic(root / "metrics.json", json.dumps(pooled, indent=2, ensure_ascii=False))
    _write_atomic(root / "crossval.json", json.dumps(summary, indent=2))
    _write_atomic(root / "config.yaml", to_yaml(cfg))
    print(format_table(summary))
    print(f"wrote {root / 'crossval.json'}, {root / 'predictions.jsonl'} and {root / 'metrics.json'}")
    return summary


def format_table(summary: dict[str, Any], keys: tuple[str, ...] = TABLE_KEYS) -> str:
    """Folds as rows, then mean and std; ``-`` where a metric is null."""
    widths = {k: max(9, len(k)) for k in keys}

    def cell(value: float | None, key: str) -> str:
        text = "-" if value is None else f"{value:.0f}" if key == "n_utterances" else f"{value:.4f}"
        return f"{text:>{widths[key]}}"

    lines = [f"{'':>6} " + " ".join(f"{k:>{widths[k]}}" for k in keys)]
    for fold, metrics in summary["per_fold"].items():
        lines.append(f"{fold:>6} " + " ".join(cell(metrics.get(k), k) for k in keys))
    for stat in ("mean", "std"):
        lines.append(f"{stat:>6} " + " ".join(cell(summary[stat].get(k), k) for k in keys))
    return "\n".join(lines)
