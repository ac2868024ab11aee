"""Training stages: which parameters train, decided once at setup (before any DDP wrap).

Groups:

* ``content``: content disentanglement block + content adapter
* ``descriptor``: descriptor disentanglement block + descriptor adapter
* ``lora``: the LLM's LoRA matrices and any ``modules_to_save`` copies

The speech encoder and the LLM's base weights never train. Checkpoints keep only the
*adaptable* parameters (every group above), so a stage-2 checkpoint also carries stage 1's
content weights.
"""

from __future__ import annotations

import lightning as L
from torch import nn

GROUPS = ("content", "descriptor", "lora")


def group_of(name: str) -> str | None:
    """The trainable group a parameter name belongs to, or ``None`` for frozen base weights."""
    if name.startswith("content."):
        return "content"
    if name.startswith("descriptor."):
        return "descriptor"
    if name.startswith("llm.") and ("lora_" in name or "modules_to_save" in name):
        return "lora"
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


class StageCallback(L.Callback):
    """Puts the module into one stage: freezing at ``setup``, the task of each batch."""

    def __init__(self, stage):
        self.stage = stage

    def setup(self, trainer, pl_module, stage=None):
        # Runs before the strategy wraps the model, so DDP sees the final requires_grad flags
        # and needs no find_unused_parameters.
        pl_module.set_stage(self.stage)
        names = apply_trainable(pl_module.model, list(self.stage.trainable))
        n_params = sum(p.numel() for n, p in pl_module.model.named_parameters() if n in names)
        pl_module.print(f"[{self.stage.name}] trainable groups {list(self.stage.trainable)}: "
                        f"{len(names)} tensors, {n_params:,} parameters; tasks {list(self.stage.tasks)}")
