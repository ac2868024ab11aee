"""Training stages: which parameters train, decided once at setup (before any DDP wrap).

Groups:

* ``content``: content disentanglement block + content adapter
* ``descriptor``: descriptor disentanglement block + descriptor adapter
* ``concepts``: the descriptor branch's concept heads (``model.branch.concepts``, not in the paper)
* ``lora``: the LLM's LoRA matrices and any ``modules_to_save`` copies
* ``classifier``: the heads of a discriminative SSL baseline (layer sums, classifier, CTC)

The speech encoder and the LLM's base weights never train. Checkpoints keep only the
*adaptable* parameters (every group above), so a stage-2 checkpoint also carries stage 1's
content weights.

A stage also fixes its length in optimiser steps (:func:`stage_steps`: the LR schedule and the
KL schedule :func:`kl_weight` span it).
"""

from __future__ import annotations

import math

import lightning as L
from torch import nn
from tqdm.auto import tqdm

GROUPS = ("content", "descriptor", "concepts", "lora", "classifier")


def group_of(name: str) -> str | None:
    """The trainable group a parameter name belongs to, or ``None`` for frozen base weights."""
    if name.startswith("content."):
        return "content"
    if name.startswith("descriptor.concepts."):
        return "concepts"
    if name.startswith("descriptor."):
        return "descriptor"
    if name.startswith("llm.") and ("lora_" in name or "modules_to_save" in name):
        return "lora"
    if name.startswith("heads."):  # the SSL baselines (explainable_ser.model.baseline)
        return "classifier"
    return None


def adaptable_names(model: nn.Module) -> set[str]:
    """Parameters that any stage may train (what checkpoints hold)."""
    return {n for n, _ in model.named_parameters() if group_of(n) is not None}


def trainable_names(model: nn.Module, groups: list[str]) -> set[str]:
    unknown = set(groups) - set(GROUPS)
    if unknown:
        raise ValueError(f"unknown trainable group(s) {sorted(unknown)}; known: {GROUPS}")
    return {n for n, _ in model.named_parameters() if group_of(n) in groups}


def apply_trainable(model: nn.Module, groups: list[str]) -> set[str]:
    """Set ``requires_grad`` for exactly the given groups; returns the trainable names."""
    names = trainable_names(model, groups)
    for n, p in model.named_parameters():
        p.requires_grad_(n in names)
    return names


def kl_weight(beta: float, step: int | None, steps: int, delay_ratio: float, warmup_ratio: float) -> float:
    """beta at optimiser ``step`` of a stage of ``steps``: 0 for the first ``delay_ratio`` of the
    steps, then a linear ramp over ``warmup_ratio`` of them, then ``beta`` (the paper: both 0,
    beta throughout; ``step=None``, outside a Trainer: ``beta``)."""
    if (delay_ratio <= 0 and warmup_ratio <= 0) or step is None:
        return beta
    past_delay = step - delay_ratio * steps
    if past_delay < 0:
        return 0.0
    ramp = warmup_ratio * steps
    return beta * (min(1.0, past_delay / ramp) if ramp > 0 else 1.0)


def batches_per_epoch(trainer) -> int:
    """Training batches of one epoch: the data module's count (Lightning cannot size an epoch of
    dynamic max-duration batches) after ``limit_train_batches``."""
    per_epoch = trainer.datamodule.train_batches_per_epoch()
    limit = trainer.limit_train_batches
    if isinstance(limit, int):
        per_epoch = min(per_epoch, limit)
    elif isinstance(limit, float) and limit < 1.0:
        per_epoch = max(1, int(per_epoch * limit))
    return per_epoch


def stage_steps(stage, trainer) -> int:
    """Optimiser steps of a stage: its epochs of :func:`batches_per_epoch`, after gradient
    accumulation, capped by the stage's ``max_steps``."""
    per_epoch = batches_per_epoch(trainer)
    steps = math.ceil(per_epoch / trainer.accumulate_grad_batches) * stage.epochs
    if stage.max_steps:
        steps = min(steps, stage.max_steps)
    return max(1, steps)


def say(trainer, text: str) -> None:
    """One line on rank 0, whether or not a progress bar is drawn (``LightningModule.print``
    drops its text while the bar callback has no bar yet, as in ``setup``)."""
    if trainer.is_global_zero:
        tqdm.write(text)


class StageCallback(L.Callback):
    """Puts the module into one stage: freezing and the stage's length at ``setup``."""

    def __init__(self, stage):
        self.stage = stage

    def setup(self, trainer, pl_module, stage=None):
        # Runs before the strategy wraps the model, so DDP sees the final requires_grad flags
        # and needs no find_unused_parameters.
        pl_module.set_stage(self.stage, stage_steps(self.stage, trainer))
        if hasattr(trainer.datamodule, "tasks"):  # batches take the stage's tasks in turn
            trainer.datamodule.tasks = list(self.stage.tasks)
        names = apply_trainable(pl_module.model, list(self.stage.trainable))
        n_params = sum(p.numel() for n, p in pl_module.model.named_parameters() if n in names)
        say(
            trainer,
            f"[{self.stage.name}] trainable groups {list(self.stage.trainable)}: "
            f"{len(names)} tensors, {n_params:,} parameters; tasks {list(self.stage.tasks)}",
        )

    def on_train_start(self, trainer, pl_module):
        # After Lightning restored the loops: where a resumed stage goes on from.
        if trainer.global_step > 0:
            batch = trainer.fit_loop.epoch_loop.batch_progress.current.ready
            total = pl_module.stage_steps or "?"
            say(
                trainer,
                f"[{self.stage.name}] resumed at step {trainer.global_step} of {total} "
                f"(epoch {trainer.current_epoch + 1} of {trainer.max_epochs}, "
                f"{batch} batches of it done)",
            )
