"""The discriminative SSL baselines of the paper's Table 2 (Sys.1-3: HuBERT, WavLM, wav2vec 2.0).

The same frozen encoder interface as the paper's model, then small heads (SUPERB style):

    wave [B, T] --encoder--> layers [L, B, F, D], frame_lens [B]
      emotion: softmax-weighted layer sum [B, F, D] -> mean over real frames [B, D]
               -> dropout -> Linear (or Linear-ReLU-Linear) -> logits [B, C]
      asr:     its own weighted layer sum [B, F, D] -> Linear -> character logits [B, F, V]
    objective (:meth:`DiscriminativeSER.loss`): CE over utterances + ctc_weight * CTC

It answers in the LLM's output format (``Emotion: sad``, ``Transcript: ...``, see
:meth:`DiscriminativeSER.generate`), so decoding, ``evaluate``, ``compare`` and the notebooks
read its predictions unchanged. Plain PyTorch: no Lightning, no data modules.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from explainable_ser.evaluation.asr import normalize_text
from explainable_ser.model.bottleneck import frame_mask
from explainable_ser.model.encoders import build_encoder
from explainable_ser.model.prompts import Task, render_target

#: CTC output alphabet (index 0 is the blank): what :func:`normalize_text` leaves of English
#: text, less digits and symbols (IEMOCAP and MELD transcripts; other characters are dropped).
CHARS = " 'abcdefghijklmnopqrstuvwxyz"
BLANK = 0


def encode_chars(text: str | None) -> list[int]:
    """Normalised text -> CTC target ids (1-based: 0 is the blank); unknown characters dropped."""
    return [CHARS.index(c) + 1 for c in normalize_text(text or "") if c in CHARS]


class LayerSum(nn.Module):
    """Softmax-weighted sum of the encoder's layers (uniform at start)."""

    def __init__(self, num_layers: int):
        super().__init__()
        self.layer_logits = nn.Parameter(torch.zeros(num_layers))

    def layer_weights(self) -> torch.Tensor:
        return torch.softmax(self.layer_logits.float(), dim=0)

    def forward(self, layers: torch.Tensor) -> torch.Tensor:
        # layers: [L, B, F, D] -> [B, F, D]
        return torch.einsum("l,lbfd->bfd", self.layer_weights().to(layers.dtype), layers)


class Heads(nn.Module):
    """Everything that trains: the emotion layer sum + classifier, the ASR layer sum + CTC head."""

    def __init__(self, num_layers: int, dim: int, n_labels: int, cfg):
        super().__init__()
        self.emotion_sum = LayerSum(num_layers)
        self.dropout = nn.Dropout(cfg.dropout)
        if cfg.mlp_hidden:
            self.classifier = nn.Sequential(
                nn.Linear(dim, cfg.mlp_hidden), nn.ReLU(), nn.Linear(cfg.mlp_hidden, n_labels)
            )
        else:
            self.classifier = nn.Linear(dim, n_labels)
        self.asr_sum = LayerSum(num_layers) if cfg.ctc else None
        self.ctc = nn.Linear(dim, len(CHARS) + 1) if cfg.ctc else None


