"""Typed configuration: the schema (:mod:`.schema`) and its loading from YAML and ``key=value``
overrides (:mod:`.load`). ``from explainable_ser.config import load_config, ExperimentConfig`` is
the public way in; the names below are the package's interface."""

from explainable_ser.config.load import check_names, load_config, to_yaml
from explainable_ser.config.schema import (
    PACKAGED_CONFIGS,
    BranchConfig,
    ClassifierConfig,
    ConfigError,
    EncoderConfig,
    EvalConfig,
    ExperimentConfig,
    LLMConfig,
    LoraConfig,
    ModelConfig,
    StageConfig,
    TrainerConfig,
    TrainingConfig,
    WarmStartConfig,
    paper_stages,
)

__all__ = [
    "PACKAGED_CONFIGS",
    "BranchConfig",
    "ClassifierConfig",
    "ConfigError",
    "EncoderConfig",
    "EvalConfig",
    "ExperimentConfig",
    "LLMConfig",
    "LoraConfig",
    "ModelConfig",
    "StageConfig",
    "TrainerConfig",
    "TrainingConfig",
    "WarmStartConfig",
    "check_names",
    "load_config",
    "paper_stages",
    "to_yaml",
]
