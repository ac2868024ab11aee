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
* :class:`CTCFbankEncoder`: the offline stand-in for ``hubert-large-ls960-ft``, which is HuBERT
  *fine-tuned for ASR with CTC*. The filterbank layers above, then a small stack of dilated
  residual convolutions trained with CTC on the corpus's training transcripts
  (:func:`train_ctc`) before the frozen encoder is used, so that, as with the real model, the
  upper layers carry localised phonetic content and the lower ones keep the raw acoustics.
  Weights are saved (safetensors) and reloaded like a downloaded model.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
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
        out = wave.new_zeros(wave.shape[0], self.features.feature_size, int(mel_lens.max()),
                             dtype=torch.float32)
        for i, n in enumerate(wave_lens.tolist()):
            clip = wave[i, :n].float().cpu().numpy()
            with torch.autocast("cpu", enabled=False):  # the STFT and log stay fp32 under bf16 autocast
                feats = self.features(clip, sampling_rate=self.features.sampling_rate, padding="longest",
                                      return_tensors="pt").input_features[0]  # [n_mels, M_i]
            m = int(mel_lens[i])
            out[i, :, :m] = feats[:, :m].to(out.device)
        return out

    def forward(self, wave: torch.Tensor, wave_lens: torch.Tensor):
        # wave: [B, T] float, zero-padded; wave_lens: [B]
        enc = self.model
        frame_lens = self.frame_lengths(wave_lens)
        if int(frame_lens.max()) > self.max_frames:
            longest = float(wave_lens.max()) / self.features.sampling_rate
            raise ValueError(f"Whisper encodes at most {self.max_frames // 50} s of audio, got a "
                             f"{longest:.1f} s clip: lower data.max_clip_duration")
        mel = self.log_mel(wave, wave_lens).to(enc.conv1.weight.dtype)  # [B, n_mels, M]
        mel_mask = (torch.arange(mel.shape[2], device=mel.device)[None]
                    < self.mel_lengths(wave_lens).to(mel.device)[:, None])
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


class FbankEncoder(nn.Module):
    """Log-mel filterbank "layers" for the offline demo (no parameters are learned here)."""

    def __init__(self, sampling_rate: int = 16000, num_mel_bins: int = 80, stack: int = 2):
        super().__init__()
        from lhotse.features.kaldi.layers import Wav2LogFilterBank

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

    def __init__(self, sampling_rate: int = 16000, num_mel_bins: int = 80,
                 alphabet: str = " 'abcdefghijklmnopqrstuvwxyz"):
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
        mask = (torch.arange(base.shape[2], device=base.device)[None] < frame_lens[:, None])
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
        import json

        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, directory / "model.safetensors")
        (directory / "config.json").write_text(json.dumps({
            "model_type": "ctc_fbank", "sampling_rate": self.fbank.sampling_rate,
            "num_mel_bins": self.fbank.num_mel_bins, "alphabet": self.alphabet}, indent=2))

    @classmethod
    def load(cls, directory: str | Path) -> "CTCFbankEncoder":
        import json

        from safetensors.torch import load_file

        directory = Path(directory)
        cfg = json.loads((directory / "config.json").read_text())
        if cfg.get("model_type") != "ctc_fbank":
            raise ValueError(f"{directory} does not hold a CTC filterbank encoder (config.json "
                             f"model_type={cfg.get('model_type')!r})")
        enc = cls(cfg["sampling_rate"], cfg["num_mel_bins"], cfg["alphabet"])
        enc.load_state_dict(load_file(directory / "model.safetensors"))
        return enc


def train_ctc(encoder: CTCFbankEncoder, train: list, dev: list, *, epochs: int = 8,
              lr: float = 2e-3, batch_size: int = 32, seed: int = 0, progress: bool = True) -> dict:
    """Fine-tune the conv layers of a :class:`CTCFbankEncoder` with CTC on (wave [T], text) pairs.

    Filterbanks are computed once; returns ``{"dev_cer": ..., "dev_wer": ..., "seconds": ...}``.
    """
    import random
    import time

    import jiwer
    from tqdm.auto import tqdm

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
            loss = ctc(log_probs.transpose(0, 1), torch.cat(targets), lens,
                       torch.tensor([len(t) for t in targets]))
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
    return {"dev_cer": jiwer.cer(refs, hyps) if refs else None,
            "dev_wer": jiwer.wer(refs, hyps) if refs else None,
            "seconds": round(time.time() - start, 1), "epochs": epochs}


def resolve_dtype(name: str, device: str | torch.device = "cpu") -> torch.dtype:
    """``auto`` is bf16 on a GPU and fp32 elsewhere (CPU bf16 matmuls are slow)."""
    if name == "auto":
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in dtypes:
        raise ValueError(f"dtype must be 'auto' or one of {sorted(dtypes)}, got {name!r}")
    return dtypes[name]


def offline_weights(name_or_path: str | None, random_init_dir: str | Path | None) -> str | None:
    """Where to load from: the configured model (a ``pkg:`` name is fetched and converted on
    first use), else a random model saved by an earlier build."""
    if name_or_path:
        from explainable_ser.pretrained import resolve

        return resolve(name_or_path)
    if random_init_dir is not None and (Path(random_init_dir) / "config.json").exists():
        return str(random_init_dir)
    return None


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
        else:  # untrained: fit.py trains it with train_ctc and saves it before training the SER
            enc = CTCFbankEncoder(sampling_rate=cfg.sampling_rate, num_mel_bins=cfg.num_mel_bins)
    elif cfg.kind == "whisper":
        enc = build_whisper_encoder(cfg, random_init_dir, device)
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
        enc = HFSpeechEncoder(model.to(resolve_dtype(cfg.dtype, device)))
    else:
        raise ValueError(f"model.encoder.kind must be 'hf', 'whisper', 'ctc_fbank' or 'fbank', got {cfg.kind!r}")
    enc.requires_grad_(False)
    return enc.eval()


def build_whisper_encoder(cfg, random_init_dir=None, device: str = "cpu") -> WhisperSpeechEncoder:
    """The encoder half of a Whisper checkpoint (hub name, local directory or ``pkg:whisper-*``),
    or a random one from ``cfg.hf_config`` (``model_type: whisper``) saved to ``random_init_dir``."""
    from transformers import AutoConfig, WhisperFeatureExtractor, WhisperModel

    path = offline_weights(cfg.name_or_path, random_init_dir)
    if path:
        whisper = WhisperModel.from_pretrained(path, attn_implementation=cfg.attn_implementation,
                                               trust_remote_code=cfg.trust_remote_code)
        features = WhisperFeatureExtractor.from_pretrained(path, trust_remote_code=cfg.trust_remote_code)
    else:
        hf_cfg = AutoConfig.for_model(**dict(cfg.hf_config or {"model_type": "whisper"}))
        hf_cfg._attn_implementation = cfg.attn_implementation
        whisper = WhisperModel(hf_cfg)
        features = WhisperFeatureExtractor(feature_size=hf_cfg.num_mel_bins)
        if random_init_dir is not None:
            whisper.save_pretrained(random_init_dir)
            features.save_pretrained(random_init_dir)
    encoder = whisper.get_encoder()  # the decoder is not needed: drop it
    return WhisperSpeechEncoder(encoder.to(resolve_dtype(cfg.dtype, device)), features,
                                append_log_mel=cfg.append_log_mel)
