"""The notebooks execute headless (nbclient, kernel ``python3``) against a tiny run made here.

They read the run directory from ``EXPLAINABLE_SER_RUNS``; the kernel inherits this process's
environment. A failing cell raises ``CellExecutionError`` with the cell's traceback.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import nbformat
import pytest
import torch
from nbclient import NotebookClient

from explainable_ser.analysis.explore import RUNS_ENV

from conftest import TINY_LLM

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))

QUICK = [
    "model.encoder.kind=fbank",
    "training.stages.0.epochs=1",
    "training.stages.1.epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "eval.val_decode_limit=2",
    "eval.limit=4",
    "eval.max_new_tokens=12",
    "data.max_duration=12",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A real (tiny) fit: TensorBoard events of two stages, predictions with captions, metrics."""
    from data_modules.synthcraft import generate
    from explainable_ser.evaluation import pipeline, report
    from explainable_ser.fit import main

    corpus = tmp_path_factory.mktemp("synthcraft")
    generate(corpus, n_train=24, n_dev=6, n_test=6, seed=6, progress=False)
    run_dir = tmp_path_factory.mktemp("run")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: extra threads only spin on a shared CPU
    with pytest.MonkeyPatch.context() as mp:
        # BLEU/ROUGE/CIDEr still run (one PTB tokenizer JVM); METEOR's JVM would only cost time.
        mp.setattr(
            pipeline,
            "compute_metrics",
            functools.partial(report.compute_metrics, caption_metrics=("bleu4", "rouge_l", "cider")),
        )
        try:
            assert main([*TINY_LLM, *QUICK, f"data.corpora.0.dir={corpus}", f"run_dir={run_dir}"]) == 0
        finally:
            torch.set_num_threads(threads)
    return run_dir


def test_all_notebooks_are_tested():
    assert {p.name for p in NOTEBOOKS} == {
        "explore_predictions.ipynb",
        "training_curves.ipynb",
        "compare_systems.ipynb",
    }


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_has_a_parameter_cell_and_no_stored_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and "RUNS = None" in tagged[0].source
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit notebooks clean"
    # No logic of their own: every code cell is a few lines of calls into the packages.
    assert not any("def " in c.source or "class " in c.source for c in nb.cells if c.cell_type == "code")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes_on_a_tiny_run(path, tiny_run, monkeypatch):
    monkeypatch.setenv(RUNS_ENV, str(tiny_run))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the kernel computes nothing heavy
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    noise = [o.text for o in outputs if o.output_type == "stream" and "IProgress" in o.text]
    assert not noise, noise  # tqdm's notebook bars need ipywidgets (in .[dev] and .[notebooks])
    shown = "".join(o.get("data", {}).get("text/markdown", "") for o in outputs)
    assert str(tiny_run) in shown or os.path.basename(tiny_run) in shown, "it read the run it was given"
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    expected_images = {"explore_predictions": 1, "training_curves": 2, "compare_systems": 0}[path.stem]
    assert len(images) >= expected_images
