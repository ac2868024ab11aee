"""Loading a configuration: YAML files and ``key=value`` overrides merged onto the schema.

``load_config(["exp.yaml", "trainer.devices=2"])`` returns an :class:`ExperimentConfig`.
Unknown keys, values of the wrong type and values outside a field's choices (``Literal``) fail
at once with :class:`ConfigError`, naming the key.

A YAML file may name the file it extends with a top-level ``base:`` key (a path relative to
the file, or a packaged name). The base is merged first unless it was already merged by an
earlier file of the same load, so ``sys5.yaml`` alone means the paper's Sys.5 and
``base.yaml data_meld.yaml sys5.yaml`` keeps MELD.
"""

from __future__ import annotations

import copy
import dataclasses
import typing
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from explainable_ser.config.schema import PACKAGED_CONFIGS, ConfigError, ExperimentConfig
from explainable_ser.model.prompts import TASKS


def load_config(args: list[str] | None = None, base: ExperimentConfig | None = None) -> ExperimentConfig:
    """Merge YAML files and ``key=value`` overrides, in order, onto the typed defaults.

    A file's ``base:`` (see the module docstring) is merged before it, once per load. Names of
    :data:`PACKAGED_CONFIGS` stand for those files. Every problem (a missing or unparsable
    file, an unknown key, a value of the wrong type or outside its choices, an unknown task or
    trainable group, an unresolvable ``${...}`` interpolation, a mandatory ``???`` value left
    unset) raises :class:`ConfigError` with a one-line message naming the file or override and
    the key.
    """
    if base is not None:
        merged = OmegaConf.structured(base)
    else:  # building the schema from the dataclasses takes ~60 ms, a copy of it ~8 ms
        if getattr(load_config, "_defaults", None) is None:
            load_config._defaults = OmegaConf.structured(ExperimentConfig())
        merged = copy.deepcopy(load_config._defaults)
    merged_files: set[Path] = set()
    for arg in args or []:
        arg = str(PACKAGED_CONFIGS.get(arg, arg))
        is_override = "=" in arg and not arg.endswith((".yaml", ".yml"))
        if is_override:
            try:
                key, value = arg.split("=", 1)
                # update() indexes into lists (data.corpora.0.dir=...) and, the schema being in
                # struct mode, rejects unknown keys and values of the wrong type.
                parsed = OmegaConf.from_dotlist([f"value={value}"])["value"]
                OmegaConf.update(merged, key.strip(), parsed, merge=True)
            except Exception as err:  # OmegaConf validation
                raise ConfigError(f"override {arg!r}: {_one_line(err)}") from None
        else:
            merged = _merge_file(merged, Path(arg), merged_files, chain=())
    try:
        cfg = OmegaConf.to_object(merged)  # resolves interpolations, checks mandatory values
    except Exception as err:
        key = getattr(err, "full_key", None)
        raise ConfigError(f"configuration{f' key {key}' if key else ''}: {_one_line(err)}") from None
    _check_elements(cfg)
    check_names(cfg)
    return cfg


def _merge_file(merged, path: Path, done: set[Path], chain: tuple[Path, ...]):
    """Merge one YAML file, its ``base:`` first (once per load; a cycle is an error)."""
    shown = str(path) if str(path).isprintable() else repr(str(path))
    if not path.is_file():
        raise ConfigError(f"config file not found: {shown}")
    key = path.resolve()
    if key in chain:
        raise ConfigError(f"config file {shown}: its base: chain comes back to itself")
    if key in done:
        return merged
    try:
        data = OmegaConf.load(path)
        parent = data.pop("base", None) if isinstance(data, DictConfig) else None
        if parent is not None:
            target = PACKAGED_CONFIGS.get(str(parent), path.parent / str(parent))
            merged = _merge_file(merged, Path(target), done, (*chain, key))
        done.add(key)
        return OmegaConf.merge(merged, data)
    except ConfigError:
        raise
    except Exception as err:  # OmegaConf validation, YAML syntax, undecodable bytes ...
        raise ConfigError(f"config file {shown}: {_one_line(err)}") from None


#: The figures the end-of-run summary can set beside a target (``eval.targets``).
TARGET_METRICS = ("ua", "wer", "attribute_accuracy")


