"""Shared fixtures: tiny random models and a tiny tokenizer (no downloads anywhere)."""

from __future__ import annotations

import pytest
import torch

from explainable_ser.config import ExperimentConfig, load_config
from explainable_ser.offline.tokenizer import build_word_tokenizer

TINY_TEXTS = [
    "the dog found a red ball near the house",
    'A male speaker with low pitch and high volume speaks at a slow pace, emphasizing the word "ball".',
    "neutral happy sad angry",
]

# The offline stack (``explainable_ser/configs/offline.yaml``; merged once even when a SynthCraft
# YAML before it already did), shrunk further: these lead every test's overrides.
TINY_LLM = ["offline", "model.llm.hf_config.hidden_size=32", "model.llm.hf_config.intermediate_size=64",
            "model.llm.hf_config.num_hidden_layers=2", "model.llm.hf_config.num_attention_heads=2",
            "model.llm.hf_config.num_key_value_heads=1", "model.llm.lora.dropout=0.0",
            "model.branch.hidden_dim=16", "model.branch.latent_dim=8", "model.branch.adapter_dim=16",
            "model.encoder.ctc_epochs=1"]

HUBERT_FIELDS = dict(model_type="hubert", hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, conv_dim=[16] * 7, feat_extract_norm="layer",
                     do_stable_layer_norm=True, conv_bias=True, num_conv_pos_embeddings=16,
                     num_conv_pos_embedding_groups=2, hidden_dropout=0.0, attention_dropout=0.0,
                     activation_dropout=0.0, feat_proj_dropout=0.0, layerdrop=0.0)


def tiny_config(*overrides: str, hubert: bool = False) -> ExperimentConfig:
    cfg = load_config([*TINY_LLM, *overrides])
    if hubert:
        cfg.model.encoder.kind = "hf"
        cfg.model.encoder.hf_config = dict(HUBERT_FIELDS)
    return cfg


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return build_word_tokenizer(TINY_TEXTS)


@pytest.fixture
def seeded():
    torch.manual_seed(0)
    yield
