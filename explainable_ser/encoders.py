"""Frozen speech encoders behind one interface: all layers' features plus real frame counts.

``forward(wave [B, T], wave_lens [B]) -> (layers [L, B, F, D], frame_lens [B])``

* :class:`HFSpeechEncoder`: any Hugging Face speech encoder that returns hidden states
  (HuBERT, WavLM, wav2vec2), loaded with ``from_pretrained`` or built from a config with random
  weights. Paper: ``facebook/hubert-large-ls960-ft`` (25 layers of ``[B, F, 1024]``, 50 frames/s).
* :class:`FbankEncoder`: the offline-demo front end. A randomly initialised tiny HuBERT loses
  phonetics and absolute loudness, so the demo uses log-mel filterbanks (lhotse's torch
  ``Wav2LogFilterBank``, no torchaudio) exposed as three fixed "layers": raw log-mel (keeps
  loudness), per-utterance normalised log-mel (phonetics), and its time delta. Two 10 ms frames
  are stacked to give HuBERT's 50 frames/s.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


class HFSpeechEncoder(nn.Module):
    """A frozen HF speech encoder returning every hidden state."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        # HuBERT-large / WavLM-large (layer-norm feature extractor) were trained with an
        # attention mask; the base models (group norm) were not and expect zero padding.
        self.use_attention_mask = getattr(model.config, "feat_extract_norm", "layer") == "layer"

    @property
    def num_layers(self) -> int:
        return self.model.config.num_hidden_layers + 1  # embedding output + each layer

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    def frame_lengths(self, wave_lens: torch.Tensor) -> torch.Tensor:
        # HuBERT-large: floor((samples - 400) / 320) + 1, computed from the conv stack's config.
        return self.model._get_feat_extract_output_lengths(wave_lens).long()

    def forward(self, wave: torch.Tensor, wave_lens: torch.Tensor):
        # wave: [B, T] float, zero-padded; wave_lens: [B]
        mask = None
        if self.use_attention_mask:
            mask = (torch.arange(wave.shape[1], device=wave.device)[None] < wave_lens[:, None]).long()
        out = self.model(wave, attention_mask=mask, output_hidden_states=True)
        layers = torch.stack(out.hidden_states, dim=0)  # [L, B, F, D]
        frame_lens = self.frame_lengths(wave_lens).clamp(max=layers.shape[2])
        return layers, frame_lens


class FbankEncoder(nn.Module):
    """Log-mel filterbank "layers" for the offline demo (no parameters are learned here)."""

    def __init__(self, sampling_rate: int = 16000, num_mel_bins: int = 80, stack: int = 2):
        super().__init__()
        from lhotse.features.kaldi.layers import Wav2LogFilterBank

        self.fbank = Wav2LogFilterBank(sampling_rate=sampling_rate, num_filters=num_mel_bins)
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


def offline_weights(name_or_path: str | None, random_init_dir: str | Path | None) -> str | None:
    """Where to load from: the configured model, else a random model saved by an earlier build."""
    if name_or_path:
        return name_or_path
    if random_init_dir is not None and (Path(random_init_dir) / "config.json").exists():
        return str(random_init_dir)
    return None


def build_encoder(cfg, random_init_dir=None) -> nn.Module:
    """An encoder from :class:`explainable_ser.config.EncoderConfig`, frozen and in eval mode.

    A randomly initialised HF encoder is saved to ``random_init_dir`` on first build and loaded
    from there afterwards (it is frozen, so checkpoints do not hold it).
    """
    if cfg.kind == "fbank":
        enc = FbankEncoder(sampling_rate=cfg.sampling_rate, num_mel_bins=cfg.num_mel_bins)
    elif cfg.kind == "hf":
        from transformers import AutoConfig, AutoModel

        path = offline_weights(cfg.name_or_path, random_init_dir)
        if path:
            model = AutoModel.from_pretrained(
                path, trust_remote_code=cfg.trust_remote_code,
                attn_implementation=cfg.attn_implementation)
        else:
            hf_cfg = AutoConfig.for_model(**dict(cfg.hf_config))
            hf_cfg._attn_implementation = cfg.attn_implementation
            model = AutoModel.from_config(hf_cfg)
            if random_init_dir is not None:
                model.save_pretrained(random_init_dir)
        enc = HFSpeechEncoder(model)
    else:
        raise ValueError(f"model.encoder.kind must be 'hf' or 'fbank', got {cfg.kind!r}")
    enc.requires_grad_(False)
    return enc.eval()
