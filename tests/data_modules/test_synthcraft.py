"""The SynthCraft corpus: closed, balanced, deterministic and readable by lhotse, its captions
matching its records."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from lhotse import CutSet

from data_modules import synthcraft as sc
from data_modules.records import record_of
from data_modules.synthcraft_speech import (
    EMOTION_PROFILES,
    LEVELS,
    SPEEDS,
    VOCABULARY,
    VOICES,
    sample_sentence,
)

from conftest import parse_caption

ROOT = Path(__file__).resolve().parents[2]
SIZES = dict(n_train=320, n_dev=40, n_test=40)  # 400 clips: enough for two render workers
SEED = 7
ATTRIBUTE_KEYS = {"gender", "pitch", "volume", "speed", "emphasis", "emphasis_index", "render"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A 400-clip corpus rendered by two worker processes: (directory, manifests, cuts)."""
    out = tmp_path_factory.mktemp("synthcraft")
    manifests = sc.generate(out, **SIZES, seed=SEED, num_workers=2, progress=False)
    cuts = {split: list(CutSet.from_file(path)) for split, path in manifests.items()}
    return out, manifests, cuts


def all_records(cuts: dict) -> list[dict]:
    return [record_of(c) for split in sc.SPLITS for c in cuts[split]]


# ----------------------------------------------------------------------- labels and text
def test_vocabulary_is_closed_and_small(corpus):
    _, _, cuts = corpus
    assert len(VOCABULARY) <= 250
    vocabulary = set(VOCABULARY)
    rng = random.Random(0)
    sentences = [sample_sentence(rng, rng.randint(4, 9))[0] for _ in range(2000)]
    sentences += [r["transcript"].split() for r in all_records(cuts)]
    for words in sentences:
        assert 4 <= len(words) <= 9
        assert set(words) <= vocabulary, set(words) - vocabulary
        assert all(w == w.lower() and w.isalpha() for w in words)


def test_records_follow_the_contract(corpus):
    _, _, cuts = corpus
    for split in sc.SPLITS:
        assert len(cuts[split]) == SIZES[f"n_{split}"]
        for i, cut in enumerate(cuts[split]):
            rec = record_of(cut)
            assert rec["id"] == f"synthcraft-{split}-{i:06d}"
            assert (rec["corpus"], rec["split"], rec["language"]) == ("synthcraft", split, "en")
            attrs = rec["attributes"]
            assert set(attrs) == ATTRIBUTE_KEYS
            assert set(attrs["render"]) == {"voice", "pitch", "range", "rate", "volume"}
            assert attrs["pitch"] in LEVELS and attrs["volume"] in LEVELS
            assert attrs["speed"] in SPEEDS
            assert rec["emotion"] in sc.SYNTHCRAFT_EMOTIONS
            assert rec["gender"] == attrs["gender"]
            voice = next(v for v in VOICES if v.speaker == rec["speaker"])
            assert voice.gender == rec["gender"]
            assert rec["transcript"].split()[attrs["emphasis_index"]] == attrs["emphasis"]


