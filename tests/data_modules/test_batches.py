"""Collation: a padded batch, unusable clips skipped with their reasons, resampling, captions
re-rendered with only the named descriptors."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from lhotse import CutSet

from data_modules.batches import SpeechBatchDataset, padding_efficiency
from data_modules.config import DataConfig
from data_modules.records import make_cut


def write_clip(path, seconds: float, sr: int = 16000, value: float | None = None) -> int:
    n = int(seconds * sr)
    audio = (
        np.full(n, value, np.float32)
        if value is not None
        else 0.1 * np.random.default_rng(0).standard_normal(n).astype(np.float32)
    )
    sf.write(path, audio, sr)
    return n


def test_collate_pads_and_skips_bad_clips_with_reasons(tmp_path):
    good = [(f"good{i}", write_clip(tmp_path / f"good{i}.wav", s)) for i, s in enumerate([1.0, 2.5])]
    silent = write_clip(tmp_path / "silent.wav", 1.0, value=0.0)
    short = write_clip(tmp_path / "short.wav", 0.1)
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF0000WAVEjunk")
    cuts = [
        make_cut(
            i, tmp_path / f"{i}.wav", sampling_rate=16000, num_samples=n, corpus="t", split="train", transcript="x"
        )
        for i, n in good
    ]
    cuts += [
        make_cut("silent", tmp_path / "silent.wav", sampling_rate=16000, num_samples=silent, corpus="t", split="train"),
        make_cut("short", tmp_path / "short.wav", sampling_rate=16000, num_samples=short, corpus="t", split="train"),
        make_cut(
            "corrupt", tmp_path / "corrupt.wav", sampling_rate=16000, num_samples=16000, corpus="t", split="train"
        ),
        make_cut(
            "missing", tmp_path / "missing.wav", sampling_rate=16000, num_samples=16000, corpus="t", split="train"
        ),
    ]
    batch = SpeechBatchDataset(DataConfig())[CutSet.from_cuts(cuts)]
    assert batch["ids"] == ["good0", "good1"]
    assert batch["wave"].shape == (2, 40000)
    assert batch["wave_lens"].tolist() == [16000, 40000]
    assert torch.count_nonzero(batch["wave"][0, 16000:]) == 0
    reasons = {s["id"]: s["reason"].split(":")[0] for s in batch["skipped"]}
    assert reasons == {
        "silent": "silent_audio",
        "short": "too_short",
        "corrupt": "audio_decode_failed",
        "missing": "audio_decode_failed",
    }
    assert batch["padding_efficiency"] == pytest.approx(56000 / 80000)
    assert padding_efficiency(torch.tensor([5, 5])) == 1.0


def test_resampling_to_model_rate(tmp_path):
    n = write_clip(tmp_path / "a.wav", 1.0, sr=24000)
    cut = make_cut("a", tmp_path / "a.wav", sampling_rate=24000, num_samples=n, corpus="t", split="x")
    batch = SpeechBatchDataset(DataConfig())[CutSet.from_cuts([cut])]
    assert batch["wave_lens"].tolist() == [16000]


def test_caption_attributes_rerender_the_captions_with_only_those_named(tmp_path):
    """SEmoLLM's per-attribute ablation: the same record, captions naming fewer descriptors."""
    from data_modules.captions import render_partial_caption
    from explainable_ser.model.prompts import caption_attributes

    n = write_clip(tmp_path / "a.wav", 1.0)
    attrs = {"gender": "female", "pitch": "high", "volume": "low", "speed": "fast", "emphasis": "door"}
    cuts = [
        make_cut(
            "a",
            tmp_path / "a.wav",
            sampling_rate=16000,
            num_samples=n,
            corpus="t",
            split="x",
            transcript="open the door",
            caption="the corpus's own caption",
            attributes=attrs,
            rationale="She sounds hurried.",
        ),
        make_cut(
            "b",
            tmp_path / "a.wav",
            sampling_rate=16000,
            num_samples=n,
            corpus="t",
            split="x",
            transcript="open the door",
            caption="a caption without attributes",
        ),
    ]
    everything = SpeechBatchDataset(DataConfig())[CutSet.from_cuts(cuts)]["records"]
    assert everything[0]["caption"] == "the corpus's own caption"  # off: the corpus's captions
    assert everything[0]["rationale"] == "She sounds hurried."
    no_pitch = SpeechBatchDataset(DataConfig(caption_attributes=["gender", "volume", "speed", "emphasis"]))
    recs = no_pitch[CutSet.from_cuts(cuts)]["records"]
    assert recs[0]["caption"] == 'A female speaker with low volume speaks at a fast pace, emphasizing the word "door".'
    assert caption_attributes(recs[0]["caption"]) == {**attrs, "pitch": None}
    assert recs[1]["caption"] is None  # no attributes: no caption (caption tasks skip it)
    for names in (["pitch"], ["gender", "speed"], ["emphasis"]):
        read = caption_attributes(render_partial_caption(attrs, names))
        assert {k for k, v in read.items() if v} == set(names), names
        assert all(read[k] == attrs[k] for k in names)
