"""Frozen speech encoders behind one interface: all layers' features plus real frame counts.

``forward(wave [B, T], wave_lens [B]) -> (layers [L, B, F, D], frame_lens [B])``

* :class:`HFSpeechEncoder`: any Hugging Face speech encoder that returns hidden states
  (HuBERT, WavLM, wav2vec2), loaded with ``from_pretrained`` or built from a config with random
  weights. Paper: ``facebook/hubert-large-ls960-ft`` (25 layers of ``[B, F, 1024]``, 50 frames/s).
* :class:`WhisperSpeechEncoder`: the encoder of any Whisper checkpoint, on the clip's own
  log-mel (not padded to 30 s).

The offline stand-ins (log-mel filterbank "layers", a CTC-trained conv stack) live in
:mod:`explainable_ser.offline.fbank`; :func:`build_encoder` builds every kind.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, WhisperFeatureExtractor, WhisperModel

from explainable_ser.offline.fbank import CTCFbankEncoder, FbankEncoder
from explainable_ser.offline.random_init import offline_weights, random_model


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
        # The frozen encoder may be stored in bf16 (``model.encoder.dtype``): inputs follow it.
        wave = wave.to(self.model.dtype)
        out = self.model(wave, attention_mask=mask, output_hidden_states=True)
        layers = torch.stack(out.hidden_states, dim=0)  # [L, B, F, D]
        frame_lens = self.frame_lengths(wave_lens).clamp(max=layers.shape[2])
        return layers, frame_lens


class WhisperSpeechEncoder(nn.Module):
    """A frozen Whisper encoder (any size, hub or packaged) returning every hidden state.

    Whisper was trained on 30 s windows; padding every clip to 30 s costs ~25x the compute of a
    3 s clip, so the log-mel of the clip alone is used and the sinusoidal positions are sliced to
    its length (the clip's states then differ somewhat from the padded call's: a design choice,
    measured in the README). In a batch, the conv outputs past each clip's end are zeroed and a
    key-padding mask keeps attention inside the clip, so a batched clip gets the same states as
    the clip alone. Frames: 100 Hz log-mel, halved by the stride-2 conv, 50 Hz like HuBERT.
    """

    def __init__(self, model: nn.Module, feature_extractor, append_log_mel: bool = False):
        super().__init__()
        self.model = model  # transformers' WhisperEncoder
        self.features = feature_extractor  # WhisperFeatureExtractor (log-mel, Whisper's scaling)
        self.max_frames = model.config.max_source_positions
        self.append_log_mel = append_log_mel

    @property
    def num_layers(self) -> int:
        return self.model.config.encoder_layers + 1  # embedding output + each layer

    @property
    def hidden_size(self) -> int:
        extra = 2 * self.features.feature_size if self.append_log_mel else 0
        return self.model.config.d_model + extra

    def mel_lengths(self, wave_lens: torch.Tensor) -> torch.Tensor:
        # WhisperFeatureExtractor: centred STFT (1 + n // hop frames), last frame dropped.
        return wave_lens // self.features.hop_length

    def frame_lengths(self, wave_lens: torch.Tensor) -> torch.Tensor:
        return (self.mel_lengths(wave_lens) - 1) // 2 + 1  # conv2: kernel 3, stride 2, padding 1

    def log_mel(self, wave: torch.Tensor, wave_lens: torch.Tensor) -> torch.Tensor:
        """[B, T] -> [B, n_mels, M] log-mel, each clip computed alone, zero past its end."""
        mel_lens = self.mel_lengths(wave_lens)
        out = wave.new_zeros(wave.shape[0], self.features.feature_size, int(mel_lens.max()), dtype=torch.float32)
        for i, n in enumerate(wave_lens.tolist()):
            clip = wave[i, :n].float().cpu().numpy()
            with torch.autocast("cpu", enabled=False):  # the STFT and log stay fp32 under bf16 autocast
                feats = self.features(
                    clip, sampling_rate=self.features.sampling_rate, padding="longest", return_tensors="pt"
                ).input_features[0]  # [n_mels, M_i]
            m = int(mel_lens[i])
            out[i, :, :m] = feats[:, :m].to(out.device)
        return out

    def forward(self, wave: torch.Tensor, wave_lens: torch.Tensor):
        # wave: [B, T] float, zero-padded; wave_lens: [B]
        enc = self.model
        frame_lens = self.frame_lengths(wave_lens)
        if int(frame_lens.max()) > self.max_frames:
            longest = float(wave_lens.max()) / self.features.sampling_rate
            raise ValueError(
                f"Whisper encodes at most {self.max_frames // 50} s of audio, got a "
                f"{longest:.1f} s clip: set data.max_clip_seconds to "
                f"{self.max_frames // 50} or less (longer clips are then skipped as too_long)"
            )
        mel = self.log_mel(wave, wave_lens).to(enc.conv1.weight.dtype)  # [B, n_mels, M]
        mel_mask = (
            torch.arange(mel.shape[2], device=mel.device)[None] < self.mel_lengths(wave_lens).to(mel.device)[:, None]
        )
        x = F.gelu(enc.conv1(mel)) * mel_mask[:, None]  # [B, D, M]; zero past the clip for conv2
        x = F.gelu(enc.conv2(x)).transpose(1, 2)  # [B, F, D]
        valid = torch.arange(x.shape[1], device=x.device)[None] < frame_lens.to(x.device)[:, None]
        x = x + enc.embed_positions.weight[: x.shape[1]]  # positions sliced to the clip
        # Key-padding mask, additive: [B, 1, 1, F] broadcast over heads and queries.
        mask = torch.zeros(valid.shape, dtype=x.dtype, device=x.device)
        mask = mask.masked_fill(~valid, torch.finfo(x.dtype).min)[:, None, None]
        states = [x]
        for layer in enc.layers:
            x = layer(x, mask)
            x = x[0] if isinstance(x, tuple) else x
            states.append(x)
        states[-1] = enc.layer_norm(states[-1])  # as transformers' hidden_states
        layers = torch.stack(states, dim=0)  # [L, B, F, D]
        if self.append_log_mel:
            # Two 10 ms log-mel frames per 20 ms frame, the same on every layer (the weighted
            # layer sum keeps them as they are): absolute level and spectral detail that
            # Whisper's layers normalise away, for the descriptor branch.
            f = layers.shape[2]
            pairs = F.pad(mel, (0, 2 * f - mel.shape[2]))[..., : 2 * f]  # [B, n_mels, 2F]
            pairs = pairs.transpose(1, 2).reshape(mel.shape[0], f, -1).to(layers.dtype)  # [B, F, 2*n_mels]
            layers = torch.cat([layers, pairs[None].expand(layers.shape[0], -1, -1, -1)], dim=-1)
        layers = layers * valid[None, ..., None]
        return layers, frame_lens.to(layers.device)


def resolve_dtype(name: str, device: str | torch.device = "cpu") -> torch.dtype:
    """``auto`` is bf16 on a GPU and fp32 elsewhere (CPU bf16 matmuls are slow)."""
    if name == "auto":
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in dtypes:
        raise ValueError(f"dtype must be 'auto' or one of {sorted(dtypes)}, got {name!r}")
    return dtypes[name]


def build_encoder(cfg, random_init_dir=None, device: str = "cpu") -> nn.Module:
    """An encoder from :class:`explainable_ser.config.EncoderConfig`, frozen and in eval mode.

    A randomly initialised HF encoder is saved to ``random_init_dir`` on first build and loaded
    from there afterwards (it is frozen, so checkpoints do not hold it). An HF encoder's weights
    take ``cfg.dtype`` (``auto``: bf16 when ``device`` is a GPU); the filterbank front ends
    always compute in fp32 (log of small energies).
    """
    if cfg.kind == "fbank":
        enc = FbankEncoder(sampling_rate=cfg.sampling_rate, num_mel_bins=cfg.num_mel_bins)
    elif cfg.kind == "ctc_fbank":
        path = offline_weights(cfg.name_or_path, random_init_dir)
        if path:
            enc = CTCFbankEncoder.load(path)
        else:  # untrained: the recipe trains it with train_ctc and saves it before the SER stages
            enc = CTCFbankEncoder(sampling_rate=cfg.sampling_rate, num_mel_bins=cfg.num_mel_bins)
    elif cfg.kind == "whisper":
        enc = build_whisper_encoder(cfg, random_init_dir, device)
    elif cfg.kind == "hf":
        path = offline_weights(cfg.name_or_path, random_init_dir)
        if path:
            model = AutoModel.from_pretrained(
                path, trust_remote_code=cfg.trust_remote_code, attn_implementation=cfg.attn_implementation
            )
        else:
            model = random_model(AutoModel, cfg.hf_config, cfg.attn_implementation, random_init_dir)
        enc = HFSpeechEncoder(model.to(resolve_dtype(cfg.dtype, device)))
    else:
        raise ValueError(f"model.encoder.kind must be 'hf', 'whisper', 'ctc_fbank' or 'fbank', got {cfg.kind!r}")
    enc.requires_grad_(False)
    return enc.eval()


def build_whisper_encoder(cfg, random_init_dir=None, device: str = "cpu") -> WhisperSpeechEncoder:
    """The encoder half of a Whisper checkpoint (hub name, local directory or ``pkg:whisper-*``),
    or a random one from ``cfg.hf_config`` (``model_type: whisper``) saved to ``random_init_dir``."""

    path = offline_weights(cfg.name_or_path, random_init_dir)
    if path:
        whisper = WhisperModel.from_pretrained(
            path, attn_implementation=cfg.attn_implementation, trust_remote_code=cfg.trust_remote_code
        )
        features = WhisperFeatureExtractor.from_pretrained(path, trust_remote_code=cfg.trust_remote_code)
    else:
        whisper = random_model(
            WhisperModel, cfg.hf_config or {"model_type": "whisper"}, cfg.attn_implementation, random_init_dir
        )
        features = WhisperFeatureExtractor(feature_size=whisper.config.num_mel_bins)
        if random_init_dir is not None:
            features.save_pretrained(random_init_dir)
    encoder = whisper.get_encoder()  # the decoder is not needed: drop it
    return WhisperSpeechEncoder(
        encoder.to(resolve_dtype(cfg.dtype, device)), features, append_log_mel=cfg.append_log_mel
    )
