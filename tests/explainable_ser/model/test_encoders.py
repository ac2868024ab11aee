"""The speech encoders: Whisper's batched clips get the states of each clip alone, its window,
its random weights saved and reloaded."""

from __future__ import annotations

import pytest
import torch

from explainable_ser.config import load_config
from explainable_ser.model.encoders import build_encoder

TINY_WHISPER = {
    "model_type": "whisper",
    "num_mel_bins": 80,
    "d_model": 32,
    "encoder_layers": 2,
    "decoder_layers": 1,
    "encoder_attention_heads": 2,
    "decoder_attention_heads": 2,
    "encoder_ffn_dim": 64,
    "decoder_ffn_dim": 64,
    "max_source_positions": 1500,
    "vocab_size": 64,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 1,
    "decoder_start_token_id": 2,
}


def whisper_encoder(append_log_mel=False, **fields):
    cfg = load_config(["offline", "model.encoder.kind=whisper"]).model.encoder
    cfg.hf_config = {**TINY_WHISPER, **fields}
    cfg.append_log_mel = append_log_mel
    return build_encoder(cfg)


def test_whisper_batched_clips_get_the_states_of_each_clip_alone(seeded):
    enc = whisper_encoder(append_log_mel=True)
    lens = [16000, 23999, 7201]
    waves = [0.1 * torch.randn(n) for n in lens]
    batch = torch.zeros(3, max(lens))
    for i, w in enumerate(waves):
        batch[i, : w.numel()] = w
    with torch.no_grad():
        layers, frames = enc(batch, torch.tensor(lens))
        assert layers.shape[:2] == (enc.num_layers, 3) == (3, 3)
        assert layers.shape[-1] == enc.hidden_size == 32 + 160
        assert frames.tolist() == [50, 75, 23]  # 50 Hz: (n // 160 - 1) // 2 + 1
        worst = 0.0
        for i, w in enumerate(waves):
            alone, n = enc(w[None], torch.tensor([w.numel()]))
            assert int(n[0]) == int(frames[i]) == alone.shape[2]
            worst = max(worst, (layers[:, i, : int(n[0])] - alone[:, 0]).abs().max().item())
            assert torch.all(layers[:, i, int(n[0]) :] == 0)
    assert worst < 1e-5, worst


def test_whisper_refuses_clips_longer_than_its_window():
    enc = whisper_encoder(max_source_positions=100)  # 2 s
    with pytest.raises(ValueError, match="at most 2 s"):
        enc(torch.zeros(1, 16000 * 3), torch.tensor([16000 * 3]))


def test_whisper_random_weights_are_saved_and_reloaded(tmp_path, seeded):
    cfg = load_config(["offline", "model.encoder.kind=whisper"]).model.encoder
    cfg.hf_config = dict(TINY_WHISPER)
    a = build_encoder(cfg, random_init_dir=tmp_path / "enc")
    b = build_encoder(cfg, random_init_dir=tmp_path / "enc")
    wave = 0.1 * torch.randn(1, 8000)
    with torch.no_grad():
        assert torch.equal(a(wave, torch.tensor([8000]))[0], b(wave, torch.tensor([8000]))[0])