def test_emotions_are_balanced(corpus):
    _, _, cuts = corpus
    for split in sc.SPLITS:
        counts = Counter(record_of(c)["emotion"] for c in cuts[split])
        assert set(counts.values()) == {len(cuts[split]) // 4}, counts


def test_no_single_bin_gives_the_emotion_away(corpus):
    _, _, cuts = corpus
    records = all_records(cuts)
    for emotion in sc.SYNTHCRAFT_EMOTIONS:
        profile = EMOTION_PROFILES[emotion]
        assert min(profile.pitch + profile.volume + profile.speed) >= 0.1
        mine = [r["attributes"] for r in records if r["emotion"] == emotion]
        for key, bins in (("pitch", LEVELS), ("volume", LEVELS), ("speed", SPEEDS)):
            counts = Counter(a[key] for a in mine)
            for b in bins:
                assert counts[b] >= 0.05 * len(mine), (emotion, key, counts)


def test_captions_round_trip_through_a_keyword_parser(corpus):
    _, _, cuts = corpus
    records = all_records(cuts)
    for rec in records:
        attrs = rec["attributes"]
        assert parse_caption(rec["caption"]) == {
            k: attrs[k] for k in ("gender", "pitch", "volume", "speed", "emphasis")
        }
        assert rec["emotion"] not in rec["caption"].lower()
    assert (
        len({re.sub(r"\b(low|normal|high|slow|fast|male|female)\b|\"\w+\"", "", r["caption"]) for r in records}) >= 4
    ), "several templates are in use"


# ------------------------------------------------------------------- files and manifests
def test_manifests_load_back_as_16k_mono_in_range(corpus):
    _, manifests, _ = corpus
    durations = []
    for _split, path in manifests.items():
        loaded = CutSet.from_file(path)
        for cut in list(loaded)[:10]:
            audio = cut.load_audio()
            assert audio.shape == (1, cut.num_samples) and cut.sampling_rate == 16000
            assert np.abs(audio).max() > 0.01
        durations += [c.duration for c in loaded]
    assert sc.MIN_DURATION <= min(durations) and max(durations) <= sc.MAX_DURATION
    assert 1.5 <= float(np.median(durations)) <= 4.0


def test_report(corpus):
    out, manifests, _ = corpus
    report = json.loads((out / "synthcraft_report.json").read_text())
    assert report["params"] == {**SIZES, "seed": SEED}
    for split in sc.SPLITS:
        info = report["splits"][split]
        assert info["kept"] + sum(info["skipped"].values()) == info["requested"]
        assert info["hours"] > 0 and info["manifest"] == str(manifests[split])
    assert report["num_workers"] == 2 and report["clips_per_second"] > 0
    assert isinstance(report["skipped"], dict)


def test_same_seed_gives_the_same_corpus_in_one_process(corpus, tmp_path):
    out, _, cuts = corpus
    again = sc.generate(tmp_path, **SIZES, seed=SEED, num_workers=1, progress=False)
    for split in sc.SPLITS:
        redo = list(CutSet.from_file(again[split]))
        assert [record_of(c) for c in redo] == [record_of(c) for c in cuts[split]]
        for first, second in list(zip(cuts[split], redo))[::7]:
            assert np.array_equal(first.load_audio(), second.load_audio()), first.id
    other = sc.plan_split("train", 8, SEED + 1)
    assert [p.transcript for p in other] != [p.transcript for p in sc.plan_split("train", 8, SEED)]


def test_ensure_synthcraft_generates_only_when_needed(tmp_path):
    sizes = dict(n_train=4, n_dev=2, n_test=2, progress=False)
    paths = sc.ensure_synthcraft(tmp_path, **sizes)
    assert all(p.exists() for p in paths.values())
    report = tmp_path / "synthcraft_report.json"
    stamp = report.stat().st_mtime_ns
    assert sc.ensure_synthcraft(tmp_path, **sizes) == paths
    assert report.stat().st_mtime_ns == stamp, "matching corpus is reused"
    sc.ensure_synthcraft(tmp_path, **sizes, seed=1)
    assert json.loads(report.read_text())["params"]["seed"] == 1, "other seed regenerates"
    with pytest.raises(TypeError):
        sc.ensure_synthcraft(tmp_path, n_trian=3)


# --------------------------------------------------------------------------------- CLI
def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "data_modules.prepare", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_cli_generates_a_small_corpus(tmp_path):
    result = run_cli(
        "synthcraft", "--out", str(tmp_path), "--n-train", "8", "--n-dev", "2", "--n-test", "2", "--no-progress"
    )
    assert result.returncode == 0, result.stderr
    assert "kept" in result.stdout and "skipped" in result.stdout
    for split in sc.SPLITS:
        path = tmp_path / f"synthcraft_cuts_{split}.jsonl.gz"
        assert str(path) in result.stdout
        assert len(CutSet.from_file(path)) == {"train": 8, "dev": 2, "test": 2}[split]


def test_cli_help_and_bad_arguments():
    top = run_cli("--help")
    assert top.returncode == 0 and "synthcraft" in top.stdout
    sub = run_cli("synthcraft", "--help")
    assert sub.returncode == 0 and "--n-train" in sub.stdout and "--seed" in sub.stdout
    assert run_cli("synthcraft", "--out", "x", "--n-train", "-1").returncode == 2
    assert run_cli("synthcraft").returncode == 2  # --out is required
    assert run_cli("nonsense").returncode == 2
