"""LightningModule: per-task losses, the KL of the trained branches, optimiser and schedules."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import lightning as L
import torch

from explainable_ser.checkpointing import rng_state, set_rng_state
from explainable_ser.model import ExplainableSER
from explainable_ser.prompts import get_task, render_target
from explainable_ser.stages import adaptable_names


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
    """Wraps :class:`ExplainableSER`; a :class:`~explainable_ser.stages.StageCallback` sets the stage."""

    def __init__(self, model: ExplainableSER, cfg, run_dir: str | Path | None = None):
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.stage = None
        self.run_dir = Path(run_dir) if run_dir else None
        self.skip_counts: Counter = Counter()
        self.strict_loading = False  # checkpoints hold adaptable weights only
        self._pad_real = 0
        self._pad_total = 0

    # -- stage ---------------------------------------------------------------------------------
    def set_stage(self, stage) -> None:
        self.stage = stage

    def task_for_batch(self, batch_idx: int) -> str:
        tasks = self.stage.tasks
        return tasks[batch_idx % len(tasks)]  # alternation: one task per batch, in turn

    def current_beta(self) -> float:
        """beta: 0 for the stage's first ``kl_delay_ratio`` of steps, then a linear ramp over
        ``kl_warmup_ratio`` of the steps, then constant."""
        t = self.cfg.training
        if (t.kl_delay_ratio <= 0 and t.kl_warmup_ratio <= 0) or self._trainer is None:
            return t.beta
        steps = self.stage_steps()
        past_delay = self.trainer.global_step - t.kl_delay_ratio * steps
        if past_delay < 0:
            return 0.0
        ramp = t.kl_warmup_ratio * steps
        return t.beta * (min(1.0, past_delay / ramp) if ramp > 0 else 1.0)

    def stage_steps(self) -> int:
        """Optimiser steps of the current stage (for warm-up and the LR schedule).

        Lightning cannot size an epoch of dynamic (max-duration) batches, so the data module counts
        them; ``limit_train_batches`` and gradient accumulation are applied here.
        """
        if getattr(self, "_stage_steps", None) is None or self._stage_steps[0] != self.stage.name:
            trainer = self.trainer
            per_epoch = trainer.datamodule.train_batches_per_epoch()
            limit = trainer.limit_train_batches
            if isinstance(limit, int):
                per_epoch = min(per_epoch, limit)
            elif isinstance(limit, float) and limit < 1.0:
                per_epoch = max(1, int(per_epoch * limit))
            steps = math.ceil(per_epoch / trainer.accumulate_grad_batches) * self.stage.epochs
            if self.stage.max_steps:
                steps = min(steps, self.stage.max_steps)
            self._stage_steps = (self.stage.name, max(1, steps))
        return self._stage_steps[1]

    def trained_branches(self) -> list[str]:
        return [g for g in ("content", "descriptor") if g in self.stage.trainable]

    # -- shared step ---------------------------------------------------------------------------
    def _select(self, batch, task_name: str):
        """Keep the utterances that have every field the task's target needs."""
        task = get_task(task_name)
        labels = set(self.cfg.training.labels)
        prompts = self.model.prompts
        # Text tokens must leave the LLM's context room (speech tokens come on top).
        room = getattr(getattr(self.model.llm, "config", None), "max_position_embeddings", None)
        if room is not None:
            room -= sum(len(p) for p in prompts.pieces(task))
        keep, targets = [], []
        for i, rec in enumerate(batch["records"]):
            if "emotion" in task.fields and rec.get("emotion") is not None \
                    and rec["emotion"] not in labels:
                self._skip(rec["id"], f"unknown_emotion_for_{task_name}")
                continue
            target = render_target(task, rec)
            if target is None:
                self._skip(rec["id"], f"missing_field_for_{task_name}")
                continue
            if room is not None and len(prompts.target_ids(target)) > room:
                self._skip(rec["id"], f"sequence_too_long_for_{task_name}")
                continue
            keep.append(i)
            targets.append(target)
        if not keep:
            return None
        idx = torch.tensor(keep, device=batch["wave"].device)
        lens = batch["wave_lens"][idx]
        wave = batch["wave"][idx, : int(lens.max())]
        return task, wave, lens, targets

    def _skip(self, utt_id: str, reason: str) -> None:
        self.skip_counts[reason] += 1
        if self.run_dir is not None and self.global_rank == 0:
            with open(self.run_dir / "skipped.jsonl", "a") as f:
                f.write(json.dumps({"id": utt_id, "reason": reason,
                                    "stage": self.stage.name if self.stage else None}) + "\n")

    def _losses(self, batch, task_name: str, *, train: bool, zero_speech: bool = False):
        sel = self._select(batch, task_name)
        if sel is None:
            return None
        task, wave, lens, targets = sel
        trained = self.trained_branches()
        out = self.model(
            wave, lens, task, targets,
            sample_content=train and "content" in trained,
            sample_descriptor=train and "descriptor" in trained,
            zero_descriptor=self.stage.zero_descriptor or zero_speech,
            zero_content=zero_speech)
        ce = out["ce"].mean()  # summed over target tokens, averaged over utterances
        kl = {b: out[f"kl_{b}"].mean() for b in ("content", "descriptor")}
        loss = ce + self.current_beta() * sum(kl[b] for b in trained)
        return {"loss": loss, "ce": ce, "ce_per_token": out["ce_per_token"].mean(), "kl": kl,
                "n": len(targets)}

    # -- training ------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        self._nothing_trained = False
        for s in batch["skipped"]:
            self._skip(s["id"], s["reason"])
        if len(batch["ids"]) == 0:
            return self._no_step()  # every clip of this batch was unusable
        task_name = self.task_for_batch(batch_idx)
        res = self._losses(batch, task_name, train=True)
        if res is None:
            return self._no_step()
        if not torch.isfinite(res["loss"]):
            self.skip_counts["non_finite_loss"] += 1
            self.log("train/non_finite_loss_steps", float(self.skip_counts["non_finite_loss"]))
            return self._no_step()  # skip the step rather than poison the weights
        n = res["n"]
        self.log(f"train/loss_{task_name}", res["loss"], batch_size=n, prog_bar=True)
        self.log(f"train/ce_{task_name}", res["ce"], batch_size=n)
        self.log(f"train/ce_per_token_{task_name}", res["ce_per_token"], batch_size=n)
        for b in ("content", "descriptor"):
            self.log(f"train/kl_{b}", res["kl"][b], batch_size=n)
        self.log("train/beta", self.current_beta(), batch_size=n)
        self.log("train/padding_efficiency", batch["padding_efficiency"], batch_size=n)
        lens = batch["wave_lens"]
        self._pad_real += int(lens.sum())
        self._pad_total += int(lens.max()) * lens.numel()
        return res["loss"]

    def _no_step(self) -> torch.Tensor:
        """A zero loss tied to the trainable weights, for a batch that trains nothing. Returning
        ``None`` would skip backward on this rank only and hang the others' gradient all-reduce;
        when every rank has nothing, :meth:`on_before_optimizer_step` skips the update."""
        self._nothing_trained = True
        return sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0

    def on_train_epoch_end(self):
        if self._pad_total:
            self.log("train/epoch_padding_efficiency", self._pad_real / self._pad_total)
        self._pad_real = self._pad_total = 0
        for reason, count in self.skip_counts.items():
            self.log(f"skipped/{reason}", float(count))
        if self.skip_counts:
            where = f" (ids in {self.run_dir / 'skipped.jsonl'})" if self.run_dir else ""
            self.print(f"[{self.stage.name}] epoch {self.current_epoch}: skipped so far "
                       f"{dict(self.skip_counts)}{where}")
        self.log_layer_weights()

    def log_layer_weights(self):
        for b in ("content", "descriptor"):
            w = getattr(self.model, b).block.layer_weights().detach().cpu()
            for i, v in enumerate(w.tolist()):
                self.log(f"layer_weights/{b}/{i:02d}", v)

    # -- validation ----------------------------------------------------------------------------
    def on_validation_epoch_start(self):
        self._val_rows: list[dict] = []

    def validation_step(self, batch, batch_idx):
        if len(batch["ids"]) == 0:
            return
        self._decode_for_curves(batch)
        for task_name in dict.fromkeys(self.stage.tasks):
            for zero, suffix in ((False, ""), (True, "_no_speech")):
                res = self._losses(batch, task_name, train=False, zero_speech=zero)
                if res is None:
                    continue
                self.log(f"val/ce_per_token_{task_name}{suffix}", res["ce_per_token"], batch_size=res["n"],
                         sync_dist=True, prog_bar=not zero)

    def on_before_optimizer_step(self, optimizer):
        """A non-finite gradient skips the optimiser step (counted) instead of poisoning the
        weights. Runs after backward (and the DDP all-reduce), before clipping. Setting the
        grads to ``None`` makes AdamW leave those parameters and their moments untouched
        (zeroed grads would still move them through the moments and weight decay)."""
        params = [p for group in optimizer.param_groups for p in group["params"]]
        grads = [p.grad for p in params if p.grad is not None]
        bad = bool(grads) and not bool(torch.stack([torch.isfinite(g).all() for g in grads]).all())
        # Sharded grads (FSDP) differ per rank: skip everywhere if any rank saw a bad one.
        if self.trainer.strategy.reduce_boolean_decision(bad, all=False):
            for p in params:
                p.grad = None
            self.skip_counts["non_finite_grad"] += 1
            self.log("train/non_finite_grad_steps", float(self.skip_counts["non_finite_grad"]))
            return
        # Every rank's batch trained nothing (all its grads are exact zeros): no update at all,
        # not even AdamW's moments and weight decay.
        if self.trainer.strategy.reduce_boolean_decision(getattr(self, "_nothing_trained", False), all=True):
            for p in params:
                p.grad = None

    # -- optimiser -----------------------------------------------------------------------------
    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        fused = self.cfg.training.fused_adamw and all(p.is_cuda for p in params)
        opt = torch.optim.AdamW(params, lr=self.stage.lr, weight_decay=self.cfg.training.weight_decay,
                                fused=fused or None)
        total = self.stage_steps()
        warmup = int(round(self.stage.warmup_ratio * total))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(warmup, total, self.stage.scheduler))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # -- checkpoints: adaptable weights only, plus what an exact resume needs -------------------
    def on_save_checkpoint(self, checkpoint):
        keep = {f"model.{n}" for n in adaptable_names(self.model)}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}
        checkpoint["stage_name"] = self.stage.name if self.stage else None
        # One state per rank (each rank draws its own dropout masks); saving runs on every rank.
        checkpoint["rng"] = self._gather_objects(rng_state())
        checkpoint["skip_counts"] = dict(self.skip_counts)

    def on_load_checkpoint(self, checkpoint):
        if self.stage is not None and checkpoint.get("stage_name") not in (None, self.stage.name):
            raise ValueError(f"checkpoint of stage {checkpoint['stage_name']!r} cannot resume "
                             f"stage {self.stage.name!r}")
        # Applied at the first training batch, not now: between loading and that batch Lightning
        # still draws from the generators (sanity validation, the loader's base seed), which an
        # uninterrupted run did not do at this point.
        states = checkpoint.get("rng") or [None]
        self._pending_rng = states[self.global_rank] if self.global_rank < len(states) else None
        self.skip_counts = Counter(checkpoint.get("skip_counts", {}))

    def _gather_objects(self, obj) -> list:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            out = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(out, obj)
            return out
        return [obj]

    def on_train_batch_start(self, batch, batch_idx):
        if getattr(self, "_pending_rng", None) is not None:
            set_rng_state(self._pending_rng)
            self._pending_rng = None

    # -- decoded validation metrics for TensorBoard ---------------------------------------------
    def _decode_for_curves(self, batch) -> None:
        from explainable_ser.evaluate import decode_batch

        room = self.cfg.eval.val_decode_limit - len({r["id"] for r in self._val_rows})
        if room <= 0 or self.trainer.sanity_checking:
            return
        lens = batch["wave_lens"][:room]
        wave = batch["wave"][:room, : int(lens.max())]
        tasks = list(dict.fromkeys(self.stage.tasks))
        self._val_rows += decode_batch(self.model, wave, lens, batch["records"][:room], tasks, self.cfg,
                                       zero_descriptor=self.stage.zero_descriptor)

    def on_validation_epoch_end(self):
        if self.trainer.sanity_checking or self.cfg.eval.val_decode_limit <= 0:
            return
        from explainable_ser.evaluate import _gather, compute_metrics
        from explainable_ser.plots import confusion_figure, layer_weights_figure, predictions_table

        # Gather before any early return: it is a collective, and a rank whose shard decoded
        # nothing must still take part or the others wait forever.
        rows = _gather(getattr(self, "_val_rows", []))
        if not rows:
            return
        labels = list(self.cfg.training.labels)
        # METEOR (a JVM per call) and SPICE are left to the final evaluation.
        m = compute_metrics(rows, labels, caption_metrics=("bleu4", "rouge_l", "cider"),
                            language=self.cfg.eval.caption_language)
        for key in ("ua", "wa", "macro_f1", "wer", "bleu4", "rouge_l", "cider"):
            if isinstance(m.get(key), float):
                self.log(f"val/{key}", m[key], rank_zero_only=True)
        aa = m.get("attribute_accuracy") or {}
        for key, value in (aa.get("accuracy") or {}).items():
            if value is not None:
                self.log(f"val/attribute_accuracy/{key}", value, rank_zero_only=True)
        writer = getattr(self.logger, "experiment", None)
        if self.global_rank != 0 or writer is None or not hasattr(writer, "add_figure"):
            return
        step = self.global_step
        writer.add_text("val/predictions", predictions_table(rows), step)
        if m["ua"] is not None:
            writer.add_figure("val/confusion", confusion_figure(m["confusion"], labels), step)
        weights = {b: getattr(self.model, b).block.layer_weights().tolist() for b in ("content", "descriptor")}
        writer.add_figure("layer_weights", layer_weights_figure(weights), step)
