"""Shared fixtures: tiny random models and a tiny tokenizer (no downloads anywhere)."""

from __future__ import annotations

import json
import shutil

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


def waves(lengths, seed=0):
    """A batch of small random waveforms with the given lengths, zero-padded: (wave, lens)."""
    g = torch.Generator().manual_seed(seed)
    lens = torch.tensor(lengths)
    wave = torch.zeros(len(lengths), max(lengths))
    for i, n in enumerate(lengths):
        wave[i, :n] = 0.1 * torch.randn(n, generator=g)
    return wave, lens


def save_tiny_instruct(path, words: str, max_positions: int = 1024):
    """A tiny random Llama with the offline word tokenizer (chat template included) over
    ``words``, saved as a model directory: what --teacher / --judge take, like any hub
    instruct checkpoint."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = build_word_tokenizer([words])
    tok.save_pretrained(path)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=max_positions,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    LlamaForCausalLM(cfg).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return build_word_tokenizer(TINY_TEXTS)


@pytest.fixture
def seeded():
    torch.manual_seed(0)
    yield


# -- a trained-looking run and its export (export, predict, the app) --------------------------
@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A run directory whose checkpoint has non-trivial LoRA and branch weights (random, as if
    trained: an untrained LoRA is zero and would make every comparison trivially equal)."""
    from data_modules.synthcraft import generate
    from explainable_ser.config import load_config, to_yaml
    from explainable_ser.training.assembly import build
    from explainable_ser.training.stages import adaptable_names

    tmp = tmp_path_factory.mktemp("export")
    corpus = tmp / "corpus"
    generate(corpus, n_train=6, n_dev=2, n_test=2, seed=7, progress=False)
    run_dir = tmp / "run"
    cfg = load_config([*TINY_LLM, f"data.corpora.0.dir={corpus}", f"run_dir={run_dir}",
                       "eval.max_new_tokens=6"])
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(to_yaml(cfg))
    _, module = build(cfg, run_dir)
    gen = torch.Generator().manual_seed(0)
    keep = {f"model.{n}" for n in adaptable_names(module.model)}
    state = {k: (v + 0.05 * torch.randn(v.shape, generator=gen)) if v.is_floating_point() else v
             for k, v in module.state_dict().items() if k in keep}
    (run_dir / "stage2").mkdir()
    torch.save({"state_dict": state, "stage_name": "stage2"}, run_dir / "stage2" / "final.ckpt")
    (run_dir / "metrics.json").write_text(json.dumps({"ua": 0.5, "wer": 0.25, "n_utterances": 2}))
    clip = sorted((corpus / "audio" / "test").glob("*.flac"))[0]
    return run_dir, clip


@pytest.fixture(scope="session")
def exported(trained_run, tmp_path_factory):
    from explainable_ser.export import main

    run_dir, _ = trained_run
    out = tmp_path_factory.mktemp("exp") / "model"
    assert main(["--ckpt", str(run_dir / "stage2" / "final.ckpt"), "--out", str(out), "--merge-lora"]) == 0
    return out


# Caption metrics need Java for METEOR and SPICE; tests that score captions say so.
needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="needs Java")

# Captions with their references, for the caption metrics and compare's caption tests.
CAP_REFS = [
    ["A man speaks loudly with a high pitch.", "The male speaker talks loudly, pitch is high."],
    "A woman whispers slowly and sadly.",
    ["She speaks fast, with an angry tone!", "An angry female voice, fast speech."],
    ["A calm male voice at normal speed."],
]
CAP_HYPS = [
    "A man speaks loudly with high pitch.",
    "The woman whispers slowly.",
    None,
    "A calm man speaks at a normal speed.",
]
