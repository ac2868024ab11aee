"""Assembly: one experiment's data module, tokenizer, model and Lightning module from a config.

* :func:`build` assembles them for training or evaluation, from a data module that
  :func:`~explainable_ser.training.preparation.prepare` made ready.
* :func:`load_trained` rebuilds a trained run from one of its checkpoints (``evaluate``,
  ``predict``).

Training itself (the stages) is :mod:`explainable_ser.training.recipe`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from data_modules.batches import SpeechBatchDataset
from data_modules.datamodule import SpeechDataModule
from explainable_ser.config import ExperimentConfig, load_config
from explainable_ser.model.baseline import build_baseline
from explainable_ser.model.build import build_model
from explainable_ser.model.prompts import TargetSelector
from explainable_ser.model.tokenizer import load_tokenizer
from explainable_ser.offline.tokenizer import build_word_tokenizer
from explainable_ser.training.checkpointing import load_adaptable, read_checkpoint
from explainable_ser.training.lit_baseline import BaselineModule
from explainable_ser.training.lit_module import ExplainableSERModule
from explainable_ser.training.preparation import prepare
from explainable_ser.training.runs import find_checkpoint


def corpus_texts(dm: SpeechDataModule, labels: list[str]):
    """Transcripts, captions (as the data module renders them), rationales and labels of the
    training split (offline tokenizer vocabulary).

    Cuts the data pipeline skips for their text (no supervision, invalid UTF-8) are left out."""
    loader = SpeechBatchDataset(dm.cfg)
    for _, cuts in dm.split_cuts("train_split", metadata_only=True):  # Shar: no audio bytes
        for cut in cuts:
            if SpeechBatchDataset.text_problem(cut) is not None:
                continue
            rec = loader.record(cut)
            for key in ("transcript", "caption", "rationale"):
                if rec.get(key):
                    yield rec[key]
    yield " ".join(labels)


def prepare_tokenizer(cfg: ExperimentConfig, dm: SpeechDataModule, run_dir: Path):
    """Real path: the configured or the LLM's own tokenizer. Offline (a random LLM): a
    word-level one built on the corpus, saved in the run directory and reloaded from there."""
    llm = cfg.model.llm
    if llm.tokenizer:
        return load_tokenizer(llm.tokenizer, llm.trust_remote_code)
    if llm.name_or_path:
        return load_tokenizer(llm.name_or_path, llm.trust_remote_code)
    saved = run_dir / "tokenizer"
    if (saved / "tokenizer.json").exists():
        return load_tokenizer(str(saved))

    tok = build_word_tokenizer(corpus_texts(dm, cfg.training.labels), system_prompt=cfg.model.system_prompt)
    tok.save_pretrained(saved)
    return tok


def compute_device(cfg: ExperimentConfig) -> str:
    """Where the Trainer runs the model (and where evaluation and prediction decode)."""
    wants_gpu = cfg.trainer.accelerator in ("auto", "gpu", "cuda")
    return "cuda" if wants_gpu and torch.cuda.is_available() else "cpu"


def auto_dtype_device(cfg: ExperimentConfig) -> str:
    """The device that ``dtype: auto`` is resolved for: bf16 weights only on a GPU with a bf16
    precision (a ``32-true`` run keeps fp32 weights) and not under FSDP, which needs one dtype
    per sharded unit and casts to bf16 for compute itself."""
    bf16 = cfg.trainer.precision.startswith("bf16") and cfg.trainer.strategy != "fsdp"
    return compute_device(cfg) if bf16 else "cpu"


def build(cfg: ExperimentConfig, run_dir: Path, dm: SpeechDataModule | None = None):
    """Data module, tokenizer and Lightning module for an experiment; builds, prepares nothing.

    ``dm``: the data module :func:`~explainable_ser.training.preparation.prepare` returned (the
    offline word tokenizer reads its training texts); ``None`` for prediction on files, which
    needs a saved or configured tokenizer.
    """
    dm = dm if dm is not None else SpeechDataModule(cfg.data)
    if cfg.model.kind == "discriminative":  # an SSL baseline of Table 2: no LLM, no tokenizer
        model = build_baseline(
            cfg.model,
            list(cfg.training.labels),
            device=auto_dtype_device(cfg),
            random_init_dir=run_dir / "offline_models" / "encoder",
        )
        return dm, BaselineModule(model, cfg)
    tokenizer = prepare_tokenizer(cfg, dm, run_dir)
    # Randomly initialised (offline) encoder/LLM weights live in the run directory, so every
    # later build of this run (resume, evaluate, predict) gets the same frozen weights.
    model = build_model(
        cfg.model,
        tokenizer,
        device=auto_dtype_device(cfg),
        random_init_dir=run_dir / "offline_models",
        init_seed=cfg.seed,
    )
    # Targets are chosen on the data side, in the prompt format of this model; text tokens must
    # leave the LLM's context room.
    room = getattr(getattr(model.llm, "config", None), "max_position_embeddings", None)
    dm.target_selector = TargetSelector(model.prompts, cfg.training.labels, room)
    return dm, ExplainableSERModule(model, cfg)


def load_trained(ckpt: str | Path, overrides: list[str], with_data: bool = True):
    """A trained run from one of its checkpoints (``{run_dir}/{stage}/x.ckpt``).

    The run's ``config.yaml`` comes first unless a YAML is given; ``overrides`` follow.
    Returns ``(cfg, data module, Lightning module, run_dir)``; raises :class:`ConfigError`.
    """
    ckpt = find_checkpoint(ckpt)  # a file, a stage or a run directory
    run_dir = ckpt.parent.parent
    if (run_dir / "config.yaml").exists() and not any(o.endswith((".yaml", ".yml")) for o in overrides):
        overrides = [str(run_dir / "config.yaml"), *overrides]
    state = read_checkpoint(ckpt)  # a bad file fails here, before any model is built
    cfg = load_config(overrides)
    cfg.run_dir = str(run_dir)
    dm, module = build(cfg, run_dir, prepare(cfg, run_dir) if with_data else None)
    module.to(compute_device(cfg))  # evaluate / predict decode where training ran
    load_adaptable(module, ckpt, state)
    return cfg, dm, module, run_dir
