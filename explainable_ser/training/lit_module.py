"""LightningModule: one training step per batch, the optimiser and its schedule.

A batch arrives with its task and targets chosen by the data module (``batch["task"]``,
``batch["targets"]``); the step computes the loss and logs. The objective is the model's
(:meth:`explainable_ser.model.ser.ExplainableSER.loss`); the stage
(what trains, which tasks, how many steps) is set by
:class:`~explainable_ser.training.stages.StageCallback`; skip logging, gradient guards, RNG restore and
validation decoding are callbacks (:mod:`explainable_ser.training.callbacks`).
"""

from __future__ import annotations

import math
from collections import Counter

import lightning as L
import torch

from data_modules.records import field_labels
from explainable_ser.model.prompts import get_task
from explainable_ser.model.ser import ExplainableSER
from explainable_ser.training.stages import adaptable_names, group_of, kl_weight


def lr_lambda(warmup: int, total: int, schedule: str):
    """Linear warm-up over ``warmup`` steps, then constant or cosine to zero."""

    def f(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        if schedule == "cosine":
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        raise ValueError(f"unknown scheduler {schedule!r} (constant or cosine)")

    return f


class ExplainableSERModule(L.LightningModule):
    """Wraps :class:`ExplainableSER` for one stage at a time."""

    def __init__(self, model: ExplainableSER, cfg):
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.stage = None
        self.stage_steps = 1  # optimiser steps of the stage (set with the stage)
        self.skip_counts: Counter = Counter()  # reason -> count, kept in checkpoints
        self.pending_skips: list[dict] = []  # written out by callbacks.SkipLog
        self.nothing_trained = False  # this rank's last batch trained nothing
        self.strict_loading = False  # checkpoints hold adaptable weights only
        self._pad_real = 0
        self._pad_total = 0

    def set_stage(self, stage, steps: int) -> None:
        self.stage = stage
        self.stage_steps = max(1, steps)

    def current_beta(self) -> float:
        t = self.cfg.training
        step = self.trainer.global_step if self._trainer is not None else None
        return kl_weight(t.beta, step, self.stage_steps, t.kl_delay_ratio, t.kl_warmup_ratio)

    def trained_branches(self) -> list[str]:
        return [g for g in ("content", "descriptor") if g in self.stage.trainable]

    def skip(self, utt_id: str, reason: str) -> None:
        self.skip_counts[reason] += 1
        self.pending_skips.append({"id": utt_id, "reason": reason, "stage": self.stage.name if self.stage else None})

    # -- shared step ---------------------------------------------------------------------------
    def _losses(self, batch, task_name: str, *, train: bool, zero_speech: bool = False):
        if "targets" not in batch:
            raise ValueError(
                "the batch carries no targets: batches come from SpeechDataModule with its "
                "target_selector set (build() in the training assembly sets it), or through its with_targets()"
            )
        task = get_task(task_name)
        chosen = batch["targets"][task_name]  # chosen on the data side
        keep, targets = chosen["keep"], chosen["texts"]
        if not keep:
            return None
        idx = torch.tensor(keep, device=batch["wave"].device)
        lens = batch["wave_lens"][idx]
        wave = batch["wave"][idx, : int(lens.max())]
        concept = dict(concept_labels=None, concept_weight=0.0)
        if self.stage.concept_weight > 0 and not zero_speech:
            labels = field_labels(self.model.descriptor.concepts.classes, [batch["records"][i] for i in keep])
            concept = dict(concept_labels=labels, concept_weight=self.stage.concept_weight)
        res = self.model.loss(
            wave,
            lens,
            task,
            targets,
            beta=self.current_beta(),
            trained=self.trained_branches(),
            sample=train,
            zero_descriptor=self.stage.zero_descriptor or zero_speech,
            zero_content=zero_speech,
            kl_reduction=self.cfg.training.kl_reduction,
            value_weight=self.cfg.training.value_weight if train else 1.0,
            **concept,
        )
        return {**res, "n": len(targets)}

    # -- training ------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        self.nothing_trained = False
        for s in batch["skipped"]:
            self.skip(s["id"], s["reason"])
        if len(batch["ids"]) == 0:
            return self._no_step()  # every clip of this batch was unusable
        task_name = batch.get("task")  # the data module's turn; None for the SSL baselines
        for utt_id, reason in batch.get("targets", {}).get(task_name, {}).get("skipped", ()):
            self.skip(utt_id, reason)
        res = self._losses(batch, task_name, train=True)
        if res is None:
            return self._no_step()
        if not torch.isfinite(res["loss"]):
            self.skip_counts["non_finite_loss"] += 1
            self.log("train/non_finite_loss_steps", float(self.skip_counts["non_finite_loss"]))
            return self._no_step()  # skip the step rather than poison the weights
        self.log_train_step(res, task_name, batch)
        return res["loss"]

    def log_train_step(self, res: dict, task_name: str, batch) -> None:
        n = res["n"]
        self.log(f"train/loss_{task_name}", res["loss"], batch_size=n)
        self.log(f"train/ce_{task_name}", res["ce"], batch_size=n)
        # on the bar in the unit validation reports (the loss sums over tokens and adds the KL)
        self.log(f"train/ce_per_token_{task_name}", res["ce_per_token"], batch_size=n, prog_bar=True)
        for b in ("content", "descriptor"):
            self.log(f"train/kl_{b}", res["kl"][b], batch_size=n)
        if "concept_ce" in res:
            self.log("train/concept_ce", res["concept_ce"], batch_size=n)
        self.log("train/beta", self.current_beta(), batch_size=n)
        self.log("train/padding_efficiency", batch["padding_efficiency"], batch_size=n)
        lens = batch["wave_lens"]
        self._pad_real += int(lens.sum())
        self._pad_total += int(lens.max()) * lens.numel()

    def _no_step(self) -> torch.Tensor:
        """A zero loss tied to the trainable weights, for a batch that trains nothing. Returning
        ``None`` would skip backward on this rank only and hang the others' gradient all-reduce;
        when every rank has nothing, :class:`~explainable_ser.training.callbacks.GradientGuard` skips
        the update."""
        self.nothing_trained = True
        return sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0

    def on_train_epoch_end(self):
        if self._pad_total:
            self.log("train/epoch_padding_efficiency", self._pad_real / self._pad_total)
        self._pad_real = self._pad_total = 0
        for b, w in self.model.layer_weights().items():
            for i, v in enumerate(w.detach().cpu().tolist()):
                self.log(f"layer_weights/{b}/{i:02d}", v)

    # -- validation: teacher-forced cross-entropy, with and without the speech ------------------
    def validation_step(self, batch, batch_idx):
        if len(batch["ids"]) == 0:
            return
        for task_name in dict.fromkeys(self.stage.tasks):
            for utt_id, reason in batch["targets"][task_name]["skipped"]:
                self.skip(utt_id, reason)
            for zero, suffix in ((False, ""), (True, "_no_speech")):
                res = self._losses(batch, task_name, train=False, zero_speech=zero)
                if res is None:
                    continue
                self.log(
                    f"val/ce_per_token_{task_name}{suffix}",
                    res["ce_per_token"],
                    batch_size=res["n"],
                    sync_dist=True,
                    prog_bar=not zero,
                )

    # -- optimiser -----------------------------------------------------------------------------
    def configure_optimizers(self):
        named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        fused = self.cfg.training.fused_adamw and all(p.is_cuda for _, p in named)
        groups: list = [p for _, p in named]
        if self.stage.lr_scale:  # one named group per trainable group; LambdaLR scales each one's lr
            by_group: dict[str, list] = {}
            for n, p in named:
                by_group.setdefault(group_of(n), []).append(p)
            groups = [
                {"params": ps, "name": g, "lr": self.stage.lr * self.stage.lr_scale.get(g, 1.0)}
                for g, ps in by_group.items()
            ]
        opt = torch.optim.AdamW(
            groups, lr=self.stage.lr, weight_decay=self.cfg.training.weight_decay, fused=fused or None
        )
        total = self.stage_steps
        warmup = int(round(self.stage.warmup_ratio * total))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(warmup, total, self.stage.scheduler))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # -- checkpoints: adaptable weights only, the stage and the skip counts ---------------------
    def on_save_checkpoint(self, checkpoint):
        keep = {f"model.{n}" for n in adaptable_names(self.model)}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}
        checkpoint["stage_name"] = self.stage.name if self.stage else None
        checkpoint["skip_counts"] = dict(self.skip_counts)

    def on_load_checkpoint(self, checkpoint):
        if self.stage is not None and checkpoint.get("stage_name") not in (None, self.stage.name):
            raise ValueError(
                f"checkpoint of stage {checkpoint['stage_name']!r} cannot resume stage {self.stage.name!r}"
            )
        self.skip_counts = Counter(checkpoint.get("skip_counts", {}))
