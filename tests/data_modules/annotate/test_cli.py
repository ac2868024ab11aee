"""The annotator's command line: --help lists the options, bad arguments answer cleanly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from data_modules.annotate.bins import BinningConfig, load_stats
from data_modules.annotate.cli import main

ROOT = Path(__file__).resolve().parents[3]


def test_help_and_bad_arguments(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "data_modules.annotate", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0
    for option in (
        "--manifest",
        "--out",
        "--reference-stats",
        "--save-stats",
        "--workers",
        "--overwrite-captions",
        "--normalize-by",
        "--percentiles",
    ):
        assert option in done.stdout
    assert main(["--manifest", str(tmp_path / "nope.jsonl.gz"), "--out", str(tmp_path / "x_cuts_test.jsonl.gz")]) == 2
    bogus = tmp_path / "bogus.json"
    bogus.write_text("{}")
    with pytest.raises(ValueError, match="reference-stats"):
        load_stats(bogus)
    with pytest.raises(ValueError, match="normalize_by"):
        BinningConfig(normalize_by="room")
