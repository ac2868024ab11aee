"""Exact resume: SIGKILL a CPU training run at random steps (and once inside a checkpoint write),
resume with ``ckpt_path=last`` each time, and finish with the trainable weights bit-identical to
an uninterrupted run of the same seed."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from data_modules.synthcraft import generate

from conftest import TINY_LLM

pytestmark = pytest.mark.slow

# Two epochs per stage so kills land mid-epoch, at epoch boundaries and in both stages; a
# checkpoint every 2 steps so a kill usually loses (and redoes) a step.
ARGS = [
    *TINY_LLM,
    "training.stages.0.epochs=2",
    "training.stages.1.epochs=2",
    "data.max_duration=8",
    "trainer.enable_progress_bar=false",
    "trainer.checkpoint_every_n_steps=2",
    "eval.run_after_fit=false",
    "eval.val_decode_limit=2",
    "eval.max_new_tokens=4",
]

# The worker trains with the real entry point; a callback kills the process at (stage, step),
# or the checkpoint writer kills it half-way through writing its Nth file.
WORKER = textwrap.dedent("""
    import os, signal, sys
    import lightning as L
    from explainable_ser.training.checkpointing import AtomicCheckpointIO
    from explainable_ser.config import load_config
    from explainable_ser.training.recipe import run

    kill_stage, kill_step, kill_in_save = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    cfg = load_config(sys.argv[4:])

    class KillAt(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, *args):
            with open(os.path.join(cfg.run_dir, "steps.log"), "a") as f:
                f.write(f"{pl_module.stage.name} {trainer.global_step}\\n")
            if pl_module.stage.name == kill_stage and trainer.global_step == kill_step:
                os.kill(os.getpid(), signal.SIGKILL)

    class KillInSave(AtomicCheckpointIO):
        saves = 0

        def _write(self, checkpoint, tmp):
            KillInSave.saves += 1
            if KillInSave.saves == kill_in_save:
                with open(tmp, "wb") as f:
                    f.write(b"half a checkpoint")
                os.kill(os.getpid(), signal.SIGKILL)
            super()._write(checkpoint, tmp)

    run(cfg, extra_callbacks=[KillAt()], checkpoint_io=KillInSave())
""")


def launch(
    tmp: Path,
    run_dir: Path,
    corpus: Path,
    *,
    stage="none",
    step=-1,
    kill_in_save=0,
    resume=False,
    extra=(),
    outputs: dict | None = None,
) -> int:
    script = tmp / "worker.py"
    script.write_text(WORKER)
    args = [*ARGS, f"data.corpora.0.dir={corpus}", f"run_dir={run_dir}", *extra]
    if resume:
        args.append("ckpt_path=last")
    proc = subprocess.run(
        [sys.executable, str(script), stage, str(step), str(kill_in_save), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    if proc.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(proc.stderr[-3000:])
    if outputs is not None:
        outputs.update(stdout=proc.stdout, stderr=proc.stderr)
    return proc.returncode


def trainable(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "stage2" / "final.ckpt", map_location="cpu", weights_only=True)["state_dict"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthcraft")
    generate(out, n_train=24, n_dev=4, n_test=4, seed=5, progress=False)
    return out


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reference")
    assert launch(tmp, tmp / "run", corpus) == 0
    steps = [tuple(line.split()) for line in (tmp / "run" / "steps.log").read_text().splitlines()]
    return tmp / "run", [(s, int(n)) for s, n in steps]


def test_five_sigkills_at_random_steps_then_resume_gives_identical_weights(corpus, reference, tmp_path):
    ref_dir, steps = reference
    kills = sorted(random.Random(1234).sample(steps[:-1], 5), key=steps.index)
    run_dir = tmp_path / "run"
    survived = 0
    for i, (stage, step) in enumerate(kills):
        rc = launch(tmp_path, run_dir, corpus, stage=stage, step=step, resume=i > 0)
        assert rc == -signal.SIGKILL, f"run was not killed at {stage} step {step}"
        survived += 1
    assert launch(tmp_path, run_dir, corpus, resume=True) == 0
    ref, got = trainable(ref_dir), trainable(run_dir)
    assert ref.keys() == got.keys()
    different = [k for k in ref if not torch.equal(ref[k], got[k])]
    assert not different, f"after kills at {kills}: {len(different)} tensors differ, e.g. {different[:3]}"
    assert survived == 5


def test_kill_during_a_checkpoint_write_leaves_last_intact_and_resumes_exactly(corpus, reference, tmp_path):
    ref_dir, _ = reference
    run_dir = tmp_path / "run"
    # The 3rd checkpoint write of the run dies half-way: last.ckpt must still be the 2nd one.
    assert launch(tmp_path, run_dir, corpus, kill_in_save=3) == -signal.SIGKILL
    last = run_dir / "stage1" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 4
    assert (run_dir / "stage1" / "last.ckpt.tmp").read_bytes() == b"half a checkpoint"
    assert launch(tmp_path, run_dir, corpus, resume=True) == 0
    ref, got = trainable(ref_dir), trainable(run_dir)
    assert all(torch.equal(ref[k], got[k]) for k in ref)


def test_an_interrupted_stage_is_not_silently_restarted(corpus, tmp_path):
    from explainable_ser.fit import main

    run_dir = tmp_path / "run"
    assert launch(tmp_path, run_dir, corpus, stage="stage1", step=3) == -signal.SIGKILL
    args = [*ARGS, f"data.corpora.0.dir={corpus}", f"run_dir={run_dir}"]
    assert main(args) == 2  # names ckpt_path=last instead of overwriting the checkpoints


def test_a_resumed_stage_says_where_it_goes_on_and_its_times_cover_the_whole_run(corpus, tmp_path):
    """The bar keeps its total (so a time left), the log names the step, and timings.json keeps
    the killed session's phases beside the resumed one's, the resume marked."""
    import json
    import re

    run_dir = tmp_path / "run"
    bar = ["trainer.enable_progress_bar=true"]
    assert launch(tmp_path, run_dir, corpus, stage="stage2", step=5, extra=bar) == -signal.SIGKILL
    partial = json.loads((run_dir / "timings.json").read_text())  # written after each phase
    assert partial["finished"] is False and {"build", "warm_start", "stage1"} <= set(partial["seconds"])
    out: dict = {}
    assert launch(tmp_path, run_dir, corpus, resume=True, extra=bar, outputs=out) == 0
    text = out["stdout"].replace("\r", "\n")
    assert "[stage2] resumed at step 4 of " in text  # a checkpoint every 2 steps: step 4 survived
    resumed_bars = [line for line in text.splitlines() if "stage2 (2/2) epoch 1/2" in line]
    assert resumed_bars and all(re.search(r"\| \d+/\d+ \[", line) for line in resumed_bars), resumed_bars[:3]
    timings = json.loads((run_dir / "timings.json").read_text())
    assert timings["finished"] is True and len(timings["sessions"]) == 2
    assert timings["resumed"]["stage"] == "stage2" and timings["resumed"]["step"] == 4
    assert timings["resumed"]["seconds_before"] > 0
    assert timings["seconds"]["stage1"] == partial["seconds"]["stage1"]  # from the killed session
    assert timings["seconds"]["build"] == pytest.approx(
        sum(s["seconds"]["build"] for s in timings["sessions"]), abs=0.11
    )
    assert timings["seconds"]["total"] == pytest.approx(
        sum(v for k, v in timings["seconds"].items() if k != "total"), abs=0.11
    )
