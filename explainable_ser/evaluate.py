"""Evaluate: ``python -m explainable_ser.evaluate --ckpt PATH [CONFIG.yaml] [key=value ...]``.

Decodes the test split of every corpus with a ``test_split`` (batched generation with the KV
cache), parses the outputs with the one parser of :mod:`explainable_ser.model.prompts`, and writes
next to the checkpoint's run directory (or ``--out``):

* ``predictions.jsonl``: one line per utterance and task: id, task, references, raw text, parsed fields
* ``metrics.json``: ua, wa, macro_f1, wer, bleu4, meteor, rouge_l, cider, spice (null with a
  reason where a metric could not run), n_utterances, n_unparsed, and beyond the paper:
  confusion matrix, annotator-aware accuracy, attribute accuracy, chance levels, and a
  counterfactual probe per speech stream (``eval.counterfactual``)
* ``summary.txt``: the summary printed at the end, each figure beside its chance level
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from explainable_ser.config import ConfigError
from explainable_ser.training.runs import resolve_ckpt_arg

# torch, the model stack and the metrics load inside the functions that use them, so that
# `--help` and argument errors answer at once.

DESCRIPTION = __doc__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m explainable_ser.evaluate",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="exit status: 0 done; 2 a bad argument, config or checkpoint, or a missing file (one line on stderr)",
    )
    parser.add_argument(
        "--ckpt",
        required=True,
        help="checkpoint: a file (runs/demo/stage2/final.ckpt), a stage directory "
        "(its final.ckpt) or a run directory (its last stage's final.ckpt)",
    )
    parser.add_argument("--out", default=None, help="output directory (default: the run directory)")
    parser.add_argument("overrides", nargs="*", help="YAML files and key=value overrides")
    args = parser.parse_args(argv)
    # The implementation (torch, lhotse, the models) loads after the arguments are checked,
    # so that --help and argument errors answer at once.
    from explainable_ser.evaluation.pipeline import evaluate_module

    try:  # said before the model stack loads (seconds)
        args.ckpt = resolve_ckpt_arg(args.ckpt)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from explainable_ser.training.assembly import load_trained

    try:
        cfg, dm, module, run_dir = load_trained(args.ckpt, list(args.overrides))
        evaluate_module(module, dm, cfg, Path(args.out) if args.out else run_dir, run_dir=run_dir)
    except (ConfigError, FileNotFoundError) as err:  # e.g. a test manifest not prepared yet
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
