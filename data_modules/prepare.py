"""Prepare corpora into unified lhotse manifests.

Usage::

    python -m data_modules.prepare synthcraft --out data/synthcraft [--n-train 2000 ...]

Each corpus is one subcommand, registered in :data:`SUBCOMMANDS` as
``name -> (add_args, run)``: ``add_args(parser)`` declares its options and ``run(args)``
prepares it and returns the process exit status.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from data_modules.cli_types import positive_int
from data_modules.config import SynthCraftSpec

SIZES = SynthCraftSpec()  # default split sizes, defined once in the data schema


def _add_synthcraft_args(parser: argparse.ArgumentParser) -> None:
    """Generate the built-in synthetic corpus (espeak-ng speech with known descriptors)."""
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="DIR",
        help="output directory (audio/, manifests and synthcraft_report.json)",
    )
    parser.add_argument(
        "--n-train",
        type=positive_int,
        metavar="N",
        default=SIZES.n_train,
        help="clips in the train split (default: %(default)s)",
    )
    parser.add_argument(
        "--n-dev",
        type=positive_int,
        metavar="N",
        default=SIZES.n_dev,
        help="clips in the dev split (default: %(default)s)",
    )
    parser.add_argument(
        "--n-test",
        type=positive_int,
        metavar="N",
        default=SIZES.n_test,
        help="clips in the test split (default: %(default)s)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=SIZES.seed,
        metavar="S",
        help="corpus seed; the same seed gives the same corpus (default: %(default)s)",
    )
    parser.add_argument(
        "--workers", type=positive_int, default=None, metavar="W", help="render processes (default: min(2, CPU count))"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _run_synthcraft(args: argparse.Namespace) -> int:
    from data_modules.synthcraft import generate, read_report

    manifests = generate(
        args.out,
        n_train=args.n_train,
        n_dev=args.n_dev,
        n_test=args.n_test,
        seed=args.seed,
        num_workers=args.workers,
        progress=not args.no_progress,
    )
    report = read_report(args.out)
    print(
        f"SynthCraft (seed {args.seed}) generated in {report['generation_seconds']:.1f} s "
        f"({report['clips_per_second']:.0f} clips/s, {report['num_workers']} worker(s))"
    )
    for split, info in report["splits"].items():
        skips = ", ".join(f"{reason}={n}" for reason, n in sorted(info["skipped"].items()))
        print(
            f"  {split:5s} kept {info['kept']:5d}/{info['requested']:<5d} "
            f"{info['hours']:.3f} h  skipped: {skips or 'none'}"
        )
    total = ", ".join(f"{reason}={n}" for reason, n in sorted(report["skipped"].items()))
    print(f"  skipped in total: {total or 'none'}")
    print("manifests:")
    for split, path in manifests.items():
        print(f"  {split:5s} {path}")
    return 0


# Corpus readers living in data_modules/corpora/<name>.py: each module defines
# ``add_args(parser)`` (its docstring is the subcommand's help) and ``run(args) -> int``.
# Modules keep heavy imports inside functions, so building the parser stays fast.
READER_MODULES = ("speechcraft", "iemocap", "meld", "emosec")


def _subcommands() -> dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]]:
    """name -> (add_args: declares the options, its docstring is the help; run: prepares the
    corpus and returns the exit status)."""
    import importlib

    found = {"synthcraft": (_add_synthcraft_args, _run_synthcraft)}
    for name in READER_MODULES:
        try:
            module = importlib.import_module(f"data_modules.corpora.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"data_modules.corpora.{name}":
                raise  # a missing dependency of an existing reader is a real error
            continue
        found[name] = (module.add_args, module.run)
    return found


SUBCOMMANDS = _subcommands()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m data_modules.prepare",
        description="Prepare a corpus into unified lhotse CutSet manifests "
        "(<corpus>_cuts_<split>.jsonl.gz) in an output directory.",
        epilog="example: python -m data_modules.prepare synthcraft --out data/synthcraft; "
        "'python -m data_modules.prepare CORPUS --help' lists a corpus's options.",
    )
    sub = parser.add_subparsers(dest="corpus", required=True, metavar="CORPUS")
    for name, (add_args, _) in SUBCOMMANDS.items():
        help_text = (add_args.__doc__ or f"Prepare {name}.").strip().splitlines()[0]
        add_args(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 prepared; 1 nothing could be kept; 2 a bad argument or input/output path
    (the readers' layout errors included), with one ``error:`` line on stderr."""
    args = build_parser().parse_args(argv)
    try:
        return SUBCOMMANDS[args.corpus][1](args)
    except (
        FileNotFoundError,
        NotADirectoryError,
        IsADirectoryError,
        FileExistsError,
        PermissionError,
    ) as err:  # e.g. --out names an existing file
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
