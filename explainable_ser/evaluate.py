"""Evaluate: ``python -m explainable_ser.evaluate --ckpt PATH [CONFIG.yaml] [key=value ...]``.

Decodes the test split of every corpus with a ``test_split`` (batched generation with the KV
cache), parses the outputs with the one parser of :mod:`explainable_ser.prompts`, and writes
next to the checkpoint's run directory (or ``--out``):

* ``predictions.jsonl``: one line per utterance and task: id, task, references, raw text, parsed fields
* ``metrics.json``: ua, wa, macro_f1, wer, bleu4, meteor, rouge_l, cider, spice (null with a
  reason where a metric could not run), n_utterances, n_unparsed, and beyond the paper:
  confusion matrix, annotator-aware accuracy, attribute accuracy, a counterfactual probe.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from explainable_ser.config import ConfigError, ExperimentConfig
from explainable_ser.prompts import get_task

# torch, the model stack and the metrics load inside the functions that use them, so that
# `--help` and argument errors answer at once.

DESCRIPTION = __doc__


def write_outputs(rows: list[dict], metrics: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "predictions.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False))


def print_table(metrics: dict) -> None:
    keys = ["ua", "wa", "macro_f1", "wer", "bleu4", "meteor", "rouge_l", "cider", "spice"]
    print(" ".join(f"{k:>9}" for k in keys))
    print(" ".join(f"{metrics.get(k):>9.4f}" if isinstance(metrics.get(k), float) else f"{'null':>9}"
                   for k in keys))
    aa = metrics.get("attribute_accuracy")
    if aa:
        print("attribute accuracy: " + ", ".join(
            f"{k}={v:.3f}" for k, v in aa.items() if isinstance(v, float)))
    cf = metrics.get("counterfactual")
    if cf and cf.get("n"):
        print(f"counterfactual (descriptor zeroed): emotion changed {cf['emotion_changed_rate']:.3f}, "
              f"UA {cf['ua']:.3f} -> {cf['ua_descriptor_zeroed']:.3f}")
    print(f"utterances: {metrics['n_utterances']}, unparsed emotions: {metrics['n_unparsed']}")


def evaluate_module(module, dm, cfg: ExperimentConfig, out_dir: Path, world_size: int | None = None,
                    rank: int | None = None) -> dict:
    """Decode the test split, write predictions.jsonl and metrics.json, print a table.

    By default each DDP rank decodes its shard and the rows are gathered once; ``world_size=1``
    decodes everything in this process.
    """
    import torch

    from explainable_ser.decoding import decode
    from explainable_ser.metrics import compute_metrics

    names = [c.name for c in cfg.data.corpora if c.test_split is not None]
    if not names:
        raise ConfigError("no corpus in data.corpora has a test_split to evaluate on")
    if len(names) > 1:
        print(f"note: corpora {names} have a test split; evaluating the first ({names[0]})")
    loader = dm.eval_dataloaders("test_split", world_size, rank)[0]
    tasks = list(cfg.eval.tasks)
    sharded = world_size is None or world_size > 1
    rows = decode(module, loader, cfg, tasks, limit=cfg.eval.limit, gather=sharded)
    # The counterfactual zeroes the descriptor tokens: a model without them has none to run.
    emo_tasks = [t for t in tasks if "emotion" in get_task(t).fields] \
        if getattr(module.model, "has_descriptor", True) else []
    cf_rows = decode(module, loader, cfg, emo_tasks, zero_descriptor=True, limit=cfg.eval.limit,
                     desc="counterfactual", gather=sharded) if emo_tasks else None
    metrics = compute_metrics(rows, list(cfg.training.labels), cf_rows, language=cfg.eval.caption_language)
    if torch.distributed.is_available() and torch.distributed.is_initialized() \
            and torch.distributed.get_rank() != 0:
        return metrics  # every rank holds the gathered rows; rank 0 writes them
    write_outputs(rows, metrics, out_dir)
    print_table(metrics)
    for warning in metrics["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"wrote {out_dir / 'predictions.jsonl'} and {out_dir / 'metrics.json'}")
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m explainable_ser.evaluate", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="exit status: 0 done; 2 a bad argument, config or checkpoint, "
                                            "or a missing file (one line on stderr)")
    parser.add_argument("--ckpt", required=True, help="checkpoint (e.g. runs/demo/stage2/final.ckpt)")
    parser.add_argument("--out", default=None, help="output directory (default: the run directory)")
    parser.add_argument("overrides", nargs="*", help="YAML files and key=value overrides")
    args = parser.parse_args(argv)
    if not Path(args.ckpt).is_file():  # said before the model stack loads (seconds)
        print(f"error: checkpoint not found: {args.ckpt}", file=sys.stderr)
        return 2
    from explainable_ser.assembly import load_trained

    try:
        cfg, dm, module, run_dir = load_trained(args.ckpt, list(args.overrides))
        evaluate_module(module, dm, cfg, Path(args.out) if args.out else run_dir)
    except (ConfigError, FileNotFoundError) as err:  # e.g. a test manifest not prepared yet
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
