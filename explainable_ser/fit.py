"""Train: ``python -m explainable_ser.fit [CONFIG.yaml ...] [key=value ...]``.

With no arguments this runs the offline demo: it prepares the built-in SynthCraft corpus if
absent, trains both stages of the paper on CPU with a tiny random model and a filterbank front
end, then evaluates on the test split. Everything lands under the run directory
(``runs/{name}`` by default):

    config.yaml              the resolved configuration
    tokenizer/               the tokenizer (built on the corpus text in the offline demo)
    {stage}/                 checkpoints per stage (``last.ckpt``, ``final.ckpt``)
    tensorboard/{stage}/     TensorBoard events
    skipped.jsonl            every utterance skipped, with its reason
    predictions.jsonl, metrics.json   after evaluation
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import lightning as L
import torch

from data_modules.datamodule import SpeechDataModule
from data_modules.records import record_of
from explainable_ser.config import ConfigError, ExperimentConfig, load_config, to_yaml
from explainable_ser.lit_module import ExplainableSERModule
from explainable_ser.model import build_model
from explainable_ser.stages import StageCallback
from explainable_ser.tokenizer import build_word_tokenizer, load_tokenizer

DESCRIPTION = __doc__


def corpus_texts(dm: SpeechDataModule, labels: list[str]):
    """Transcripts, captions and labels of the training split (offline tokenizer vocabulary)."""
    for _, cuts in dm.split_cuts("train_split"):
        for cut in cuts:
            rec = record_of(cut)
            for key in ("transcript", "caption"):
                if rec.get(key):
                    yield rec[key]
    yield " ".join(labels)


def prepare_tokenizer(cfg: ExperimentConfig, dm: SpeechDataModule, run_dir: Path):
    """Real path: the configured or the LLM's own tokenizer. Offline: a word-level one, saved."""
    llm = cfg.model.llm
    if llm.tokenizer:
        return load_tokenizer(llm.tokenizer, llm.trust_remote_code)
    if llm.name_or_path:
        return load_tokenizer(llm.name_or_path, llm.trust_remote_code)
    saved = run_dir / "tokenizer"
    if (saved / "tokenizer.json").exists():
        return load_tokenizer(str(saved))
    tok = build_word_tokenizer(corpus_texts(dm, cfg.training.labels))
    tok.save_pretrained(saved)
    return tok


def trainer_kwargs(cfg: ExperimentConfig) -> dict:
    t = cfg.trainer
    kw = dict(accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes,
              strategy=t.strategy, precision=t.precision, gradient_clip_val=t.gradient_clip_val,
              accumulate_grad_batches=t.accumulate_grad_batches,
              log_every_n_steps=t.log_every_n_steps, val_check_interval=t.val_check_interval,
              enable_progress_bar=t.enable_progress_bar)
    if t.limit_train_batches is not None:
        kw["limit_train_batches"] = t.limit_train_batches
    if t.limit_val_batches is not None:
        kw["limit_val_batches"] = t.limit_val_batches
    return kw


def load_adaptable(module: ExplainableSERModule, ckpt: Path) -> None:
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    missing = module.load_state_dict(state, strict=False)
    if missing.unexpected_keys:
        raise ConfigError(f"checkpoint {ckpt} does not match this model: unexpected keys "
                          f"{missing.unexpected_keys[:5]} ...")


def build(cfg: ExperimentConfig, run_dir: Path, with_data: bool = True):
    """Data module, tokenizer and Lightning module for an experiment.

    ``with_data=False`` (prediction on files) needs a saved or configured tokenizer.
    """
    dm = SpeechDataModule(cfg.data)
    if with_data:
        dm.prepare_data()
    tokenizer = prepare_tokenizer(cfg, dm, run_dir)
    # Randomly initialised (offline) encoder/LLM weights live in the run directory, so every
    # later build of this run (resume, evaluate, predict) gets the same frozen weights.
    model = build_model(cfg.model, tokenizer, random_init_dir=run_dir / "offline_models")
    return dm, ExplainableSERModule(model, cfg, run_dir)


def load_run(ckpt: str | Path, overrides: list[str], with_data: bool = True):
    """A trained run from one of its checkpoints (``{run_dir}/{stage}/x.ckpt``).

    The run's ``config.yaml`` comes first unless a YAML is given; ``overrides`` follow.
    Returns ``(cfg, data module, Lightning module, run_dir)``; raises :class:`ConfigError`.
    """
    ckpt = Path(ckpt)
    if not ckpt.is_file():
        raise ConfigError(f"checkpoint not found: {ckpt}")
    run_dir = ckpt.parent.parent
    if (run_dir / "config.yaml").exists() and not any(o.endswith((".yaml", ".yml")) for o in overrides):
        overrides = [str(run_dir / "config.yaml"), *overrides]
    cfg = load_config(overrides)
    cfg.run_dir = str(run_dir)
    dm, module = build(cfg, run_dir, with_data=with_data)
    load_adaptable(module, ckpt)
    return cfg, dm, module, run_dir


def run(cfg: ExperimentConfig) -> Path:
    run_dir = cfg.resolved_run_dir()
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(to_yaml(cfg))
    L.seed_everything(cfg.seed, workers=True)
    dm, module = build(cfg, run_dir)
    global_rank = 0
    for stage in cfg.training.stages:
        stage_dir = run_dir / stage.name
        final = stage_dir / "final.ckpt"
        if final.exists():  # finished earlier: carry its weights into the next stage
            print(f"[{stage.name}] already finished, loading {final}")
            load_adaptable(module, final)
            continue
        logger = L.pytorch.loggers.TensorBoardLogger(str(run_dir), name="tensorboard",
                                                     version=stage.name)
        ckpt_cb = L.pytorch.callbacks.ModelCheckpoint(dirpath=str(stage_dir), save_last=True,
                                                      save_top_k=0)
        trainer = L.Trainer(
            max_epochs=stage.epochs, logger=logger, default_root_dir=str(run_dir),
            callbacks=[StageCallback(stage), ckpt_cb,
                       L.pytorch.callbacks.LearningRateMonitor(logging_interval="step")],
            use_distributed_sampler=False,  # the lhotse sampler shards across ranks itself
            **trainer_kwargs(cfg))
        trainer.fit(module, datamodule=dm)
        trainer.save_checkpoint(final)
        global_rank = trainer.global_rank
        print(f"[{stage.name}] done: checkpoint {final}, TensorBoard {logger.log_dir}")
    if cfg.eval.run_after_fit and global_rank == 0:
        # After a DDP fit every rank is still running this script; one process decodes the
        # whole test split and writes the outputs (others would race on the same files).
        from explainable_ser.evaluate import evaluate_module

        evaluate_module(module, dm, cfg, run_dir, world_size=1, rank=0)
    print(f"run directory: {run_dir}")
    return run_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m explainable_ser.fit", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Examples:\n  python -m explainable_ser.fit\n"
               "  python -m explainable_ser.fit experiments/sys7_iemocap.yaml trainer.devices=8\n"
               "  python -m explainable_ser.fit name=quick training.stages.0.epochs=1")
    parser.add_argument("overrides", nargs="*", help="YAML files and key=value overrides, applied in order")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.overrides)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    run(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
