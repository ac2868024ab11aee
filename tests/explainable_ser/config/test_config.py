"""The schema: paper defaults, packaged names, ``base:`` chains, choices checked at load."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from explainable_ser.config import PACKAGED_CONFIGS, ConfigError, load_config, to_yaml

EXPERIMENTS = Path(__file__).resolve().parents[3] / "experiments"


def test_the_schema_defaults_are_the_papers_sys7():
    cfg = load_config([])
    assert cfg.model.encoder.kind == "hf" and cfg.model.encoder.name_or_path == "facebook/hubert-large-ls960-ft"
    assert cfg.model.llm.name_or_path == "meta-llama/Llama-3.1-8B-Instruct" and cfg.model.llm.hf_config is None
    assert cfg.model.branch.variational and cfg.model.llm.lora.modules_to_save == []
    s1, s2 = cfg.training.stages
    assert (s1.tasks, s1.epochs, s1.lr, s1.scheduler) == (["asr"], 4, 2e-4, "constant")
    assert (s2.tasks, s2.epochs, s2.lr, s2.scheduler) == (["ser_sed", "asr"], 4, 2e-5, "cosine")
    assert cfg.training.kl_delay_ratio == cfg.training.kl_warmup_ratio == 0.0
    assert [c.name for c in cfg.data.corpora] == ["speechcraft"]
    # experiments/base.yaml adds hardware and batching only: the method is the same.
    base = load_config([str(EXPERIMENTS / "base.yaml")])
    assert base.training == cfg.training and base.model.branch == cfg.model.branch
    for part in ("encoder", "llm"):  # base.yaml pins bf16 weights where the schema says auto
        here, there = getattr(cfg.model, part), getattr(base.model, part)
        assert there.dtype == "bfloat16" and dataclasses.replace(there, dtype=here.dtype) == here


@pytest.mark.parametrize("system", ["sys4", "sys5", "sys6", "ablation_two_stage", "data_meld"])
def test_a_system_file_alone_means_the_papers_system(system):
    alone = load_config([str(EXPERIMENTS / f"{system}.yaml")])
    layered = load_config([str(EXPERIMENTS / "base.yaml"), str(EXPERIMENTS / f"{system}.yaml")])
    assert to_yaml(alone) == to_yaml(layered)
    assert alone.model.llm.name_or_path == "meta-llama/Llama-3.1-8B-Instruct"


@pytest.mark.parametrize("path", sorted((EXPERIMENTS / "synthcraft").glob("*.yaml")), ids=lambda p: p.stem)
def test_a_synthcraft_file_alone_means_the_synthcraft_system(path):
    alone = load_config([str(path)])
    assert to_yaml(alone) == to_yaml(load_config([str(EXPERIMENTS / "synthcraft" / "base.yaml"), str(path)]))
    assert alone.data.corpora[0].name == "synthcraft"
    if path.stem == "two_encoders":  # the packaged Whisper base (offline, from PyPI) + the filterbank
        assert alone.model.encoder.name_or_path == "pkg:whisper-base"
        assert alone.model.descriptor_encoder.kind == "fbank"
        return
    assert alone.model.encoder.name_or_path is None and alone.model.descriptor_encoder is None
    # The offline stand-ins: the filterbank, or (Sys.2/3 twins) their models' code with random weights.
    assert alone.model.encoder.kind == ("hf" if path.stem in ("sys2_wavlm", "sys3_wav2vec2") else "fbank")


def test_a_base_already_merged_is_not_merged_again():
    files = [str(EXPERIMENTS / f) for f in ("base.yaml", "data_meld.yaml", "sys5.yaml")]
    cfg = load_config(files)
    assert [c.name for c in cfg.data.corpora] == ["speechcraft", "meld"]  # sys5's base kept MELD
    assert cfg.name == "sys5" and cfg.training.stages[1].tasks == ["ser", "asr"]


def test_packaged_names_stand_for_their_files():
    assert to_yaml(load_config(["demo"])) == to_yaml(load_config([str(PACKAGED_CONFIGS["demo"])]))
    assert load_config(["offline"]).model.encoder.kind == "fbank"
    assert load_config(["demo"]).model.llm.name_or_path == "pkg:smollm2-135m-instruct"


def test_base_chains_fail_loudly(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\nseed: 1\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\nseed: 2\n")
    with pytest.raises(ConfigError, match="comes back to itself"):
        load_config([str(tmp_path / "a.yaml")])
    (tmp_path / "c.yaml").write_text("base: missing.yaml\n")
    with pytest.raises(ConfigError, match="missing.yaml"):
        load_config([str(tmp_path / "c.yaml")])


@pytest.mark.parametrize(
    "override, key",
    [
        ("model.encoder.kind=foo", "model.encoder.kind"),
        ("training.stages.0.scheduler=linear", "scheduler"),
        ("data.corpora.0.format=tar", "format"),
        ("model.llm.dtype=int8", "dtype"),
        ("eval.caption_language=fr", "caption_language"),
        ("training.stages.1.tasks=[ser,bogus]", "training.stages.1.tasks"),
        ("training.stages.0.trainable=[encoder]", "training.stages.0.trainable"),
        ("eval.tasks=[transcribe]", "eval.tasks"),
        ("training.warm_start.branches=[lora]", "training.warm_start.branches"),
    ],
)
def test_a_value_outside_its_choices_is_one_line_naming_key_and_choices(override, key):
    with pytest.raises(ConfigError) as err:
        load_config(["offline", override])
    message = str(err.value)
    assert key in message and "expected one of" in message and "\n" not in message


def test_a_nested_list_where_names_belong_is_a_config_error():
    # found by test_fuzz: `eval: {tasks: [[]]}` passed the schema and crashed the name check
    with pytest.raises(ConfigError, match="eval.tasks"):
        load_config(["offline", "eval.tasks=[[]]"])


@pytest.mark.parametrize(
    "text, key",
    [
        ("training: {labels: [neutral, {a: 1}]}", "training.labels.1"),
        ("model: {branch: {utterance_context: [{descriptor: 1}]}}", "model.branch.utterance_context.0"),
        ("model: {llm: {lora: {target_modules: [[q_proj]]}}}", "model.llm.lora.target_modules.0"),
    ],
)
def test_a_mapping_or_list_inside_a_list_of_words_is_a_config_error(tmp_path, text, key):
    # found by test_fuzz: OmegaConf merges these unchecked and fails only when the config is saved
    path = tmp_path / "bad.yaml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config([str(path)])


def test_eval_targets_take_known_metrics_and_numbers_only():
    assert load_config(["offline", "eval.targets={ua: 0.8, wer: 1}"]).eval.targets == {"ua": 0.8, "wer": 1}
    with pytest.raises(ConfigError, match="eval.targets"):
        load_config(["offline", "eval.targets={bleu: 0.3}"])
    with pytest.raises(ConfigError, match="eval.targets"):  # found by test_fuzz: a list passed the schema
        load_config(["offline", "eval.targets={ua: []}"])


def test_new_explanation_keys_are_checked():
    from explainable_ser.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"data.caption_attributes: unknown 'loudness'"):
        load_config(["offline", "data.caption_attributes=[pitch,loudness]"])
    with pytest.raises(ConfigError, match="ctc_fbank is trained on transcripts"):
        load_config(["offline", "model.descriptor_encoder={kind: ctc_fbank}"])
    cfg = load_config(["offline", "model.descriptor_encoder={kind: fbank, name_or_path: null}"])
    assert cfg.model.descriptor_encoder.kind == "fbank"
    with pytest.raises(ConfigError, match="warm-start only"):
        load_config(["demo", "model.descriptor_encoder={kind: fbank, name_or_path: null}"])


# What experiments/base.yaml may set differently from the schema: where and on what the paper's
# recipe runs (paths, batches, workers, dtypes, devices, logging), never the recipe itself.
RUN_ENVIRONMENT_KEYS = {
    "run_dir",
    "data.max_cuts",
    "data.max_duration",
    "data.eval_max_duration",
    "data.num_workers",
    "model.encoder.dtype",
    "model.llm.dtype",
    "trainer.accelerator",
    "trainer.devices",
    "trainer.strategy",
    "trainer.val_check_interval",
    "trainer.limit_val_batches",
    "trainer.enable_progress_bar",
}


def _leaves(tree, prefix=""):
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _leaves(v, f"{prefix}{k}.")
    else:
        yield prefix[:-1], tree


def test_the_paper_settings_in_base_yaml_are_the_schema_defaults():
    """The paper's settings have one source, the schema's defaults; experiments/base.yaml repeats
    them for readers and may differ only in RUN_ENVIRONMENT_KEYS."""
    from omegaconf import OmegaConf

    from explainable_ser.config import ExperimentConfig

    defaults = OmegaConf.structured(ExperimentConfig())
    merged = OmegaConf.merge(defaults, OmegaConf.load(EXPERIMENTS / "base.yaml"))
    written = dict(_leaves(OmegaConf.to_container(OmegaConf.load(EXPERIMENTS / "base.yaml"))))
    default_leaves = dict(_leaves(OmegaConf.to_container(defaults)))
    merged_leaves = dict(_leaves(OmegaConf.to_container(merged)))
    differing = {k for k in written if merged_leaves.get(k) != default_leaves.get(k)}
    assert differing <= RUN_ENVIRONMENT_KEYS, sorted(differing - RUN_ENVIRONMENT_KEYS)
    assert len(written) - len(RUN_ENVIRONMENT_KEYS) >= 25  # the file still shows the recipe


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["eval.concept_rationale=0.9"], "needs concept heads on measured cues"),
        (["eval.concept_rationale=1.5", "model.branch.concepts={evidence.volume: {high: loud}}"], "a probability"),
        (
            [
                "eval.concept_rationale=0.9",
                "eval.concept_rationale_max_cues=0",
                "model.branch.concepts={evidence.volume: {high: loud}}",
            ],
            "at least 1",
        ),
        (["training.stages.0.concept_weight=1.0"], "no concept heads"),
        (
            ["training.stages.0.concept_weight=1.0", "model.branch.concepts={evidence.volume: {high: loud}}"],
            "zeroes the descriptor tokens",
        ),
        (["training.stages.1.concept_weight=-1.0"], "expected 0 or more"),
    ],
)
def test_a_concept_led_rationale_needs_heads_on_measured_cues(overrides, message):
    """And a stage's concept loss needs heads whose descriptor tokens it does not zero."""
    with pytest.raises(ConfigError, match=message):
        load_config(["offline", *overrides])
    cfg = load_config(
        ["offline", "eval.concept_rationale=0.9", "model.branch.concepts={evidence.volume: {high: loud}}"]
    )
    assert cfg.eval.concept_rationale == 0.9 and cfg.eval.concept_rationale_max_cues == 3
