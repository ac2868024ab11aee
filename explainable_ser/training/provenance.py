"""What a timing needs beside it: when, which commit, which command, and how loaded the machine
was. ``fit`` writes it into ``timings.json``; every benchmark under ``benchmarks/`` into its JSON.
Standard library only, so a light script can use it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path


def start(command: str | None = None) -> dict:
    """Provenance at the start of a measurement (``command`` defaults to this process's)."""
    repo = Path(__file__).resolve().parents[2]
    commit, changed = "", []
    if (repo / ".git").exists():
        commit = subprocess.run(
            ["git", "-C", str(repo), "describe", "--always", "--dirty"], capture_output=True, text=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
        ).stdout.splitlines()
        changed = [line[3:] for line in status]  # what "-dirty" means here (README text or code)
    info = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": commit or None,
        "uncommitted": changed[:20],
        "command": command or " ".join(["python", *sys.argv]),
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
        "cpu": cpu_model(),
        "_t0": time.perf_counter(),
    }
    if "torch" in sys.modules:  # said only where torch runs anyway (no import for a light script)
        info["torch_threads"] = sys.modules["torch"].get_num_threads()
    return info


def cpu_model() -> str | None:
    """The processor's name: the same command differs by 2x between this project's machines."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def finish(info: dict) -> dict:
    """The same with the load average at the end and the wall seconds in between."""
    out = {k: v for k, v in info.items() if k != "_t0"}
    out["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    out["wall_seconds"] = round(time.perf_counter() - info["_t0"], 1)
    return out
