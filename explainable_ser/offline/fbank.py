"""Offline stand-ins for HuBERT: log-mel filterbank "layers" and a CTC-trained conv stack.

* :class:`FbankEncoder`: a randomly initialised tiny HuBERT loses phonetics and absolute
  loudness, so the offline stack uses log-mel filterbanks (lhotse's torch ``Wav2LogFilterBank``,
  no torchaudio) exposed as three fixed "layers": raw log-mel (keeps loudness), per-utterance
  normalised log-mel (phonetics), and its time delta. Two 10 ms frames are stacked to give
  HuBERT's 50 frames/s.
* :class:`CTCFbankEncoder`: the offline stand-in for ``hubert-large-ls960-ft``, which is HuBERT
  *fine-tuned for ASR with CTC*. The filterbank layers above, then a small stack of dilated
  residual convolutions trained with CTC on the corpus's training transcripts
  (:func:`train_ctc`, run once per run by :func:`ensure_ctc_encoder`) before the frozen encoder
  is used, so that, as with the real model, the upper layers carry localised phonetic content and
  the lower ones keep the raw acoustics. Weights are saved (safetensors) and reloaded like a
  downloaded model.

Both follow :mod:`explainable_ser.model.encoders`' interface.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from pathlib import Path

import jiwer
import torch
from lhotse.features.kaldi.layers import Wav2LogFilterBank
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from explainable_ser.config import ConfigError


class FbankEncoder(nn.Module):
    """Log-mel filterbank "layers" for the offline demo (no parameters are learned here)."""

    def __init__(self, sampling_rate: int = 16000, num_mel_bins: int = 80, stack: int = 2):
        super().__init__()

        self.fbank = Wav2LogFilterBank(sampling_rate=sampling_rate, num_filters=num_mel_bins)
        self.sampling_rate = sampling_rate
        self.hop = int(round(0.01 * sampling_rate))
        self.stack = stack
        self.num_mel_bins = num_mel_bins

    @property
    def num_layers(self) -> int:
        return 3

    @property
    def hidden_size(self) -> int:
        return self.num_mel_bins * self.stack

    def frame_lengths(self, wave_lens: torch.Tensor) -> torch.Tensor:
        # Wav2LogFilterBank with snip_edges=False: round(samples / hop) frames, then stacked.
        return ((wave_lens + self.hop // 2) // self.hop) // self.stack

    def forward(self, wave: torch.Tensor, wave_lens: torch.Tensor):
        frame_lens = self.frame_lengths(wave_lens)
        max_frames = int(frame_lens.max())
        layers = wave.new_zeros(3, wave.shape[0], max_frames, self.hidden_size)  # [3, B, F, D]
        # One utterance at a time so padding never leaks into the edge frames: a batch gives
        # exactly the features of each utterance alone.
        for i, n in enumerate(wave_lens.tolist()):
            feats = self.fbank(wave[i : i + 1, :n])[0]  # [frames, mel]
            f = int(frame_lens[i])
            feats = feats[: f * self.stack].reshape(f, self.hidden_size)  # [F, stack*mel]
            normed = (feats - feats.mean(0)) / (feats.std(0) + 1e-5)
            delta = torch.diff(normed, dim=0, prepend=normed[:1])
            layers[0, i, :f] = feats
            layers[1, i, :f] = normed
            layers[2, i, :f] = delta
        return layers, frame_lens


class CTCFbankEncoder(nn.Module):
    """Filterbank layers + dilated residual conv layers (trained with CTC on characters).

    ``forward`` returns ``3 + num_conv_layers`` layers of ``[B, F, 2 * num_mel_bins]`` at 50
    frames/s; the CTC head is used in :func:`train_ctc` only.
    """

    DILATIONS = (1, 2, 4, 1, 2, 4)  # receptive field of about +-0.6 s at 50 frames/s

    def __init__(
        self, sampling_rate: int = 16000, num_mel_bins: int = 80, alphabet: str = " 'abcdefghijklmnopqrstuvwxyz"
    ):
        super().__init__()
        self.fbank = FbankEncoder(sampling_rate, num_mel_bins)
        d = self.fbank.hidden_size
        self.alphabet = alphabet
        self.convs = nn.ModuleList([nn.Conv1d(d, d, 5, padding=2 * k, dilation=k) for k in self.DILATIONS])
        self.norms = nn.ModuleList([nn.LayerNorm(d) for _ in self.DILATIONS])
        self.ctc_head = nn.Linear(d, len(alphabet) + 1)  # index 0 = CTC blank

    @property
    def num_layers(self) -> int:
        return self.fbank.num_layers + len(self.convs)

    @property
    def hidden_size(self) -> int:
        return self.fbank.hidden_size

    def frame_lengths(self, wave_lens: torch.Tensor) -> torch.Tensor:
        return self.fbank.frame_lengths(wave_lens)

    def forward(self, wave: torch.Tensor, wave_lens: torch.Tensor):
        base, frame_lens = self.fbank(wave, wave_lens)  # [3, B, F, D]
        return self.add_conv_layers(base, frame_lens), frame_lens  # [L, B, F, D], [B]

    def add_conv_layers(self, base: torch.Tensor, frame_lens: torch.Tensor) -> torch.Tensor:
        """Filterbank layers [3, B, F, D] -> all layers [3 + n_conv, B, F, D]."""
        mask = torch.arange(base.shape[2], device=base.device)[None] < frame_lens[:, None]
        # [B, 1, F]: padding stays zero, so a batch gives each utterance's features alone.
        mask = mask[:, None].to(base.dtype)
        h = base[1].transpose(1, 2)  # normalised log-mel, [B, D, F]
        layers = list(base)
        for conv, norm in zip(self.convs, self.norms):
            h = h + torch.nn.functional.gelu(norm(conv(h).transpose(1, 2)).transpose(1, 2)) * mask
            layers.append(h.transpose(1, 2))  # [B, F, D]
        return torch.stack(layers, dim=0)

    def encode_text(self, text: str) -> list[int]:
        """Character ids (1-based; characters outside the alphabet are dropped)."""
        return [self.alphabet.index(c) + 1 for c in text.lower() if c in self.alphabet]

    def greedy_decode(self, log_probs: torch.Tensor, frame_lens: torch.Tensor) -> list[str]:
        out = []
        for row, n in zip(log_probs.argmax(-1), frame_lens.tolist()):
            ids = torch.unique_consecutive(row[:n])
            out.append("".join(self.alphabet[i - 1] for i in ids.tolist() if i > 0))
        return out

    def save(self, directory: str | Path) -> None:

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, directory / "model.safetensors")
        (directory / "config.json").write_text(
            json.dumps(
                {
                    "model_type": "ctc_fbank",
                    "sampling_rate": self.fbank.sampling_rate,
                    "num_mel_bins": self.fbank.num_mel_bins,
                    "alphabet": self.alphabet,
                },
                indent=2,
            )
        )

    @classmethod
    def load(cls, directory: str | Path) -> CTCFbankEncoder:

        directory = Path(directory)
        cfg = json.loads((directory / "config.json").read_text())
        if cfg.get("model_type") != "ctc_fbank":
            raise ValueError(
                f"{directory} does not hold a CTC filterbank encoder (config.json model_type={cfg.get('model_type')!r})"
            )
        enc = cls(cfg["sampling_rate"], cfg["num_mel_bins"], cfg["alphabet"])
        enc.load_state_dict(load_file(directory / "model.safetensors"))
        return enc


def train_ctc(
    encoder: CTCFbankEncoder,
    train: list,
    dev: list,
    *,
    epochs: int = 8,
    lr: float = 2e-3,
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Fine-tune the conv layers of a :class:`CTCFbankEncoder` with CTC on (wave [T], text) pairs.

    Filterbanks are computed once; returns ``{"dev_cer": ..., "dev_wer": ..., "seconds": ...}``.
    """

    def features(items):
        feats = []
        with torch.no_grad():
            for wave, text in items:
                layers, _ = encoder.fbank(wave[None], torch.tensor([wave.shape[0]]))
                feats.append((layers[:, 0], text))  # [3, F, D]
        return feats

    def batch(items):
        lens = torch.tensor([f.shape[1] for f, _ in items])
        x = torch.zeros(3, len(items), int(lens.max()), encoder.hidden_size)
        for i, (f, _) in enumerate(items):
            x[:, i, : f.shape[1]] = f
        targets = [torch.tensor(encoder.encode_text(t), dtype=torch.long) for _, t in items]
        return x, lens, targets

    def run_convs(x, lens):  # forward() on precomputed filterbanks -> CTC log-probs [B, F, C]
        return encoder.ctc_head(encoder.add_conv_layers(x, lens)[-1]).log_softmax(-1)

    start = time.time()
    rng = random.Random(seed)
    torch.manual_seed(seed)
    train_f, dev_f = features(train), features(dev)
    params = [p for n, p in encoder.named_parameters() if not n.startswith("fbank.")]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr)
    steps = epochs * ((len(train_f) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    ctc = nn.CTCLoss(zero_infinity=True)
    encoder.train()
    bar = tqdm(total=steps, desc="CTC encoder", disable=not progress)
    for _ in range(epochs):
        rng.shuffle(train_f)
        for i in range(0, len(train_f), batch_size):
            x, lens, targets = batch(train_f[i : i + batch_size])
            log_probs = run_convs(x, lens)
            loss = ctc(log_probs.transpose(0, 1), torch.cat(targets), lens, torch.tensor([len(t) for t in targets]))
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            bar.update()
            bar.set_postfix(ctc=f"{loss.item():.3f}")
    bar.close()
    encoder.requires_grad_(False)
    encoder.eval()
    with torch.no_grad():
        refs, hyps = [], []
        for i in range(0, len(dev_f), batch_size):
            x, lens, _ = batch(dev_f[i : i + batch_size])
            hyps += encoder.greedy_decode(run_convs(x, lens), lens)
            # Scored on the alphabet the head can write (lowercase, no punctuation).
            refs += ["".join(c for c in t.lower() if c in encoder.alphabet) for _, t in dev_f[i : i + batch_size]]
    return {
        "dev_cer": jiwer.cer(refs, hyps) if refs else None,
        "dev_wer": jiwer.wer(refs, hyps) if refs else None,
        "seconds": round(time.time() - start, 1),
        "epochs": epochs,
    }


def ensure_ctc_encoder(cfg, dm, directory: Path) -> None:
    """Offline demo: fine-tune the ``ctc_fbank`` encoder with CTC on the training transcripts
    once, before the SER stages, and save it where :func:`build_model` loads it (like a
    downloaded ``hubert-large-ls960-ft``). Clips that fail the data checks are left out."""

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
        clips, skipped = dm.usable_clips(split_attr)
        out = [(wave, rec["transcript"]) for wave, rec in clips if rec.get("transcript")]
        return out, skipped + len(clips) - len(out)

    train, skipped = pairs("train_split")
    dev, _ = pairs("val_split")
    if not train:
        raise ConfigError("model.encoder.kind=ctc_fbank needs transcripts in the training split")
    print(
        f"[encoder] CTC fine-tuning of the offline encoder on {len(train)} utterances "
        f"({skipped} without usable audio or transcript), {enc_cfg.ctc_epochs} epochs"
    )
    torch.manual_seed(cfg.seed)
    enc = CTCFbankEncoder(enc_cfg.sampling_rate, enc_cfg.num_mel_bins)
    stats = train_ctc(
        enc,
        train,
        dev,
        epochs=enc_cfg.ctc_epochs,
        lr=enc_cfg.ctc_lr,
        seed=cfg.seed,
        progress=cfg.trainer.enable_progress_bar,
    )
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    enc.save(tmp)
    (tmp / "ctc_training.json").write_text(json.dumps(stats, indent=2))
    tmp.replace(directory)  # other ranks and later builds see a complete encoder or none
    scores = (
        f"dev CER {stats['dev_cer']:.3f}, WER {stats['dev_wer']:.3f}"
        if stats["dev_cer"] is not None
        else "no dev split to score"
    )
    print(f"[encoder] {scores} ({stats['seconds']:.0f} s); saved to {directory}")
