"""Streaming at scale: lazy JSONL/Shar input, DDP ranks x workers served once, exact resume."""

from __future__ import annotations

import random
import re
from collections import Counter
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import soundfile as sf
import torch
from lhotse import CutSet

from data_modules.datamodule import CorpusSpec, DataConfig, SpeechDataModule
from data_modules.records import make_cut, manifest_path
from data_modules.streaming import (
    LHOTSE_BUFFER_SIZE,
    SHAR_AUDIO_BUFFER_SIZE,
    build_sampler,
    read_split,
    resolved_buffer_size,
    split_format,
)

from conftest import fake_cuts

SR = 16000
SOURCE_SECONDS = 4.0
DUP = re.compile(r"_dup\d+$")


def make_corpus(
    root: Path, name: str = "fake", n: int = 120, seed: int = 0, shar: str | None = "audio", shard_size: int = 20
) -> Path:
    """``n`` cuts (0.5 to 3.5 s segments of three real 4 s clips) as a JSONL manifest and, with
    ``shar``, as Shar shards: ``audio`` (FLAC inside the shards) or ``reference`` (no tar files;
    the shard manifests point at the audio files)."""
    rng = random.Random(seed)
    audio_dir = root / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    sources = []
    for k in range(3):
        path = audio_dir / f"{name}-src{k}.flac"
        noise = np.random.default_rng(seed * 10 + k).standard_normal(int(SOURCE_SECONDS * SR))
        sf.write(path, (0.1 * noise).astype(np.float32), SR)
        sources.append(path)
    cuts = []
    for i in range(n):
        dur = round(rng.uniform(0.5, 3.5), 2)
        start = round(rng.uniform(0.0, SOURCE_SECONDS - dur - 0.01), 2)
        k = i % 3
        cuts.append(
            make_cut(
                f"{name}-{i:04d}",
                sources[k],
                sampling_rate=SR,
                num_samples=int(SOURCE_SECONDS * SR),
                corpus=name,
                split="train",
                transcript="a b",
                emotion="sad",
                start=start,
                duration=dur,
                recording_id=f"{name}-src{k}",
            )
        )
    path = manifest_path(root, name, "train")
    CutSet.from_cuts(cuts).to_file(path)
    if shar is not None:
        out = root / "shar" / "train"
        out.mkdir(parents=True)
        fields = {"recording": "flac"} if shar == "audio" else {}
        with pytest.warns(UserWarning) if shar == "reference" else _no_check():
            CutSet.from_file(path).to_shar(out, fields=fields, shard_size=shard_size)
    return root


class _no_check:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("streaming"))


def config(root: Path, fmt: str = "auto", **kw) -> DataConfig:
    kw.setdefault("max_duration", 8.0)
    return DataConfig(
        corpora=[CorpusSpec(name="fake", dir=str(root), format=fmt, val_split=None, test_split=None)], **kw
    )


def sampler_ids(sampler) -> list[list[str]]:
    return [[c.id for c in batch] for batch in sampler]


def test_auto_format_reads_shar_when_shards_exist_and_both_are_lazy(corpus, tmp_path):
    spec = CorpusSpec(name="fake", dir=str(corpus))
    assert split_format(spec, "train") == "shar"
    jsonl = read_split(CorpusSpec(name="fake", dir=str(corpus), format="jsonl"), "train")
    shar = read_split(spec, "train")
    assert jsonl.is_lazy and shar.is_lazy
    assert sorted(c.id for c in shar) == sorted(c.id for c in jsonl)
    cut = next(iter(shar))
    assert cut.recording.sources[0].type == "memory"  # audio comes from the shard
    ref = {c.id: c for c in jsonl}[cut.id]
    assert cut.load_audio().shape == ref.load_audio().shape
    # Metadata-only reading skips the tar files entirely.
    meta = read_split(spec, "train", metadata_only=True)
    assert [c.duration for c in meta] == [c.duration for c in read_split(spec, "train")]

    only_jsonl = make_corpus(tmp_path / "j", shar=None, n=10)
    assert split_format(CorpusSpec(name="fake", dir=str(only_jsonl)), "train") == "jsonl"
    with pytest.raises(FileNotFoundError, match="--shar"):
        read_split(CorpusSpec(name="fake", dir=str(only_jsonl), format="shar"), "train")
    with pytest.raises(ValueError, match="format"):
        split_format(CorpusSpec(name="fake", dir=str(only_jsonl), format="tar"), "train")


