"""Parameter counts of a full-size stack built on the ``meta`` device (no weights, no downloads).

    python benchmarks/param_counts.py [experiments/sys7_iemocap.yaml] [--out benchmarks/results/param_counts.json]

The encoder and the LLM are built from their architecture configs instead of ``from_pretrained``
(HuBERT-large: 24 layers of 1024, 50 frames/s; for a Whisper encoder Whisper-large-v3's
encoder, 32 layers of 1280; for a WavLM, WavLM-large; Llama-3.1-8B: 32 layers of 4096, 8 KV
heads, vocab 128,256), so this runs anywhere. A second (descriptor) encoder is counted apart.
Reported: encoder, LLM base, LoRA, each branch, and the
trainable set of every stage of the experiment.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from explainable_ser.config import load_config
from explainable_ser.model.build import build_model
from explainable_ser.offline.tokenizer import build_word_tokenizer
from explainable_ser.training.stages import trainable_names

HUBERT_LARGE = dict(
    model_type="hubert",
    hidden_size=1024,
    num_hidden_layers=24,
    num_attention_heads=16,
    intermediate_size=4096,
    feat_extract_norm="layer",
    do_stable_layer_norm=True,
    conv_bias=True,
    num_conv_pos_embeddings=128,
    num_conv_pos_embedding_groups=16,
)
WAVLM_LARGE = dict(
    model_type="wavlm",
    hidden_size=1024,
    num_hidden_layers=24,
    num_attention_heads=16,
    intermediate_size=4096,
    feat_extract_norm="layer",
    do_stable_layer_norm=True,
    conv_bias=False,
    num_conv_pos_embeddings=128,
    num_conv_pos_embedding_groups=16,
    num_buckets=320,
    max_bucket_distance=800,
)
WHISPER_LARGE_V3 = dict(
    model_type="whisper",
    d_model=1280,
    encoder_layers=32,
    encoder_attention_heads=20,
    encoder_ffn_dim=5120,
    decoder_layers=32,
    decoder_attention_heads=20,
    decoder_ffn_dim=5120,
    num_mel_bins=128,
    max_source_positions=1500,
    vocab_size=51866,
)
LLAMA_31_8B = dict(
    model_type="llama",
    hidden_size=4096,
    intermediate_size=14336,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    max_position_embeddings=131072,
    rope_theta=500000.0,
    tie_word_embeddings=False,
    rope_scaling={
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    },
)
LLAMA3_VOCAB = 128256


def full_size_encoder(enc) -> None:
    """An encoder config's architecture in place of its checkpoint name (Whisper-large-v3 for a
    Whisper, WavLM-large for a WavLM, HuBERT-large otherwise)."""
    name = (enc.name_or_path or "").lower()
    if enc.kind == "whisper":
        enc.hf_config = dict(WHISPER_LARGE_V3)
    elif "wavlm" in name:
        enc.hf_config = dict(WAVLM_LARGE)
    else:  # an hf encoder becomes HuBERT-large; a filterbank front end stays one (no weights)
        enc.hf_config = dict(HUBERT_LARGE)
    enc.name_or_path = None


def full_size_model(cfg):
    """The experiment's stack with full-size shapes on the meta device."""
    full_size_encoder(cfg.model.encoder)
    if cfg.model.descriptor_encoder is not None:
        full_size_encoder(cfg.model.descriptor_encoder)
    cfg.model.llm.name_or_path, cfg.model.llm.hf_config = None, dict(LLAMA_31_8B)
    cfg.model.llm.dtype = "bfloat16"
    with torch.device("meta"):
        # The prompt builder only needs the special tokens; the LLM gets Llama-3's vocabulary.
        return build_model(cfg.model, build_word_tokenizer([]), vocab_size=LLAMA3_VOCAB)


def count(cfg_path: str | None) -> dict:
    cfg = load_config([cfg_path] if cfg_path else [])
    model = full_size_model(cfg)
    params = dict(model.named_parameters())

    def total(names) -> int:
        return sum(params[n].numel() for n in names)

    return {
        "config": cfg_path,
        "total": total(params),
        "encoder": total([n for n in params if n.startswith("encoder.")]),
        "descriptor_encoder": total([n for n in params if n.startswith("descriptor_encoder.")]),
        "llm_base": total([n for n in params if n.startswith("llm.") and "lora_" not in n]),
        "lora": total([n for n in params if "lora_" in n]),
        "content_branch": total([n for n in params if n.startswith("content.")]),
        "descriptor_branch": total([n for n in params if n.startswith("descriptor.")]),
        "trainable_per_stage": {s.name: total(trainable_names(model, list(s.trainable))) for s in cfg.training.stages},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", nargs="?", default="experiments/sys7_iemocap.yaml")
    ap.add_argument("--out", default="benchmarks/results/param_counts.json")
    args = ap.parse_args()
    res = count(args.config)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