def check_names(cfg: ExperimentConfig) -> None:
    """Names the schema cannot type: tasks (registered in :mod:`explainable_ser.model.prompts`),
    trainable groups and warm-started branches."""
    groups = ("content", "descriptor", "concepts", "lora", "classifier")
    for i, stage in enumerate(cfg.training.stages):
        _choices(f"training.stages.{i}.tasks", stage.tasks, TASKS)
        _choices(f"training.stages.{i}.trainable", stage.trainable, groups)
        _choices(f"training.stages.{i}.lr_scale", list(stage.lr_scale), stage.trainable)
        if stage.concept_weight < 0:
            raise ConfigError(f"training.stages.{i}.concept_weight: expected 0 or more, got {stage.concept_weight!r}")
        if stage.concept_weight > 0 and not cfg.model.branch.concepts:
            raise ConfigError(
                f"training.stages.{i}.concept_weight: the model has no concept heads (model.branch.concepts is empty)"
            )
        if stage.concept_weight > 0 and stage.zero_descriptor:
            raise ConfigError(
                f"training.stages.{i}.concept_weight: this stage zeroes the descriptor tokens the concept heads read "
                "(zero_descriptor: true)"
            )
        for key, value in stage.lr_scale.items():
            if not value > 0:
                raise ConfigError(f"training.stages.{i}.lr_scale.{key}: expected a positive factor, got {value!r}")
    if not cfg.training.value_weight > 0:
        raise ConfigError(f"training.value_weight: expected a positive factor, got {cfg.training.value_weight!r}")
    _choices("eval.tasks", cfg.eval.tasks, TASKS)
    _choices("eval.targets", list(cfg.eval.targets), TARGET_METRICS)
    for key, value in cfg.eval.targets.items():  # OmegaConf lets a list or a dict through here
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"eval.targets.{key}: expected a number, got {value!r}")
    _choices("training.warm_start.branches", cfg.training.warm_start.branches, groups[:2])
    _choices("model.branch.utterance_context", cfg.model.branch.utterance_context, groups[:2])
    enc2 = cfg.model.descriptor_encoder
    if enc2 is not None and enc2.kind == "ctc_fbank":
        raise ConfigError(
            "model.descriptor_encoder.kind: ctc_fbank is trained on transcripts, a "
            "content encoder; use hf, whisper or fbank for the descriptor stream"
        )
    if enc2 is not None and cfg.model.kind != "llm":
        raise ConfigError("model.descriptor_encoder: only the LLM model (model.kind: llm) has a descriptor branch")
    if enc2 is not None and "descriptor" in cfg.training.warm_start.branches:
        raise ConfigError(
            "training.warm_start.branches: the descriptor warm start reads the content "
            "encoder's layers; with model.descriptor_encoder set, warm-start only [content]"
        )
    if cfg.eval.concept_rationale is not None:
        if not 0.0 <= cfg.eval.concept_rationale <= 1.0:
            got = cfg.eval.concept_rationale
            raise ConfigError(f"eval.concept_rationale: expected a probability in [0, 1], got {got!r}")
        if not any(f.startswith("evidence.") for f in cfg.model.branch.concepts):
            raise ConfigError(
                "eval.concept_rationale: needs concept heads on measured cues "
                "(model.branch.concepts with evidence.pitch, evidence.range, evidence.volume or evidence.speed)"
            )
        if cfg.eval.concept_rationale_max_cues < 1:
            raise ConfigError(
                f"eval.concept_rationale_max_cues: expected at least 1, got {cfg.eval.concept_rationale_max_cues!r}"
            )
    if cfg.data.caption_attributes is not None:
        _choices(
            "data.caption_attributes", cfg.data.caption_attributes, ("gender", "pitch", "volume", "speed", "emphasis")
        )


def _check_elements(obj, prefix: str = "") -> None:
    """OmegaConf merges a YAML list of mappings into a ``list[str]`` field without a word (the
    error only comes when the config is written back); check every container's elements."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        _check_value(getattr(obj, f.name), hints[f.name], prefix + f.name)


def _check_value(value, hint, key: str) -> None:
    if dataclasses.is_dataclass(value):
        _check_elements(value, key + ".")
        return
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list and args and isinstance(value, list):
        for i, item in enumerate(value):
            _check_value(item, args[0], f"{key}.{i}")
    elif origin is dict and len(args) == 2 and isinstance(value, dict):
        for name, item in value.items():
            _check_value(item, args[1], f"{key}.{name}")
    elif hint in (str, int, float) and (
        isinstance(value, bool) or not isinstance(value, (int, float) if hint is float else hint)
    ):
        raise ConfigError(f"{key}: expected {hint.__name__}, got {value!r}")


def _choices(key: str, values: list[str], allowed) -> None:
    bad = [v for v in values if not isinstance(v, str) or v not in allowed]  # e.g. [[]] from YAML
    if bad:
        raise ConfigError(f"{key}: unknown {bad[0]!r}, expected one of {sorted(allowed)}")


def _one_line(err: Exception) -> str:
    """An exception as one short line: OmegaConf's first line (the rest repeats the key and
    type), other messages (YAML's are multi-line, with the position) joined."""
    text = str(err).strip()
    if isinstance(err, OmegaConfBaseException):
        text = text.splitlines()[0] if text else ""
    text = " ".join(text.split())
    if len(text) > 300:
        text = text[:297] + "..."
    return text or type(err).__name__


def to_yaml(cfg: ExperimentConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))