class DiscriminativeSER(nn.Module):
    """Frozen encoder + :class:`Heads`; ``labels`` fixes the classifier's output order."""

    has_descriptor = False  # no descriptor tokens: evaluate skips the counterfactual

    def __init__(self, encoder: nn.Module, labels: list[str], cfg):
        super().__init__()
        self.encoder = encoder  # frozen, eval mode (see train())
        self.labels = list(labels)
        self.ctc_weight = cfg.ctc_weight
        self.heads = Heads(encoder.num_layers, encoder.hidden_size, len(self.labels), cfg)

    def train(self, mode: bool = True):
        super().train(mode)
        self.encoder.eval()  # frozen; HF SSL models mask time steps in train mode
        return self

    def layer_weights(self) -> dict[str, torch.Tensor]:
        out = {"emotion": self.heads.emotion_sum.layer_weights()}
        if self.heads.asr_sum is not None:
            out["asr"] = self.heads.asr_sum.layer_weights()
        return out

    # -- speech -> head outputs ----------------------------------------------------------------
    def forward(self, wave, wave_lens) -> dict[str, torch.Tensor]:
        """``emotion_logits`` [B, C]; ``ctc_log_probs`` [B, F, V] (or None); ``frame_lens`` [B]."""
        with torch.inference_mode():  # frozen: no autograd bookkeeping inside the encoder
            layers, frame_lens = self.encoder(wave, wave_lens)
        dtype = self.heads.emotion_sum.layer_logits.dtype
        layers, frame_lens = layers.to(dtype, copy=True), frame_lens.clone()  # [L, B, F, D]
        mask = frame_mask(frame_lens, layers.shape[2]).to(dtype)  # [B, F]
        x = self.heads.emotion_sum(layers)  # [B, F, D]
        pooled = (x * mask[..., None]).sum(1) / frame_lens.clamp(min=1)[:, None].to(dtype)  # [B, D]
        logits = self.heads.classifier(self.heads.dropout(pooled))  # [B, C]
        ctc = None
        if self.heads.ctc is not None:
            ctc = F.log_softmax(self.heads.ctc(self.heads.asr_sum(layers)).float(), dim=-1)  # [B, F, V]
        return {"emotion_logits": logits, "ctc_log_probs": ctc, "frame_lens": frame_lens}

    def loss(self, wave, wave_lens, emotions: list[int | None], transcripts: list[str | None]) -> dict:
        """The objective: emotion CE averaged over the utterances that have a label, plus
        ``ctc_weight`` x the CTC loss summed over each transcript's characters and averaged over
        the utterances that have one. ``emotions``: label indices (``None``: no label)."""
        out = self(wave, wave_lens)
        device = out["emotion_logits"].device
        zero = out["emotion_logits"].sum() * 0.0  # keeps the graph when a term has no utterance
        has = [i for i, e in enumerate(emotions) if e is not None]
        ce = (
            F.cross_entropy(out["emotion_logits"][has].float(), torch.tensor([emotions[i] for i in has], device=device))
            if has
            else zero
        )
        ctc = zero
        targets = [encode_chars(t) for t in transcripts]
        use = [i for i, t in enumerate(targets) if t]
        if out["ctc_log_probs"] is not None and use:
            log_probs = out["ctc_log_probs"][use].transpose(0, 1)  # [F, B', V]
            flat = torch.tensor([c for i in use for c in targets[i]], device=device)
            ctc = F.ctc_loss(
                log_probs,
                flat,
                out["frame_lens"][use],
                torch.tensor([len(targets[i]) for i in use]),
                blank=BLANK,
                reduction="sum",
                zero_infinity=True,
            ) / len(use)
        return {"loss": ce + self.ctc_weight * ctc, "ce": ce, "ctc": ctc, "n_emotion": len(has), "n_asr": len(use)}

    # -- outputs in the LLM's format ------------------------------------------------------------
    @torch.no_grad()
    def label_scores(
        self, wave, wave_lens, task: Task | None = None, prefixes=None, labels: list[str] | None = None
    ) -> torch.Tensor:
        """Class probabilities [B, C] in ``labels`` order (default: the model's own)."""
        probs = torch.softmax(self(wave, wave_lens)["emotion_logits"].float(), dim=-1)
        order = [self.labels.index(lab) for lab in (labels or self.labels)]
        return probs[:, order]

    @torch.no_grad()
    def transcribe(self, wave, wave_lens) -> list[str]:
        """Greedy CTC: best character per frame, repeats merged, blanks removed."""
        out = self(wave, wave_lens)
        if out["ctc_log_probs"] is None:
            raise ValueError("this baseline has no CTC head (model.classifier.ctc: false): no ASR")
        best = out["ctc_log_probs"].argmax(-1)  # [B, F]
        texts = []
        for ids, n in zip(best.tolist(), out["frame_lens"].tolist()):
            chars, prev = [], BLANK
            for i in ids[:n]:
                if i != prev and i != BLANK:
                    chars.append(CHARS[i - 1])
                prev = i
            texts.append(" ".join("".join(chars).split()))
        return texts

    @torch.no_grad()
    def generate(
        self, wave, wave_lens, task: Task, num_beams: int = 1, max_new_tokens: int = 0, zero_descriptor: bool = False
    ) -> list[str]:
        """The task's answer in the LLM's output format, so one parser reads both models."""
        unknown = set(task.fields) - {"emotion", "transcript"}
        if unknown:
            raise ValueError(
                f"task {task.name!r} asks for {sorted(unknown)}: a discriminative baseline "
                f"predicts only the emotion (ser) and the transcript (asr)"
            )
        n = wave.shape[0]
        emotions = [None] * n
        if "emotion" in task.fields:
            emotions = [self.labels[i] for i in self.label_scores(wave, wave_lens).argmax(-1).tolist()]
        transcripts = self.transcribe(wave, wave_lens) if "transcript" in task.fields else [None] * n
        # An empty transcript renders as nothing; the parser then reports the field as missing.
        return [render_target(task, {"emotion": e, "transcript": t}) or "" for e, t in zip(emotions, transcripts)]


def build_baseline(cfg, labels: list[str], device: str = "cpu", random_init_dir=None) -> DiscriminativeSER:
    """A baseline from :class:`explainable_ser.config.ModelConfig` (``kind: discriminative``)."""

    return DiscriminativeSER(
        build_encoder(cfg.encoder, random_init_dir=random_init_dir, device=device), labels, cfg.classifier
    )
