"""Lightning callbacks of the training recipe: what a run does around the optimisation itself.

* :class:`SkipLog`: writes every skipped utterance to ``skipped.jsonl`` and logs the counts.
* :class:`GradientGuard`: a non-finite gradient, or a step on which no rank trained anything,
  leaves the weights and AdamW's moments untouched.
* :class:`RngRestore`: every rank's random generators go into each checkpoint and come back at
  the first batch after a resume, so the rest of the run draws what an uninterrupted run drew.
* :class:`StageProgressBar`: the training bar with its total (so an ETA) per stage, the run
  and stage in its description, per-token cross-entropies beside each other.
* :class:`StageTimer`: the stage's seconds so far, saved in each checkpoint, so a resumed stage
  counts the time it had spent up to its last checkpoint.
* :class:`ValidationDecoding`: decodes a few validation utterances per epoch for the UA / WER
  curves (torchmetrics states, summed over DDP ranks) and the caption curves, a confusion
  matrix, a predictions table and the layer weights in TensorBoard.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import lightning as L
import torch
from torchmetrics.classification import MulticlassConfusionMatrix
from torchmetrics.text import WordErrorRate

from explainable_ser.evaluation.asr import normalize_text
from explainable_ser.evaluation.decoding import decode_batch, decode_precision, gather_objects, gather_rows
from explainable_ser.evaluation.emotion import emotion_metrics
from explainable_ser.evaluation.plots import confusion_figure, layer_weights_figure, predictions_table
from explainable_ser.evaluation.report import compute_metrics
from explainable_ser.model.prompts import get_task
from explainable_ser.training.checkpointing import rng_state, set_rng_state
from explainable_ser.training.stages import batches_per_epoch


class StageProgressBar(L.pytorch.callbacks.TQDMProgressBar):
    """Lightning's bar, sized: dynamic max-duration batches have no ``len``, so Lightning shows
    ``165/--`` and no ETA; the data module counts an epoch's batches (from metadata) and this
    bar takes that count, capped by what is left to the stage's ``max_steps``. It names the run
    and stage (Lightning would show the TensorBoard version cut to four characters) and shows
    the per-token cross-entropies under short names, the same unit for training and validation.
    """

    def __init__(self, run_name: str, stage, n_stages: int, stage_index: int, **kwargs):
        super().__init__(**kwargs)
        self.run_name, self.stage = run_name, stage
        self.label = f"{run_name} {stage.name} ({stage_index + 1}/{n_stages})"

    def epoch_total(self, trainer) -> int | float:

        total = batches_per_epoch(trainer)
        if trainer.max_steps and trainer.max_steps > 0:
            done_this_epoch = trainer.fit_loop.epoch_loop.batch_progress.current.ready
            left = (trainer.max_steps - trainer.global_step) * trainer.accumulate_grad_batches
            total = min(total, done_this_epoch + left)
        return total

    @property
    def total_val_batches_current_dataloader(self) -> int | float:
        total = super().total_val_batches_current_dataloader
        limit = self.trainer.limit_val_batches
        if total == float("inf") and isinstance(limit, int):  # sized by the limit, not the loader
            return limit
        return total

    def _size(self, trainer) -> None:
        done = trainer.fit_loop.epoch_loop.batch_progress.current.ready  # > 0 after a resume
        bar = self.train_progress_bar
        bar.total = self.epoch_total(trainer)
        bar.n = bar.initial = done  # the rate (so the time left) counts this session's steps only
        bar.set_description(f"{self.label} epoch {trainer.current_epoch + 1}/{trainer.max_epochs}")
        bar.refresh()

    def on_train_start(self, trainer, *args) -> None:
        super().on_train_start(trainer, *args)
        # A run resumed in the middle of an epoch gets no on_train_epoch_start for that epoch.
        if trainer.fit_loop.epoch_loop.batch_progress.current.ready > 0:
            self._size(trainer)

    def on_train_epoch_start(self, trainer, *args) -> None:
        super().on_train_epoch_start(trainer, *args)
        self._size(trainer)

    def get_metrics(self, trainer, pl_module) -> dict:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        # "train/ce_per_token_asr" -> "ce/tok asr", "val/ce_per_token_asr" -> "val ce/tok asr"
        return {
            k.replace("train/", "").replace("val/", "val ").replace("ce_per_token_", "ce/tok "): v
            for k, v in items.items()
        }


class StageTimer(L.Callback):
    """Wall seconds of a stage's ``Trainer.fit`` across sessions: ``before`` (restored from the
    checkpoint a resume starts from) plus the time since ``start`` of this session. The seconds
    between the last checkpoint and a kill are redone, and counted once."""

    def __init__(self, start: float):
        self.start, self.before, self.first_step = start, 0.0, 0

    def on_train_start(self, trainer, pl_module) -> None:
        self.first_step = trainer.global_step  # > 0: the step a resume goes on from

    def seconds(self) -> float:
        return self.before + (time.perf_counter() - self.start)

    def state_dict(self) -> dict:
        return {"seconds": self.seconds()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.before = float(state_dict.get("seconds", 0.0))


class SkipLog(L.Callback):
    """Appends the module's pending skips (id, reason, stage) to ``{run_dir}/skipped.jsonl`` after
    every batch (rank 0), and logs the counts and prints them at the end of each epoch."""

    def __init__(self, run_dir: str | Path | None):
        self.path = Path(run_dir) / "skipped.jsonl" if run_dir is not None else None

    def on_fit_start(self, trainer, pl_module) -> None:
        if self.path is not None and trainer.global_rank == 0:
            self.path.touch()  # always there: empty means nothing was skipped

    def _flush(self, trainer, pl_module) -> None:
        pending, pl_module.pending_skips = pl_module.pending_skips, []
        if self.path is not None and pending and trainer.global_rank == 0:
            with open(self.path, "a") as f:
                for entry in pending:
                    f.write(json.dumps(entry) + "\n")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._flush(trainer, pl_module)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._flush(trainer, pl_module)

    def on_train_epoch_end(self, trainer, pl_module):
        self._flush(trainer, pl_module)
        counts = pl_module.skip_counts
        for reason, count in counts.items():
            pl_module.log(f"skipped/{reason}", float(count))
        if counts:
            where = f" (ids in {self.path})" if self.path is not None else ""
            pl_module.print(
                f"[{pl_module.stage.name}] epoch {trainer.current_epoch}: skipped so far {dict(counts)}{where}"
            )


class GradientGuard(L.Callback):
    """Runs after backward (and the DDP all-reduce), before clipping and the optimiser step.

    A non-finite gradient skips the step (counted). Setting the grads to ``None`` makes AdamW
    leave those parameters and their moments untouched (zeroed grads would still move them
    through the moments and weight decay). When every rank's batch trained nothing (the module's
    zero loss), there is no update at all either."""

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        params = [p for group in optimizer.param_groups for p in group["params"]]
        grads = [p.grad for p in params if p.grad is not None]
        bad = bool(grads) and not bool(torch.stack([torch.isfinite(g).all() for g in grads]).all())
        # Sharded grads (FSDP) differ per rank: skip everywhere if any rank saw a bad one.
        if trainer.strategy.reduce_boolean_decision(bad, all=False):
            for p in params:
                p.grad = None
            pl_module.skip_counts["non_finite_grad"] += 1
            pl_module.log("train/non_finite_grad_steps", float(pl_module.skip_counts["non_finite_grad"]))
            return
        if trainer.strategy.reduce_boolean_decision(pl_module.nothing_trained, all=True):
            for p in params:
                p.grad = None


class RngRestore(L.Callback):
    """Python, NumPy and torch generator states of every rank, saved with each checkpoint."""

    def __init__(self):
        self.pending = None

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        # One state per rank (each rank draws its own dropout masks); saving runs on every rank.
        checkpoint["rng"] = gather_objects(rng_state())

    def on_load_checkpoint(self, trainer, pl_module, checkpoint):
        # Applied at the first training batch, not now: between loading and that batch Lightning
        # still draws from the generators (sanity validation, the loader's base seed), which an
        # uninterrupted run did not do at this point.
        states = checkpoint.get("rng") or [None]
        rank = trainer.global_rank
        self.pending = states[rank] if rank < len(states) else None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.pending is not None:
            set_rng_state(self.pending)
            self.pending = None


class ValidationDecoding(L.Callback):
    """Decodes up to ``eval.val_decode_limit`` validation utterances per epoch (per rank) for
    every task of the stage, then logs UA / WER / caption scores and attribute accuracy, and
    adds a predictions table, the confusion matrix and the layer weights to TensorBoard."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.rows: list[dict] = []
        self.labels = list(cfg.training.labels)
        # The counts behind UA / WA / macro-F1 and WER as torchmetrics states: each rank adds its
        # shard's, compute() sums them over the DDP ranks. The last class is "unparsed".
        self.confusion = MulticlassConfusionMatrix(num_classes=len(self.labels) + 1)
        self.word_errors = WordErrorRate()

    def on_validation_epoch_start(self, trainer, pl_module):
        self.rows = []
        self.confusion = self.confusion.to(pl_module.device)
        self.word_errors = self.word_errors.to(pl_module.device)
        self.confusion.reset()
        self.word_errors.reset()

    def update_metrics(self, rows: list[dict]) -> None:
        """Adds decoded rows to the emotion counts and the word errors (the rows' own selection
        and normalisation, as :func:`~explainable_ser.evaluation.report.compute_metrics` does)."""
        index = {label: i for i, label in enumerate(self.labels)}
        emo = [r for r in rows if "emotion" in get_task(r["task"]).fields and r["emotion_ref"] is not None]
        if emo:
            device = self.confusion.device
            self.confusion.update(
                torch.tensor([index.get(r["emotion"], len(index)) for r in emo], device=device),
                torch.tensor([index[r["emotion_ref"]] for r in emo], device=device),
            )
        pairs = [
            (normalize_text(r["transcript_ref"]), normalize_text(r["transcript"] or ""))
            for r in rows
            if "transcript" in get_task(r["task"]).fields and r["transcript_ref"]
        ]
        pairs = [(ref, hyp) for ref, hyp in pairs if ref]  # an empty reference has no WER
        if pairs:
            self.word_errors.update([hyp for _, hyp in pairs], [ref for ref, _ in pairs])

    def synced_scores(self, rows: list[dict]) -> dict:
        """UA, WA, macro-F1 (emotion_metrics on the summed confusion counts, so one definition)
        and WER over every rank's decodes. Collective: every rank calls it with the gathered
        ``rows``, which decide alike on every rank whether there is anything to compute."""
        out: dict = {}
        fields = [get_task(r["task"]).fields for r in rows]
        if any("emotion" in f and r["emotion_ref"] is not None for f, r in zip(fields, rows)):
            cm = self.confusion.compute().tolist()  # rows: reference, columns: prediction
            refs = [self.labels[i] for i, row in enumerate(cm[: len(self.labels)]) for c in row for _ in range(c)]
            hyps = [
                (self.labels + [None])[j] for row in cm[: len(self.labels)] for j, c in enumerate(row) for _ in range(c)
            ]
            em = emotion_metrics(refs, hyps, self.labels)
            out.update(ua=em["ua"], wa=em["wa"], macro_f1=em["macro_f1"])
        if any("transcript" in f and normalize_text(r["transcript_ref"] or "") for f, r in zip(fields, rows)):
            # The summed counts, divided in float64 as jiwer does (compute() divides in float32).
            with self.word_errors.sync_context():
                out["wer"] = float(self.word_errors.errors) / float(self.word_errors.total)
        return out

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        room = self.cfg.eval.val_decode_limit - len({r["id"] for r in self.rows})
        if room <= 0 or trainer.sanity_checking or len(batch["ids"]) == 0:
            return
        lens = batch["wave_lens"][:room]
        wave = batch["wave"][:room, : int(lens.max())]
        stage = pl_module.stage
        # As the validation step computes: under the run's precision (autocast for bf16-mixed).
        with decode_precision(self.cfg, wave.device, pl_module.model):
            rows = decode_batch(
                pl_module.model,
                wave,
                lens,
                batch["records"][:room],
                list(dict.fromkeys(stage.tasks)),
                self.cfg,
                zero_descriptor=stage.zero_descriptor,
            )
        self.update_metrics(rows)
        self.rows += rows

    def on_validation_epoch_end(self, trainer, pl_module):
        if trainer.sanity_checking or self.cfg.eval.val_decode_limit <= 0:
            return

        # Gather before any early return: it is a collective, and a rank whose shard decoded
        # nothing must still take part or the others wait forever.
        rows = gather_rows(self.rows)
        if not rows:
            return
        scores = self.synced_scores(rows)
        labels = self.labels
        # Captions need every rank's text: the gathered rows. METEOR (a JVM per call) and SPICE
        # are left to the final evaluation.
        m = compute_metrics(
            rows, labels, caption_metrics=("bleu4", "rouge_l", "cider"), language=self.cfg.eval.caption_language
        )
        scores.update({k: m[k] for k in ("bleu4", "rouge_l", "cider")})
        for key in ("ua", "wa", "macro_f1", "wer", "bleu4", "rouge_l", "cider"):
            if isinstance(scores.get(key), float):
                pl_module.log(f"val/{key}", scores[key], rank_zero_only=True)
        aa = m.get("attribute_accuracy") or {}
        for key, value in (aa.get("accuracy") or {}).items():
            if value is not None:
                pl_module.log(f"val/attribute_accuracy/{key}", value, rank_zero_only=True)
        writer = getattr(pl_module.logger, "experiment", None)
        if trainer.global_rank != 0 or writer is None or not hasattr(writer, "add_figure"):
            return
        step = trainer.global_step
        writer.add_text("val/predictions", predictions_table(rows), step)
        if m["ua"] is not None:
            writer.add_figure("val/confusion", confusion_figure(m["confusion"], labels), step)
        model = pl_module.model
        weights = {b: w.tolist() for b, w in model.layer_weights().items()}
        writer.add_figure("layer_weights", layer_weights_figure(weights), step)
