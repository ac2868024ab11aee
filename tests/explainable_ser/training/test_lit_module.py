"""The LightningModule's optimiser: one group by default, one per trainable group with lr_scale."""

from __future__ import annotations

import pytest

from explainable_ser.config import ConfigError, check_names
from explainable_ser.model.build import build_model
from explainable_ser.training.lit_module import ExplainableSERModule
from explainable_ser.training.stages import apply_trainable, group_of

from conftest import tiny_config


def optimiser(tiny_tokenizer, *overrides):
    cfg = tiny_config(*overrides)
    check_names(cfg)
    stage = cfg.training.stages[1]
    module = ExplainableSERModule(build_model(cfg.model, tiny_tokenizer), cfg)
    module.set_stage(stage, 10)
    apply_trainable(module.model, list(stage.trainable))
    names = {id(p): n for n, p in module.model.named_parameters()}
    opt = module.configure_optimizers()["optimizer"]
    return stage, opt, names


def test_one_group_at_the_stage_lr_by_default(tiny_tokenizer):
    stage, opt, _ = optimiser(tiny_tokenizer)
    assert [g["initial_lr"] for g in opt.param_groups] == [stage.lr]
    assert "name" not in opt.param_groups[0]  # TensorBoard's lr tag stays lr-AdamW


def test_lr_scale_gives_each_trainable_group_its_own_lr(tiny_tokenizer):
    stage, opt, names = optimiser(tiny_tokenizer, "training.stages.1.lr_scale={descriptor: 0.1}")
    by_name = {g["name"]: g for g in opt.param_groups}
    assert set(by_name) == {"descriptor", "lora"}
    assert by_name["descriptor"]["initial_lr"] == pytest.approx(0.1 * stage.lr)
    assert by_name["lora"]["initial_lr"] == pytest.approx(stage.lr)
    for name, group in by_name.items():  # every parameter sits in its own group's entry
        assert {group_of(names[id(p)]) for p in group["params"]} == {name}


@pytest.mark.parametrize(
    "override, message",
    [
        ("training.stages.1.lr_scale={content: 0.1}", "lr_scale: unknown 'content'"),  # not trained in stage 2
        ("training.stages.1.lr_scale={descriptor: 0}", "expected a positive factor"),
        ("training.value_weight=-1", "training.value_weight: expected a positive factor"),
    ],
)
def test_a_bad_lr_scale_or_value_weight_is_named(override, message):
    with pytest.raises(ConfigError, match=message):
        check_names(tiny_config(override))


def test_the_step_trains_on_the_targets_the_data_side_chose(tiny_tokenizer, monkeypatch):
    """training_step selects nothing: the task, the kept clips and their target texts come in the
    batch (SpeechDataModule.with_targets); skips are counted for the log, the loss sees the rest."""
    from types import SimpleNamespace

    import torch

    from explainable_ser.model.prompts import TargetSelector

    from conftest import waves

    cfg = tiny_config()
    module = ExplainableSERModule(build_model(cfg.model, tiny_tokenizer), cfg)
    module.set_stage(cfg.training.stages[1], 10)
    records = [
        {"id": "a", "transcript": "the dog", "emotion": "sad", "caption": "A low voice."},
        {"id": "b", "transcript": "a ball", "emotion": "sad", "caption": None},
    ]
    wave, lens = waves([1600, 2400])
    batch = {
        "ids": ["a", "b"],
        "records": records,
        "skipped": [],
        "wave": wave,
        "wave_lens": lens,
        "padding_efficiency": 1.0,
        "task": "ser_sed",
    }
    with pytest.raises(ValueError, match="carries no targets"):
        module.training_step(dict(batch), 0)
    select = TargetSelector(module.model.prompts, cfg.training.labels, None)
    batch["targets"] = {"ser_sed": select("ser_sed", records)}
    seen = {}

    def loss(wave, lens, task, targets, **kw):
        seen.update(n=wave.shape[0], task=task.name, targets=targets)
        return {
            "loss": torch.tensor(1.0, requires_grad=True),
            "ce": torch.tensor(1.0),
            "ce_per_token": 1.0,
            "kl": {"content": 0.0, "descriptor": 0.0},
        }

    monkeypatch.setattr(module.model, "loss", loss)
    monkeypatch.setattr(module, "log", lambda *a, **k: None)
    module._trainer = SimpleNamespace(global_step=0)
    module.training_step(batch, 7)  # the batch index plays no part: the batch names its task
    assert seen["task"] == "ser_sed" and seen["n"] == 1 and seen["targets"] == batch["targets"]["ser_sed"]["texts"]
    assert module.skip_counts == {"missing_field_for_ser_sed": 1}