def test_buffer_is_smaller_by_default_when_shards_carry_audio(corpus, tmp_path):
    assert resolved_buffer_size(config(corpus)) == SHAR_AUDIO_BUFFER_SIZE
    assert resolved_buffer_size(config(corpus, "jsonl")) == LHOTSE_BUFFER_SIZE
    assert resolved_buffer_size(config(corpus, buffer_size=123)) == 123
    ref = make_corpus(tmp_path / "ref", shar="reference", n=10)
    assert split_format(CorpusSpec(name="fake", dir=str(ref)), "train") == "shar"
    assert resolved_buffer_size(config(ref)) == LHOTSE_BUFFER_SIZE


def test_shar_shard_order_follows_the_epoch_reproducibly(corpus):
    dm = SpeechDataModule(config(corpus))
    order = {e: [c.id for c in dm.train_cuts(e)] for e in (0, 1)}
    assert order[0] != order[1] and sorted(order[0]) == sorted(order[1])
    assert [c.id for c in SpeechDataModule(config(corpus)).train_cuts(1)] == order[1]
    # The sampler forwards set_epoch to the lazy source.
    sampler = dm.build_train_sampler()
    sampler.set_epoch(1)
    assert sampler.epoch_source.epoch == 1
    assert [c.id for c in sampler.epoch_source] == order[1]


@pytest.mark.parametrize("fmt", ["jsonl", "shar"])
@pytest.mark.parametrize("bucketing", [True, False])
def test_two_ranks_times_two_workers_serve_each_utterance_once(corpus, fmt, bucketing):
    cfg = config(corpus, fmt, bucketing=bucketing, num_workers=2)
    served, batches = [], []
    for rank in (0, 1):
        dm = SpeechDataModule(cfg)
        loader = dm.train_loader(world_size=2, rank=rank)
        loader.sampler.set_epoch(2)  # what Lightning does at the start of each epoch
        n = 0
        for batch in loader:
            assert not batch["skipped"], batch["skipped"]
            served += batch["ids"]
            n += 1
        batches.append(n)
    # The one exception lhotse makes by design: when the last step of an epoch has fewer cuts
    # than ranks, it pads with copies marked ``<id>_dup<k>`` so every rank still steps.
    padding = [i for i in served if DUP.search(i)]
    served = [i for i in served if not DUP.search(i)]
    assert len(padding) <= 1 and all(DUP.sub("", i) in served for i in padding)
    assert not [i for i, c in Counter(served).items() if c > 1], "no utterance served twice"
    assert set(served) == set(c.id for c in read_split(cfg.corpora[0], "train"))
    assert batches[0] == batches[1], "equal steps on every rank (no DDP hang)"


@pytest.mark.parametrize("fmt", ["jsonl", "shar"])
@pytest.mark.parametrize("bucketing", [True, False])
def test_restored_sampler_continues_without_repeat_or_skip(corpus, fmt, bucketing):
    cfg = config(corpus, fmt, bucketing=bucketing)
    full = SpeechDataModule(cfg).build_train_sampler(world_size=2, rank=1)
    full.set_epoch(1)
    reference = sampler_ids(full)

    dm = SpeechDataModule(cfg)
    sampler = dm.build_train_sampler(world_size=2, rank=1)
    dm.train_sampler = sampler
    sampler.set_epoch(1)
    it = iter(sampler)
    head = [[c.id for c in next(it)] for _ in range(5)]
    state = dm.state_dict()

    resumed = SpeechDataModule(cfg)
    resumed.load_state_dict(state)
    resumed.train_loader(world_size=2, rank=1)
    assert resumed.train_sampler.epoch == 1
    tail = sampler_ids(resumed.train_sampler)
    assert head + tail == reference
    assert len(reference) > 8


class FakeTrainer:
    training, world_size, global_rank = True, 1, 0


