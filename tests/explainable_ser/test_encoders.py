"""The offline CTC filterbank encoder: batch-invariant layers, CTC training, save/load."""

from __future__ import annotations

import json

import pytest
import torch

from data_modules.synthcraft import generate
from explainable_ser.config import load_config
from explainable_ser.encoders import CTCFbankEncoder, build_encoder, train_ctc


def test_a_batch_gives_each_utterance_its_own_layers(seeded):
    enc = CTCFbankEncoder().eval()
    waves = [torch.randn(8000), torch.randn(12345)]
    batch = torch.zeros(2, 12345)
    for i, w in enumerate(waves):
        batch[i, : w.numel()] = w
    with torch.no_grad():
        layers, lens = enc(batch, torch.tensor([8000, 12345]))
        assert layers.shape[0] == enc.num_layers == 3 + len(CTCFbankEncoder.DILATIONS)
        for i, w in enumerate(waves):
            alone, n = enc(w[None], torch.tensor([w.numel()]))
            assert int(n[0]) == int(lens[i])
            assert torch.allclose(layers[:, i, : int(n[0])], alone[:, 0], atol=1e-5)
            assert torch.all(layers[:, i, int(n[0]):] == 0)


def test_ctc_training_learns_and_the_saved_encoder_reloads(tmp_path, seeded):
    generate(tmp_path / "sc", n_train=32, n_dev=4, n_test=1, seed=2, progress=False)
    from lhotse import CutSet

    def pairs(split):
        cuts = CutSet.from_file(tmp_path / "sc" / f"synthcraft_cuts_{split}.jsonl.gz")
        return [(torch.from_numpy(c.load_audio()[0]), c.supervisions[0].text) for c in cuts]

    enc = CTCFbankEncoder()
    train = pairs("train")
    x = torch.zeros(len(train), max(w.numel() for w, _ in train))
    lens = torch.tensor([w.numel() for w, _ in train])
    for i, (w, _) in enumerate(train):
        x[i, : w.numel()] = w
    targets = [torch.tensor(enc.encode_text(t)) for _, t in train]

    def ctc_loss():
        with torch.no_grad():
            lp, fl = enc.ctc_head(enc(x, lens)[0][-1]).log_softmax(-1), enc.frame_lengths(lens)
            return torch.nn.functional.ctc_loss(lp.transpose(0, 1), torch.cat(targets), fl,
                                                torch.tensor([len(t) for t in targets])).item()

    before = ctc_loss()
    stats = train_ctc(enc, train, pairs("dev"), epochs=6, batch_size=8, progress=False)
    assert ctc_loss() < 0.7 * before
    assert 0.0 <= stats["dev_cer"] and not any(p.requires_grad for p in enc.parameters())

    enc.save(tmp_path / "enc")
    assert json.loads((tmp_path / "enc" / "config.json").read_text())["model_type"] == "ctc_fbank"
    cfg = load_config(["model.encoder.kind=ctc_fbank"]).model.encoder
    again = build_encoder(cfg, random_init_dir=tmp_path / "enc")
    for (k, a), (_, b) in zip(enc.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), k
    assert not again.training


# -- Whisper ----------------------------------------------------------------------------------
TINY_WHISPER = {"model_type": "whisper", "num_mel_bins": 80, "d_model": 32, "encoder_layers": 2,
                "decoder_layers": 1, "encoder_attention_heads": 2, "decoder_attention_heads": 2,
                "encoder_ffn_dim": 64, "decoder_ffn_dim": 64, "max_source_positions": 1500,
                "vocab_size": 64, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 1,
                "decoder_start_token_id": 2}


def whisper_encoder(append_log_mel=False, **fields):
    cfg = load_config(["model.encoder.kind=whisper"]).model.encoder
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
            assert torch.all(layers[:, i, int(n[0]):] == 0)
    assert worst < 1e-5, worst


def test_whisper_refuses_clips_longer_than_its_window():
    enc = whisper_encoder(max_source_positions=100)  # 2 s
    with pytest.raises(ValueError, match="at most 2 s"):
        enc(torch.zeros(1, 16000 * 3), torch.tensor([16000 * 3]))


def test_whisper_random_weights_are_saved_and_reloaded(tmp_path, seeded):
    cfg = load_config(["model.encoder.kind=whisper"]).model.encoder
    cfg.hf_config = dict(TINY_WHISPER)
    a = build_encoder(cfg, random_init_dir=tmp_path / "enc")
    b = build_encoder(cfg, random_init_dir=tmp_path / "enc")
    wave = 0.1 * torch.randn(1, 8000)
    with torch.no_grad():
        assert torch.equal(a(wave, torch.tensor([8000]))[0], b(wave, torch.tensor([8000]))[0])
