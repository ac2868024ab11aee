"""SynthCraft: the descriptors are in the audio (not only in the labels), and the corpus is
closed, balanced, deterministic and readable by lhotse."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import librosa
import numpy as np
import pytest
from lhotse import CutSet

from data_modules import synthcraft as sc
from data_modules.records import record_of

ROOT = Path(__file__).resolve().parents[2]
SIZES = dict(n_train=320, n_dev=40, n_test=40)  # 400 clips: enough for two render workers
SEED = 7
TEXTS = ("the little dog found a red ball near the house",
         "my clever teacher carried a heavy basket",
         "a small bird sang behind the green tree today")
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


def median_f0(audio: np.ndarray) -> float:
    f0, voiced, _ = librosa.pyin(audio, fmin=60, fmax=500, sr=16000, frame_length=1024,
                                 hop_length=256)
    return float(np.median(f0[voiced]))


def semitone_spread(audio: np.ndarray) -> float:
    f0, voiced, _ = librosa.pyin(audio, fmin=60, fmax=500, sr=16000, frame_length=1024,
                                 hop_length=256)
    return float(np.std(12 * np.log2(f0[voiced])))


def rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(audio ** 2)))


def render(text: str, voice: str = "m3", pitch: str = "normal", volume: str = "normal",
           speed: str = "normal", emotion: str = "neutral", emphasis: int | None = None,
           seed: int = 0) -> np.ndarray:
    audio, _ = sc.render_clip(text, voice, pitch, volume, speed, emotion, emphasis, seed)
    assert audio.dtype == np.float32 and audio.ndim == 1 and audio.size > 16000
    return audio


# ------------------------------------------------------------------ attributes in the audio
@pytest.mark.parametrize("voice", ["m3", "f1"])
def test_pitch_bins_order_median_f0(voice):
    for i, text in enumerate(TEXTS):
        f0 = {b: median_f0(render(text, voice, pitch=b, seed=i)) for b in sc.LEVELS}
        assert f0["low"] < f0["normal"] < f0["high"], (voice, text, f0)
        assert f0["high"] > 1.2 * f0["low"], (voice, text, f0)


def test_female_voices_are_higher_than_male_voices():
    text = TEXTS[0]
    male = max(median_f0(render(text, v.variant)) for v in sc.VOICES if v.gender == "male")
    female = min(median_f0(render(text, v.variant)) for v in sc.VOICES if v.gender == "female")
    assert female > male


@pytest.mark.parametrize("voice", ["m2", "f4"])
def test_volume_bins_order_rms(voice):
    for i, text in enumerate(TEXTS):
        level = {b: rms(render(text, voice, volume=b, seed=i)) for b in sc.LEVELS}
        assert level["low"] < level["normal"] < level["high"], (voice, text, level)
        assert level["high"] > 1.8 * level["low"], (voice, text, level)


def test_speed_bins_order_seconds_per_word():
    for voice in ("m6", "f2"):
        for i, text in enumerate(TEXTS):
            spw = {b: render(text, voice, speed=b, seed=i).size / 16000 / len(text.split())
                   for b in sc.SPEEDS}
            assert spw["fast"] < spw["normal"] < spw["slow"], (voice, text, spw)


def test_emphasis_lengthens_the_emphasised_word():
    for text in TEXTS:
        plain = render(text).size
        emphasised = [render(text, emphasis=i).size for i in (1, 3)]
        assert all(n > plain for n in emphasised), (text, plain, emphasised)


def test_emotion_melody_width_orders_sad_neutral_angry_happy():
    spread = {e: np.mean([semitone_spread(render(t, "m3", emotion=e, seed=i))
                          for i, t in enumerate(TEXTS)]) for e in ("sad", "neutral", "angry",
                                                                   "happy")}
    assert spread["sad"] < spread["neutral"] < spread["angry"] < spread["happy"], spread


def test_render_clip_is_deterministic_and_seed_dependent():
    args = (TEXTS[1], "f1", "high", "low", "fast", "angry", 2)
    a, settings_a = sc.render_clip(*args, seed=3)
    # Render something else in between: espeak state must not leak into the next clip.
    sc.render_clip(TEXTS[2], "m2", "low", "high", "slow", "sad", 4, seed=9)
    b, settings_b = sc.render_clip(*args, seed=3)
    assert settings_a == settings_b and np.array_equal(a, b)
    c, settings_c = sc.render_clip(*args, seed=4)
    assert settings_c != settings_a


def test_bins_stay_separated_despite_jitter():
    rng = random.Random(0)
    for _ in range(500):
        low = sc.realise_settings("m3", "low", "low", "slow", "neutral", rng)
        normal = sc.realise_settings("m3", "normal", "normal", "normal", "neutral", rng)
        high = sc.realise_settings("m3", "high", "high", "fast", "neutral", rng)
        for key in ("pitch", "volume", "rate"):
            assert low[key] < normal[key] < high[key]


# ----------------------------------------------------------------------- labels and text
def test_vocabulary_is_closed_and_small(corpus):
    _, _, cuts = corpus
    assert len(sc.VOCABULARY) <= 250
    vocabulary = set(sc.VOCABULARY)
    rng = random.Random(0)
    sentences = [sc.sample_sentence(rng, rng.randint(4, 9))[0] for _ in range(2000)]
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
            assert attrs["pitch"] in sc.LEVELS and attrs["volume"] in sc.LEVELS
            assert attrs["speed"] in sc.SPEEDS
            assert rec["emotion"] in sc.SYNTHCRAFT_EMOTIONS
            assert rec["gender"] == attrs["gender"]
            voice = next(v for v in sc.VOICES if v.speaker == rec["speaker"])
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
        profile = sc.EMOTION_PROFILES[emotion]
        assert min(profile.pitch + profile.volume + profile.speed) >= 0.1
        mine = [r["attributes"] for r in records if r["emotion"] == emotion]
        for key, bins in (("pitch", sc.LEVELS), ("volume", sc.LEVELS), ("speed", sc.SPEEDS)):
            counts = Counter(a[key] for a in mine)
            for b in bins:
                assert counts[b] >= 0.05 * len(mine), (emotion, key, counts)


def parse_caption(caption: str) -> dict:
    """A keyword parser, as a downstream consumer would read captions back."""
    found = {
        "gender": re.search(r"\b(male|female) speaker\b", caption),
        "pitch": re.search(r"\b(low|normal|high) pitch\b", caption),
        "volume": re.search(r"\b(low|normal|high) volume\b", caption),
        "speed": re.search(r"\bat a (slow|normal|fast) pace\b", caption),
        "emphasis": re.search(r'the word "(\w+)"', caption),
    }
    return {key: m.group(1) if m else None for key, m in found.items()}


def test_captions_round_trip_through_a_keyword_parser(corpus):
    _, _, cuts = corpus
    records = all_records(cuts)
    for rec in records:
        attrs = rec["attributes"]
        assert parse_caption(rec["caption"]) == {k: attrs[k] for k in
                                                 ("gender", "pitch", "volume", "speed",
                                                  "emphasis")}
        assert rec["emotion"] not in rec["caption"].lower()
    assert len({re.sub(r"\b(low|normal|high|slow|fast|male|female)\b|\"\w+\"", "", r["caption"])
                for r in records}) >= 4, "several templates are in use"


@pytest.mark.parametrize("template", range(len(sc.CAPTION_TEMPLATES)))
def test_every_template_renders_all_phrases(template):
    attrs = {"gender": "female", "pitch": "high", "volume": "low", "speed": "slow",
             "emphasis": "ball"}
    caption = sc.render_caption(attrs, template=template)
    assert parse_caption(caption) == attrs
    assert caption[0].isupper() and caption.endswith(".")
    no_emphasis = sc.render_caption({**attrs, "emphasis": None}, template=template)
    assert parse_caption(no_emphasis) == {**attrs, "emphasis": None}
    assert len(sc.CAPTION_TEMPLATES) >= 4


# ------------------------------------------------------------------- files and manifests
def test_manifests_load_back_as_16k_mono_in_range(corpus):
    _, manifests, _ = corpus
    durations = []
    for split, path in manifests.items():
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
    return subprocess.run([sys.executable, "-m", "data_modules.prepare", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_cli_generates_a_small_corpus(tmp_path):
    result = run_cli("synthcraft", "--out", str(tmp_path), "--n-train", "8", "--n-dev", "2",
                     "--n-test", "2", "--no-progress")
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
