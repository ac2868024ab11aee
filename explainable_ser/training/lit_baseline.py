"""LightningModule of the discriminative SSL baselines (:mod:`explainable_ser.model.baseline`).

The paper model's module with another loss: each batch trains the emotion classifier and the
CTC head at once (the stage's ``tasks`` name what is decoded, not an alternation). The step
itself, stages, optimiser, schedule, checkpoints, skips and callbacks are the paper model's.
"""

from __future__ import annotations

from explainable_ser.training.lit_module import ExplainableSERModule


class BaselineModule(ExplainableSERModule):
    """Wraps :class:`~explainable_ser.model.baseline.DiscriminativeSER`."""

    def _losses(self, batch, task_name: str | None = None, *, train: bool, zero_speech: bool = False):
        records = batch["records"]
        labels = self.model.labels
        emotions = []
        for rec in records:
            emo = rec.get("emotion")
            if emo is not None and emo not in labels:
                self.skip(rec["id"], "unknown_emotion_for_classifier")  # counted, never trained on
                emo = None
            emotions.append(None if emo is None else labels.index(emo))
        wave, lens = batch["wave"], batch["wave_lens"]
        res = self.model.loss(wave, lens, emotions, [rec.get("transcript") for rec in records])
        if res["n_emotion"] == 0 and res["n_asr"] == 0:
            return None
        return {**res, "n": len(records)}

    def log_train_step(self, res: dict, task_name: str, batch) -> None:
        n = res["n"]
        self.log("train/loss", res["loss"], batch_size=n, prog_bar=True)
        self.log("train/ce_emotion", res["ce"], batch_size=n)
        self.log("train/ctc", res["ctc"], batch_size=n)

    def validation_step(self, batch, batch_idx):
        if len(batch["ids"]) == 0:
            return
        res = self._losses(batch, train=False)
        if res is not None:
            self.log("val/loss", res["loss"], batch_size=res["n"], sync_dist=True, prog_bar=True)
            self.log("val/ce_emotion", res["ce"], batch_size=res["n"], sync_dist=True)
            self.log("val/ctc", res["ctc"], batch_size=res["n"], sync_dist=True)
