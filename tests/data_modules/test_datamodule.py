"""Sampling invariants (exactly once across ranks, resumable state) and collation."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest
import soundfile as sf
import torch
from lhotse import CutSet

from data_modules.datamodule import (
    DataConfig,
    SpeechBatchDataset,
    build_sampler,
    padding_efficiency,
)
from data_modules.records import canonical_emotion, make_cut, record_of


def fake_cuts(n: int, seed: int = 0) -> CutSet:
    """Cuts with SpeechCraft-like durations (no audio is read by the sampler)."""
    rng = random.Random(seed)
    cuts = []
    for i in range(n):
        dur = round(rng.uniform(1.0, 12.0), 2)
        cuts.append(make_cut(f"utt-{i:05d}", f"/nonexistent/{i}.flac", sampling_rate=16000,
                             num_samples=int(dur * 16000), corpus="fake", split="train",
                             transcript="a b", emotion="sad"))
    return CutSet.from_cuts(cuts)


def served_ids(sampler) -> list[str]:
    return [c.id for batch in sampler for c in batch]


@pytest.mark.parametrize("bucketing", [True, False])
def test_two_ranks_serve_every_utterance_exactly_once(bucketing):
    cuts = fake_cuts(523)
    cfg = DataConfig(max_duration=40.0, bucketing=bucketing, shuffle=True, drop_last=False)
    per_rank = []
    for rank in (0, 1):
        sampler = build_sampler(cuts, cfg, train=True, world_size=2, rank=rank)
        sampler.set_epoch(3)
        per_rank.append(served_ids(sampler))
    union = per_rank[0] + per_rank[1]
    assert not [i for i, c in Counter(union).items() if c > 1], "no duplicated cut ids across ranks"
    assert set(union) == set(cuts.ids), "every utterance of the epoch is served"
    assert not set(per_rank[0]) & set(per_rank[1])


def test_restored_sampler_continues_without_repeat_or_skip():
    cuts = fake_cuts(300)
    cfg = DataConfig(max_duration=30.0, bucketing=True, shuffle=True)
    full = build_sampler(cuts, cfg, train=True)
    full.set_epoch(1)
    reference = [[c.id for c in b] for b in full]

    first = build_sampler(cuts, cfg, train=True)
    first.set_epoch(1)
    it = iter(first)
    head = [[c.id for c in next(it)] for _ in range(7)]
    state = first.state_dict()

    resumed = build_sampler(cuts, cfg, train=True)
    resumed.load_state_dict(state)
    tail = [[c.id for c in b] for b in resumed]
    assert head + tail == reference


def test_bucketing_pads_less_than_random_batches():
    cuts = fake_cuts(800)

    def efficiency(bucketing: bool) -> float:
        cfg = DataConfig(max_duration=60.0, bucketing=bucketing, num_buckets=20)
        real = padded = 0
        for batch in build_sampler(cuts, cfg, train=True):
            d = [c.duration for c in batch]
            real, padded = real + sum(d), padded + max(d) * len(d)
        return real / padded

    assert efficiency(True) > efficiency(False) + 0.1


def write_clip(path, seconds: float, sr: int = 16000, value: float | None = None) -> int:
    n = int(seconds * sr)
    audio = np.full(n, value, np.float32) if value is not None else \
        0.1 * np.random.default_rng(0).standard_normal(n).astype(np.float32)
    sf.write(path, audio, sr)
    return n


def test_collate_pads_and_skips_bad_clips_with_reasons(tmp_path):
    good = [(f"good{i}", write_clip(tmp_path / f"good{i}.wav", s)) for i, s in enumerate([1.0, 2.5])]
    silent = write_clip(tmp_path / "silent.wav", 1.0, value=0.0)
    short = write_clip(tmp_path / "short.wav", 0.1)
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF0000WAVEjunk")
    cuts = [make_cut(i, tmp_path / f"{i}.wav", sampling_rate=16000, num_samples=n, corpus="t",
                     split="train", transcript="x") for i, n in good]
    cuts += [make_cut("silent", tmp_path / "silent.wav", sampling_rate=16000, num_samples=silent,
                      corpus="t", split="train"),
             make_cut("short", tmp_path / "short.wav", sampling_rate=16000, num_samples=short,
                      corpus="t", split="train"),
             make_cut("corrupt", tmp_path / "corrupt.wav", sampling_rate=16000, num_samples=16000,
                      corpus="t", split="train"),
             make_cut("missing", tmp_path / "missing.wav", sampling_rate=16000, num_samples=16000,
                      corpus="t", split="train")]
    batch = SpeechBatchDataset(DataConfig())[CutSet.from_cuts(cuts)]
    assert batch["ids"] == ["good0", "good1"]
    assert batch["wave"].shape == (2, 40000)
    assert batch["wave_lens"].tolist() == [16000, 40000]
    assert torch.count_nonzero(batch["wave"][0, 16000:]) == 0
    reasons = {s["id"]: s["reason"].split(":")[0] for s in batch["skipped"]}
    assert reasons == {"silent": "silent_audio", "short": "too_short",
                       "corrupt": "audio_decode_failed", "missing": "audio_decode_failed"}
    assert batch["padding_efficiency"] == pytest.approx(56000 / 80000)
    assert padding_efficiency(torch.tensor([5, 5])) == 1.0


def test_resampling_to_model_rate(tmp_path):
    n = write_clip(tmp_path / "a.wav", 1.0, sr=24000)
    cut = make_cut("a", tmp_path / "a.wav", sampling_rate=24000, num_samples=n, corpus="t", split="x")
    batch = SpeechBatchDataset(DataConfig())[CutSet.from_cuts([cut])]
    assert batch["wave_lens"].tolist() == [16000]


def test_record_round_trip():
    cut = make_cut("u1", "/x.flac", sampling_rate=16000, num_samples=32000, corpus="c", split="dev",
                   transcript="hi", caption="cap", emotion="happy", attributes={"pitch": "low"},
                   annotator_emotions=["happy", "sad"], speaker="s1", gender="female", session=2)
    rec = record_of(CutSet.from_dicts([cut.to_dict()])[0])  # survives serialisation
    assert rec["transcript"] == "hi" and rec["caption"] == "cap" and rec["emotion"] == "happy"
    assert rec["attributes"] == {"pitch": "low"} and rec["annotator_emotions"] == ["happy", "sad"]
    assert rec["speaker"] == "s1" and rec["gender"] == "female" and rec["session"] == 2
    assert rec["duration"] == 2.0


def test_canonical_emotion_labels():
    assert canonical_emotion("exc") == "happy"  # IEMOCAP: excited merged into happy
    assert canonical_emotion(" Joy ") == "happy" and canonical_emotion("anger") == "angry"
    assert canonical_emotion("unknown") is None and canonical_emotion("fru") is None
    assert canonical_emotion(None) is None


def test_starting_a_loader_leaves_the_global_rng_alone(tmp_path):
    """Exact resume relies on it: loaders are created at different points of a resumed run."""
    from data_modules.datamodule import CorpusSpec, SpeechDataModule
    from data_modules.records import manifest_path

    fake_cuts(12).to_file(manifest_path(tmp_path, "fake", "dev"))
    dm = SpeechDataModule(DataConfig(corpora=[CorpusSpec(name="fake", dir=str(tmp_path))]))
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    iter(dm.eval_dataloaders("val_split", 1, 0)[0])
    assert torch.equal(torch.rand(3), expected)


def test_caption_attributes_rerender_the_captions_with_only_those_named(tmp_path):
    """SEmoLLM's per-attribute ablation: the same record, captions naming fewer descriptors."""
    from data_modules.synthcraft import render_partial_caption
    from explainable_ser.model.prompts import caption_attributes

    n = write_clip(tmp_path / "a.wav", 1.0)
    attrs = {"gender": "female", "pitch": "high", "volume": "low", "speed": "fast", "emphasis": "door"}
    cuts = [make_cut("a", tmp_path / "a.wav", sampling_rate=16000, num_samples=n, corpus="t", split="x",
                     transcript="open the door", caption="the corpus's own caption", attributes=attrs,
                     rationale="She sounds hurried."),
            make_cut("b", tmp_path / "a.wav", sampling_rate=16000, num_samples=n, corpus="t", split="x",
                     transcript="open the door", caption="a caption without attributes")]
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
