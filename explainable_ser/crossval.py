"""Leave-one-session-out cross-validation on IEMOCAP.

    python -m explainable_ser.crossval CONFIG.yaml [CONFIG.yaml ...] [key=value ...] --folds 1-5

For every fold k the configuration (YAML files and overrides, as for ``fit``) is loaded again
with the IEMOCAP corpus's splits set to ``fold{k}_train`` / ``fold{k}_dev`` / ``fold{k}_test``
(the manifests ``data_modules/corpora/iemocap.py`` writes) and the run directory set to
``{run_dir}/fold{k}``; then ``fit`` trains and evaluates it. A fold whose ``metrics.json``
exists is finished and skipped, so an interrupted cross-validation resumes where it stopped
(``fit`` itself skips the stages of a fold that already have ``final.ckpt``).

Written under ``{run_dir}`` for the requested folds (all of them must be finished):

    fold{k}/             a complete fit run directory per fold (metrics.json, predictions.jsonl ...)
    crossval.json        per-fold numeric metrics, their mean and standard deviation over folds
    predictions.jsonl    every fold's predictions, one after the other (a ``fold`` field added):
                         each utterance is tested in exactly one fold, so
                         ``python -m explainable_ser.compare A/predictions.jsonl B/predictions.jsonl``
                         pairs two cross-validated systems utterance by utterance
    metrics.json         the metrics of the pooled predictions (all folds as one test set)
    config.yaml          the configuration before the per-fold changes

Numeric metrics are the numbers of ``metrics.json``, nested ones flattened with dots
(``attribute_accuracy.mean``, ``counterfactual.descriptor.ua_zeroed``); lists (the confusion matrix) are
left out. The standard deviation is the sample one (n - 1); ``null`` with a single fold.

On a cluster, folds can run as separate jobs (``--folds 3``); a last ``--folds 1-5`` run then
finds every fold finished and only writes the summary.
"""

from __future__ import annotations

import argparse
import sys

from explainable_ser.config import ConfigError

DESCRIPTION = __doc__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m explainable_ser.crossval",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Example:\n  python -m explainable_ser.crossval experiments/base.yaml experiments/sys7.yaml "
        "experiments/data_iemocap.yaml --folds 1-5",
    )
    parser.add_argument("overrides", nargs="*", help="YAML files and key=value overrides, applied in order")
    parser.add_argument("--folds", default="1-5", help="folds to run: 1-5 (default), 1,3 or 2")
    parser.add_argument(
        "--corpus", default="iemocap", help="name of the cross-validated corpus in data.corpora (default iemocap)"
    )
    args = parser.parse_args(argv)
    # The implementation (torch, lhotse, the models) loads after the arguments are checked,
    # so that --help and argument errors answer at once.
    from explainable_ser.training.folds import crossvalidate, parse_folds

    try:
        crossvalidate(list(args.overrides), parse_folds(args.folds), args.corpus)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
