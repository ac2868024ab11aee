"""Wall time of each command line's ``--help`` (interpreter start + imports), written as JSON.

    python benchmarks/cli_startup.py                       # this checkout
    python benchmarks/cli_startup.py --cwd OTHER_CHECKOUT   # e.g. a worktree at an older commit

``python -m`` puts the working directory first on ``sys.path``, so ``--cwd`` times that
checkout's package. Run alone on the machine: the figure is the median of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from explainable_ser.training import provenance

MODULES = (
    "explainable_ser.fit",
    "explainable_ser.evaluate",
    "explainable_ser.predict",
    "explainable_ser.compare",
    "explainable_ser.crossval",
)


def time_help(module: str, cwd: Path, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", module, "--help"],
            cwd=cwd,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        times.append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--cwd",
        type=Path,
        default=Path(__file__).resolve().parents[1],
        help="checkout whose package is timed (default: this one)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per command (median reported)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "cli_startup.json")
    args = parser.parse_args(argv)
    commit = (
        subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=args.cwd, capture_output=True, text=True
        ).stdout.strip()
        or None
    )
    prov = provenance.start()
    result = {
        "cwd": str(args.cwd),
        "commit": commit,
        "load_average_start": os.getloadavg()[0],
        "repeat": args.repeat,
        "help_seconds": {},
    }
    for module in MODULES:
        times = time_help(module, args.cwd, args.repeat)
        result["help_seconds"][module] = {
            "median": round(statistics.median(times), 3),
            "all": [round(t, 3) for t in times],
        }
        print(f"{module:<28} --help {statistics.median(times):6.2f} s")
    result["provenance"] = provenance.finish(prov)  # of this script; `commit` is the timed checkout's
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
