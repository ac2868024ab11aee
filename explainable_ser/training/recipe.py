"""The training recipe: the stages of one experiment, one ``Trainer.fit`` each, then evaluation.

:func:`run` prepares the data side (:func:`explainable_ser.training.preparation.prepare`), builds
the model (:func:`explainable_ser.training.assembly.build`), warm-starts the branches when the
config asks (the demo; :mod:`explainable_ser.offline.warmstart`), trains every
unfinished stage with its callbacks (resumable from ``last.ckpt``), and evaluates on the test
split. The entry point is :mod:`explainable_ser.fit`.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.strategies import FSDPStrategy
from lightning.pytorch.utilities import rank_zero_only

from explainable_ser.config import ConfigError, ExperimentConfig, to_yaml
from explainable_ser.evaluation.pipeline import evaluate_module
from explainable_ser.offline.warmstart import ensure_warm_start
from explainable_ser.training import provenance
from explainable_ser.training.assembly import build, compute_device
from explainable_ser.training.callbacks import (
    GradientGuard,
    RngRestore,
    SkipLog,
    StageProgressBar,
    StageTimer,
    ValidationDecoding,
)
from explainable_ser.training.checkpointing import (
    AtomicCheckpointIO,
    check_compatible,
    load_adaptable,
    read_checkpoint,
    resume_checkpoint,
)
from explainable_ser.training.preparation import prepare
from explainable_ser.training.stages import StageCallback


def trainer_kwargs(cfg: ExperimentConfig, model: torch.nn.Module | None = None) -> dict:
    t = cfg.trainer
    kw = dict(
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=strategy(t.strategy, model),
        precision=t.precision,
        gradient_clip_val=t.gradient_clip_val,
        accumulate_grad_batches=t.accumulate_grad_batches,
        log_every_n_steps=t.log_every_n_steps,
        val_check_interval=t.val_check_interval,
        enable_progress_bar=t.enable_progress_bar,
    )
    if t.limit_train_batches is not None:
        kw["limit_train_batches"] = t.limit_train_batches
    if t.limit_val_batches is not None:
        kw["limit_val_batches"] = t.limit_val_batches
    return kw


def strategy(name: str, model: torch.nn.Module | None):
    """``fsdp`` shards each LLM decoder layer as its own unit (one unit for the whole model
    would gather all 8B weights at once); other names go to Lightning as they are. DDP needs
    no ``find_unused_parameters``: stages freeze parameters before the model is wrapped."""
    if name != "fsdp" or model is None:
        return name
    if not torch.cuda.is_available():  # Lightning's FSDP runs on CUDA devices only
        raise ConfigError("trainer.strategy=fsdp needs CUDA GPUs; use ddp (or auto) on CPU")
    dtypes = {p.dtype for p in model.parameters()}
    if len(dtypes) > 1:  # FSDP flattens each unit's parameters into one tensor
        raise ConfigError(
            f"trainer.strategy=fsdp needs one parameter dtype, the model has "
            f"{sorted(map(str, dtypes))}: set model.llm.dtype and model.encoder.dtype "
            f"to float32 (or auto) and trainer.precision=bf16-mixed, which computes in bf16"
        )

    layer = type(model.llm.get_base_model().model.layers[0])
    return FSDPStrategy(auto_wrap_policy={layer}, state_dict_type="full")


def checkpoint_callback(cfg: ExperimentConfig, stage_dir: Path):
    every = cfg.trainer.checkpoint_every_n_steps
    return L.pytorch.callbacks.ModelCheckpoint(
        dirpath=str(stage_dir), save_last=True, save_top_k=0, every_n_train_steps=every if every and every > 0 else None
    )


def earlier_sessions(run_dir: Path, cfg: ExperimentConfig) -> list[dict]:
    """The sessions an earlier ``timings.json`` of this run recorded, when this session goes on
    with that run (a stage already finished, or a resume); otherwise none (a fresh start)."""
    path = run_dir / "timings.json"
    goes_on = cfg.ckpt_path is not None or any((run_dir / s.name / "final.ckpt").exists() for s in cfg.training.stages)
    if not goes_on or not path.is_file():
        return []
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        print(f"note: {path} is unreadable; the earlier sessions' times are not carried over")
        return []
    if "sessions" in old:
        return list(old["sessions"])
    return [{k: v for k, v in old.items() if k != "sessions"}]  # a file from a single session


def write_timings(
    run_dir: Path,
    info: dict,
    seconds: dict,
    earlier: list[dict] | None = None,
    resumed: dict | None = None,
    finished: bool = True,
) -> str:
    """``timings.json`` and its one-line form. The file is the latest session's provenance
    (:mod:`explainable_ser.training.provenance`) with ``seconds``, the wall seconds per phase of the whole
    run: with earlier sessions (a resumed or continued run, listed under ``sessions``) each
    phase sums what every session spent on it, a resumed stage counting its time up to the
    checkpoint it resumed from, and ``total`` is the sum of the phases. Written after each
    phase with ``finished`` false, so a killed run leaves the phases it completed."""
    info = {**provenance.finish(info), "seconds": {k: round(v, 1) for k, v in seconds.items()}, "finished": finished}
    if resumed:
        info["resumed"] = resumed
    if earlier:
        merged: dict[str, float] = {}
        for session in [*earlier, info]:
            for k, v in session.get("seconds", {}).items():
                if k != "total":
                    merged[k] = merged.get(k, 0.0) + v
        merged["total"] = sum(merged.values())
        info = {
            **info,
            "seconds": {k: round(v, 1) for k, v in merged.items()},
            "sessions": [*earlier, {k: v for k, v in info.items()}],
        }
    (run_dir / "timings.json").write_text(json.dumps(info, indent=2) + "\n")
    shown = info["seconds"]
    total = shown.get("total", 0.0)
    parts = ", ".join(f"{k} {v:.0f} s" for k, v in shown.items() if k != "total")
    over = f" over {len(earlier) + 1} sessions" if earlier else ""
    return (
        f"time      {parts}; total {int(total // 60)} min {total % 60:.0f} s{over} at load "
        f"{info['load_average_start'][0]} ({run_dir / 'timings.json'})"
    )


def run(
    cfg: ExperimentConfig, extra_callbacks: list | None = None, checkpoint_io=None, command: str | None = None
) -> Path:
    """Train every unfinished stage, then evaluate. ``extra_callbacks`` and ``checkpoint_io``
    are for programmatic use (tests inject faults through them); ``command``, the command line,
    goes into ``timings.json``."""
    # The frozen encoder and LLM sit in eval mode on purpose (no dropout in frozen parts).
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
    run_dir = cfg.resolved_run_dir()
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(to_yaml(cfg))
    earlier = earlier_sessions(run_dir, cfg)
    info, seconds, start = provenance.start(command), {}, time.perf_counter()
    resumed: dict = {}

    def save_timings(finished: bool = False) -> str:
        if rank_zero_only.rank != 0:  # one writer under DDP (every rank runs this function)
            return ""
        return write_timings(run_dir, info, seconds, earlier, resumed, finished)

    L.seed_everything(cfg.seed, workers=True)
    dm = prepare(cfg, run_dir)  # the built-in corpus generated, made fields checked, a CTC encoder trained
    dm, module = build(cfg, run_dir, dm)  # tokenizer, model (packaged models fetched on first use)
    seconds["build"] = time.perf_counter() - start
    t0 = time.perf_counter()
    if ensure_warm_start(cfg, dm, module.model, run_dir) or not earlier:
        seconds["warm_start"] = time.perf_counter() - t0  # not when it only loaded an earlier one
    global_rank = 0
    used_ckpt = cfg.ckpt_path in (None, "last") or Path(cfg.ckpt_path).resolve() == run_dir.resolve()
    for index, stage in enumerate(cfg.training.stages):
        stage_dir = run_dir / stage.name
        final = stage_dir / "final.ckpt"
        if final.exists():  # finished earlier: carry its weights into the next stage
            print(f"[{stage.name}] already finished, loading {final}")
            load_adaptable(module, final)
            continue
        resume = resume_checkpoint(cfg.ckpt_path, run_dir, stage.name)
        if resume is None and (stage_dir / "last.ckpt").exists():
            raise ConfigError(
                f"stage {stage.name} of {run_dir} was interrupted ({stage_dir / 'last.ckpt'} "
                f"exists): pass ckpt_path=last to resume it, or choose another run_dir"
            )
        if not used_ckpt and resume is None:  # a file that belongs to no stage that is left to train
            raise ConfigError(
                f"ckpt_path {cfg.ckpt_path} is not a checkpoint of the next unfinished "
                f"stage of {run_dir} ({stage.name}); pass ckpt_path=last"
            )
        used_ckpt = True  # only the first unfinished stage resumes from a given file
        if resume is not None:
            check_compatible(module, read_checkpoint(resume), resume)
            print(f"[{stage.name}] resuming from {resume}")
            resumed = {"stage": stage.name, "from": str(resume)}
        save_timings()
        timer = StageTimer(time.perf_counter())
        logger = L.pytorch.loggers.TensorBoardLogger(str(run_dir), name="tensorboard", version=stage.name)
        trainer = L.Trainer(
            max_epochs=stage.epochs,
            max_steps=stage.max_steps or -1,
            logger=logger,
            default_root_dir=str(run_dir),
            callbacks=[
                StageCallback(stage),
                timer,
                SkipLog(run_dir),
                GradientGuard(),
                RngRestore(),
                ValidationDecoding(cfg),
                checkpoint_callback(cfg, stage_dir),
                L.pytorch.callbacks.LearningRateMonitor(logging_interval="step"),
                *(
                    [StageProgressBar(cfg.name, stage, len(cfg.training.stages), index)]
                    if cfg.trainer.enable_progress_bar
                    else []
                ),
                *(extra_callbacks or []),
            ],
            plugins=[checkpoint_io or AtomicCheckpointIO()],
            use_distributed_sampler=False,  # the lhotse sampler shards across ranks itself
            **trainer_kwargs(cfg, module.model),
        )
        # Each stage starts from its own seed, so a stage started after a restart draws the same
        # random numbers as in an uninterrupted run (a resumed one restores them from its checkpoint).
        L.seed_everything(cfg.seed + index, workers=True, verbose=False)
        timer.start = time.perf_counter()
        trainer.fit(module, datamodule=dm, ckpt_path=str(resume) if resume else None)
        seconds[stage.name] = timer.seconds()
        if resume is not None:
            resumed.update(step=timer.first_step, seconds_before=round(timer.before, 1))
        trainer.save_checkpoint(final, weights_only=False)  # with the optimiser state, as last.ckpt
        global_rank = trainer.global_rank
        print(f"[{stage.name}] done: checkpoint {final}, TensorBoard {logger.log_dir}")
        save_timings()
    if cfg.eval.run_after_fit and global_rank == 0:
        # After a DDP fit every rank is still running this script; one process decodes the
        # whole test split and writes the outputs (others would race on the same files).
        module.to(compute_device(cfg))  # the Trainer hands the model back on the CPU
        eval_start = time.perf_counter()
        evaluate_module(module, dm, cfg, run_dir, world_size=1, rank=0, run_dir=run_dir)
        seconds["evaluation"] = time.perf_counter() - eval_start
    if global_rank == 0:
        seconds["total"] = time.perf_counter() - start
        line = save_timings(finished=True)
        print(line)
        if (run_dir / "summary.txt").exists():
            with open(run_dir / "summary.txt", "a") as f:
                f.write(line + "\n")
    print(f"run directory: {run_dir}")
    return run_dir
