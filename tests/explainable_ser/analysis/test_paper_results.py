"""The paper's numbers live in one file (explainable_ser/analysis/paper_results.json): the table in
experiments/README.md and the notebooks' paper table must say the same."""

from __future__ import annotations

import re
from pathlib import Path

from explainable_ser.analysis import explore

REPO = Path(__file__).resolve().parents[3]
METRICS = {"iemocap": ("ua", "wer"), "meld": ("ua", "wer"), "emosec": ("bleu4", "meteor", "rouge_l", "cider", "spice")}


def readme_rows() -> dict[str, dict[str, dict[str, float]]]:
    """experiments/README.md's system table: experiment file stem -> corpus -> metric -> value."""
    out = {}
    for line in (REPO / "experiments" / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 6 or not (m := re.match(r"`([\w-]+)\.yaml`", cells[0])):
            continue
        row: dict[str, dict[str, float]] = {}
        for corpus, cell in zip(METRICS, cells[3:]):
            values = [v.strip() for v in cell.split("/")]
            for metric, v in zip(METRICS[corpus], values):
                if re.fullmatch(r"\d+(\.\d+)?", v):
                    row.setdefault(corpus, {})[metric] = float(v)
        out[m.group(1)] = row
    return out


def test_the_experiments_table_says_what_the_data_file_says():
    rows = readme_rows()
    assert set(explore.PAPER_RESULTS) <= set(rows), "a system of the data file has no row in experiments/README.md"
    for name, results in explore.PAPER_RESULTS.items():
        assert rows[name] == results, name
    # and a README row with numbers must come from the data file
    assert {n for n, r in rows.items() if r} == set(explore.PAPER_RESULTS)


def test_every_paper_system_has_an_experiment_file():
    for name in explore.PAPER_SYSTEMS:
        assert (REPO / "experiments" / f"{name}.yaml").is_file(), name
    assert set(explore.PAPER_MARKS.values()) <= set(explore.PAPER_SYSTEMS)


def test_the_paper_table_reads_the_data_file():
    table = {r["name"]: r for r in explore.paper_table()}
    assert table["sys7"]["iemocap ua"] == "77.6" and table["sys6"]["iemocap wer"] == "/"
