"""The discriminative SSL baselines (Table 2 Sys.1-3) on a tiny random HuBERT."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from explainable_ser.model.baseline import BLANK, CHARS, build_baseline, encode_chars
from explainable_ser.model.prompts import get_task, parse_output

from conftest import tiny_config

LABELS = ["neutral", "happy", "sad", "angry"]


def waves(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    wave = torch.zeros(len(lengths), max(lengths))
    for i, n in enumerate(lengths):
        wave[i, :n] = 0.1 * torch.randn(n, generator=g)
    return wave, torch.tensor(lengths)


@pytest.fixture
def model(seeded):
    cfg = tiny_config("model.kind=discriminative", "model.classifier.dropout=0.0", hubert=True)
    return build_baseline(cfg.model, LABELS).eval()


def test_pooling_ignores_padding(model):
    wave, lens = waves([32000, 12000])
    batched = model(wave, lens)
    single = model(wave[1:, :12000], lens[1:])
    torch.testing.assert_close(batched["emotion_logits"][1], single["emotion_logits"][0], rtol=1e-4, atol=1e-5)


def test_objective_is_ce_plus_weighted_ctc(model):
    wave, lens = waves([32000, 24000, 16000])
    emotions, texts = [2, None, 0], ["the dog", "a cat sat", None]
    res = model.loss(wave, lens, emotions, texts)
    out = model(wave, lens)
    ce = F.cross_entropy(out["emotion_logits"][[0, 2]], torch.tensor([2, 0]))
    targets = [encode_chars(t) for t in texts[:2]]
    ctc = (
        sum(
            F.ctc_loss(
                out["ctc_log_probs"][i, : out["frame_lens"][i]][:, None],
                torch.tensor([targets[i]]),
                out["frame_lens"][i : i + 1],
                torch.tensor([len(targets[i])]),
                blank=BLANK,
                reduction="sum",
            )
            for i in range(2)
        )
        / 2
    )
    torch.testing.assert_close(res["loss"], ce + model.ctc_weight * ctc, rtol=1e-5, atol=1e-5)
    assert (res["n_emotion"], res["n_asr"]) == (2, 2)


def test_greedy_ctc_merges_repeats_and_drops_blanks(model, monkeypatch):
    ids = [0, 3, 3, 0, 3, 1, 1, 4, 0]  # blank a a blank a space space b blank -> "aa b"
    log_probs = torch.full((1, len(ids), len(CHARS) + 1), -10.0)
    log_probs[0, torch.arange(len(ids)), torch.tensor(ids)] = 0.0
    monkeypatch.setattr(
        model, "forward", lambda w, lens: {"ctc_log_probs": log_probs, "frame_lens": torch.tensor([len(ids)])}
    )
    assert CHARS[3 - 1] == "a" and model.transcribe(None, None) == ["aa b"]


def test_answers_parse_like_the_llms(model):
    wave, lens = waves([16000, 20000])
    for name in ("ser", "asr"):
        for raw in model.generate(wave, lens, get_task(name)):
            parsed = parse_output(raw, tuple(LABELS))
            if name == "ser":
                assert parsed["emotion"] in LABELS
            else:
                assert raw == "" or parsed["transcript"] is not None
    with pytest.raises(ValueError, match="only the emotion"):
        model.generate(wave, lens, get_task("ser_sed"))
    probs = model.label_scores(wave, lens, labels=["sad", "happy"])
    full = model.label_scores(wave, lens)
    torch.testing.assert_close(probs, full[:, [2, 1]])


def test_characters_outside_the_alphabet_are_dropped():
    assert "".join(CHARS[i - 1] for i in encode_chars("Don't, 42!")) == "don't "  # digits dropped
    assert "".join(CHARS[i - 1] for i in encode_chars("Don't stop!")) == "don't stop"
    assert encode_chars("你好") == [] and encode_chars(None) == []
