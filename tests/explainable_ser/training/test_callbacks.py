"""The training progress bar: a total (so an ETA) for dynamic batches, names that say what."""

from __future__ import annotations

from types import SimpleNamespace

from explainable_ser.config import StageConfig
from explainable_ser.training.callbacks import StageProgressBar


def fake_trainer(per_epoch: int, max_steps: int, global_step: int, done_this_epoch: int, accumulate: int = 1):
    progress = SimpleNamespace(current=SimpleNamespace(ready=done_this_epoch))
    return SimpleNamespace(
        datamodule=SimpleNamespace(train_batches_per_epoch=lambda: per_epoch),
        limit_train_batches=1.0,
        max_steps=max_steps,
        global_step=global_step,
        accumulate_grad_batches=accumulate,
        fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(batch_progress=progress)),
    )


def test_the_bar_total_is_the_counted_epoch_capped_by_the_steps_left():
    bar = StageProgressBar("demo", StageConfig(name="stage2"), 2, 1)
    assert bar.label == "demo stage2 (2/2)"
    assert bar.epoch_total(fake_trainer(250, -1, 0, 0)) == 250  # no max_steps: the whole epoch
    assert bar.epoch_total(fake_trainer(250, 60, 0, 0)) == 60  # the demo: 60 steps of a 250-batch epoch
    assert bar.epoch_total(fake_trainer(250, 60, 50, 50)) == 60  # resumed at step 50 of the same epoch
    assert bar.epoch_total(fake_trainer(250, 300, 250, 0)) == 50  # second epoch, 50 steps left
    assert bar.epoch_total(fake_trainer(250, 60, 0, 0, accumulate=2)) == 120  # two batches per step


def test_the_bar_shows_per_token_cross_entropies_under_short_names(monkeypatch):
    from lightning.pytorch.callbacks import TQDMProgressBar

    monkeypatch.setattr(
        TQDMProgressBar,
        "get_metrics",
        lambda self, trainer, module: {"v_num": "age2", "train/ce_per_token_asr": 1.5, "val/ce_per_token_ser_sed": 0.9},
    )
    bar = StageProgressBar("demo", StageConfig(name="stage2"), 2, 1)
    assert bar.get_metrics(None, None) == {"ce/tok asr": 1.5, "val ce/tok ser_sed": 0.9}


def test_validation_scores_from_torchmetrics_states_equal_compute_metrics():
    """UA / WA / macro-F1 / WER logged during validation come from torchmetrics states (summed
    over DDP ranks); on one rank they must equal metrics.json's definitions exactly."""
    import random
    from types import SimpleNamespace

    from explainable_ser.evaluation.report import compute_metrics
    from explainable_ser.training.callbacks import ValidationDecoding

    labels = ["neutral", "happy", "sad", "angry"]
    rng = random.Random(3)
    words = ["the", "dog", "ran", "a", "red", "ball", "Ball,", "home"]
    rows = []
    for i in range(60):
        ref = rng.choice(labels[:3] + [None])  # "angry" never a reference, some missing
        rows.append({"id": f"u{i}", "task": "ser", "emotion_ref": ref, "emotion": rng.choice(labels + [None, "bored"])})
        tref = " ".join(rng.choices(words, k=rng.randint(0, 6)))  # some empty references
        rows.append(
            {
                "id": f"u{i}",
                "task": "asr",
                "transcript_ref": tref,
                "transcript": rng.choice([None, " ".join(rng.choices(words, k=rng.randint(0, 6)))]),
            }
        )
    cb = ValidationDecoding(SimpleNamespace(training=SimpleNamespace(labels=labels)))
    for start in range(0, len(rows), 7):  # batch by batch, as validation adds them
        cb.update_metrics(rows[start : start + 7])
    got = cb.synced_scores(rows)
    want = compute_metrics(rows, labels, caption_metrics=())
    assert got == {k: want[k] for k in ("ua", "wa", "macro_f1", "wer")}
    assert 0 < got["ua"] < 1 and 0 < got["wer"]