def test_state_counts_consumed_batches_not_the_prefetched_ones(corpus):
    """Workers run ahead of training; the saved state must point after the trained batches."""
    cfg = config(corpus, "shar", num_workers=2)
    full = SpeechDataModule(cfg).build_train_sampler()
    reference = sampler_ids(full)

    dm = SpeechDataModule(cfg)
    dm.trainer = FakeTrainer()
    loader = dm.train_dataloader()
    it = iter(loader)
    head = [dm.on_before_batch_transfer(next(it), 0)["ids"] for _ in range(4)]
    produced = dm.train_sampler.diagnostics.current_epoch_stats.total_batches
    assert produced > 4  # the sampler is ahead: a naive state would skip batches
    state = dm.state_dict()
    del it, loader

    resumed = SpeechDataModule(cfg)
    resumed.load_state_dict(state)
    tail = [b["ids"] for b in resumed.train_loader()]
    assert head + tail == reference


def test_next_stage_loader_starts_counting_afresh(corpus):
    """recipe.run reuses one data module across stages; each stage's sampler starts at epoch 0."""
    dm = SpeechDataModule(config(corpus, "jsonl"))
    dm.trainer = FakeTrainer()
    for batch in dm.train_dataloader():
        dm.on_before_batch_transfer(batch, 0)
    it = iter(dm.train_dataloader())  # the next stage
    for _ in range(2):
        dm.on_before_batch_transfer(next(it), 0)
    stats = dm.state_dict()["train_sampler"]["diagnostics"]["stats_per_epoch"][0]
    assert stats["kept_batches"] == 2


class TinyModule(L.LightningModule):
    def __init__(self, fail_at: int | None = None):
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.fail_at = fail_at
        self.seen: list[list[str]] = []

    def training_step(self, batch, batch_idx):
        if self.fail_at is not None and len(self.seen) == self.fail_at:
            raise RuntimeError("simulated crash")
        self.seen.append(batch["ids"])
        return self.layer(batch["wave"].mean(dim=1, keepdim=True)).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


@pytest.mark.filterwarnings("ignore:You passed in a `val_dataloader`")
@pytest.mark.filterwarnings("ignore:Be aware that when using `ckpt_path`")
def test_lightning_mid_epoch_resume_serves_the_rest_of_the_epoch(corpus, tmp_path):
    cfg = config(corpus, "shar", num_workers=2)
    reference = sampler_ids(SpeechDataModule(cfg).build_train_sampler())

    def trainer(**kw):
        return L.Trainer(
            max_epochs=1,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            use_distributed_sampler=False,
            accelerator="cpu",
            default_root_dir=str(tmp_path),
            **kw,
        )

    ckpt = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=str(tmp_path), every_n_train_steps=3, save_top_k=-1, filename="{step}"
    )
    crashed = TinyModule(fail_at=7)
    with pytest.raises(RuntimeError, match="simulated crash"):
        trainer(callbacks=[ckpt]).fit(crashed, datamodule=SpeechDataModule(cfg))
    assert len(crashed.seen) == 7
    resumed = TinyModule()
    trainer(enable_checkpointing=False).fit(
        resumed, datamodule=SpeechDataModule(cfg), ckpt_path=str(tmp_path / "step=6.ckpt")
    )
    assert crashed.seen[:6] + resumed.seen == reference


@pytest.mark.parametrize("fmt", ["jsonl", "shar"])
def test_batches_per_epoch_counts_metadata_or_takes_the_given_steps(corpus, fmt):
    cfg = config(corpus, fmt)
    dm = SpeechDataModule(cfg)
    sampler = dm.build_train_sampler()
    assert dm.train_batches_per_epoch() == len(sampler_ids(sampler))
    assert SpeechDataModule(config(corpus, fmt, steps_per_epoch=1234)).train_batches_per_epoch() == 1234


def test_mixing_two_corpora_by_weight_streams_both(corpus, tmp_path):
    other = make_corpus(tmp_path / "other", name="other", n=60, shar=None)
    cfg = DataConfig(
        max_duration=8.0,
        corpora=[
            CorpusSpec(name="fake", dir=str(corpus), weight=2.0, val_split=None, test_split=None),
            CorpusSpec(name="other", dir=str(other), weight=1.0, val_split=None, test_split=None),
        ],
    )
    dm = SpeechDataModule(cfg)
    ids = [i for batch in sampler_ids(dm.build_train_sampler()) for i in batch]
    assert len(ids) == len(set(ids)) == 180
    assert dm.train_batches_per_epoch() > 0


# -- the samplers alone, on cut durations (no audio is read) --------------------------------------
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


def test_restored_bare_sampler_continues_without_repeat_or_skip():
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
