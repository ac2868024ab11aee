"""The offline filterbank encoders: batch-invariant layers, CTC training, save/load."""

from __future__ import annotations

import json

import torch

from data_modules.synthcraft import generate
from explainable_ser.config import load_config
from explainable_ser.model.encoders import build_encoder
from explainable_ser.offline.fbank import CTCFbankEncoder, train_ctc


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
            assert torch.all(layers[:, i, int(n[0]) :] == 0)


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
            return torch.nn.functional.ctc_loss(
                lp.transpose(0, 1), torch.cat(targets), fl, torch.tensor([len(t) for t in targets])
            ).item()

    before = ctc_loss()
    stats = train_ctc(enc, train, pairs("dev"), epochs=6, batch_size=8, progress=False)
    assert ctc_loss() < 0.7 * before
    assert 0.0 <= stats["dev_cer"] and not any(p.requires_grad for p in enc.parameters())

    enc.save(tmp_path / "enc")
    assert json.loads((tmp_path / "enc" / "config.json").read_text())["model_type"] == "ctc_fbank"
    cfg = load_config(["offline", "model.encoder.kind=ctc_fbank"]).model.encoder
    again = build_encoder(cfg, random_init_dir=tmp_path / "enc")
    for (k, a), (_, b) in zip(enc.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), k
    assert not again.training


# -- Whisper ----------------------------------------------------------------------------------
