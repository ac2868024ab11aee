"""Building the method's network from a :class:`~explainable_ser.config.ModelConfig`: the LLM
(``from_pretrained``, or random from ``hf_config`` for offline runs; 4-bit when asked) with LoRA,
the encoder, and :class:`~explainable_ser.model.ser.ExplainableSER` around them."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from torch import nn
from transformers import AutoModelForCausalLM, BitsAndBytesConfig

from explainable_ser.model.encoders import build_encoder, resolve_dtype
from explainable_ser.model.ser import ExplainableSER
from explainable_ser.offline.random_init import offline_weights, random_model


def build_llm(
    cfg, vocab_size: int, device: str = "cpu", random_init_dir: str | Path | None = None, init_seed: int | None = None
) -> nn.Module:
    """The causal LM with LoRA: ``from_pretrained`` (real) or random from ``hf_config``.

    A random LLM is frozen but never trained, so checkpoints do not hold it: with
    ``random_init_dir`` it is saved there (``save_pretrained``) on first build and loaded from
    there afterwards, exactly like a downloaded model.
    """

    dtype = resolve_dtype(cfg.dtype, device)
    path = offline_weights(cfg.name_or_path, random_init_dir)
    if path:
        kwargs = {}
        if cfg.load_in_4bit:
            if not torch.cuda.is_available():
                raise ValueError("model.llm.load_in_4bit (QLoRA) needs a CUDA GPU and bitsandbytes")
            # Quantisation happens while loading, on this process's GPU: the model is built
            # before the Trainer picks the rank's device, so the launcher's LOCAL_RANK says which.
            kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", os.environ.get("SLURM_LOCALID", 0)))}
            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_compute_dtype=torch.bfloat16,
                bnb_4bit_use_double_quant=True,
            )
        llm = AutoModelForCausalLM.from_pretrained(
            path,
            dtype=dtype,
            attn_implementation=cfg.attn_implementation,
            trust_remote_code=cfg.trust_remote_code,
            **kwargs,
        )
    else:
        llm = random_model(
            AutoModelForCausalLM,
            {**dict(cfg.hf_config), "vocab_size": vocab_size},
            cfg.attn_implementation,
            random_init_dir,
            dtype=dtype,
        )
    llm.requires_grad_(False)
    if cfg.gradient_checkpointing:
        llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        llm.config.use_cache = False
    if init_seed is not None:
        # LoRA (and, after it, the branches) start from the same numbers whether the frozen
        # weights were just drawn at random or loaded: a restarted run initialises identically.
        torch.manual_seed(init_seed)
    lora = LoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=list(cfg.lora.target_modules),
        modules_to_save=list(cfg.lora.modules_to_save) or None,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(llm, lora)


def build_model(
    cfg,
    tokenizer,
    device: str = "cpu",
    vocab_size: int | None = None,
    random_init_dir: str | Path | None = None,
    init_seed: int | None = None,
) -> ExplainableSER:
    """The whole stack from a :class:`explainable_ser.config.ModelConfig`.

    ``vocab_size`` overrides the tokenizer's size for a randomly initialised LLM (size-only
    builds). ``random_init_dir`` keeps randomly initialised encoder/LLM weights across builds
    (``{dir}/encoder``, ``{dir}/llm``), so a run's checkpoints can be reloaded. ``init_seed``
    seeds the trainable parts' initialisation (LoRA, branches).
    """
    sub = (lambda name: Path(random_init_dir) / name) if random_init_dir is not None else (lambda name: None)
    encoder = build_encoder(cfg.encoder, random_init_dir=sub("encoder"), device=device)
    descriptor_encoder = (
        build_encoder(cfg.descriptor_encoder, random_init_dir=sub("descriptor_encoder"), device=device)
        if cfg.descriptor_encoder is not None
        else None
    )
    llm = build_llm(
        cfg.llm, vocab_size=vocab_size or len(tokenizer), device=device, random_init_dir=sub("llm"), init_seed=init_seed
    )
    model = ExplainableSER(encoder, llm, tokenizer, cfg, descriptor_encoder)
    if cfg.compile:
        # Module.compile compiles in place: parameter names, hence checkpoints, are unchanged.
        model.content.compile(dynamic=True)
        model.descriptor.compile(dynamic=True)
    return model
