"""SynthCraft's rendering: the descriptors are in the audio (not only in the labels), and a clip
depends only on its settings and seed."""

from __future__ import annotations

import random

import librosa
import numpy as np
import pytest

from data_modules.synthcraft_speech import (
    LEVELS,
    SPEEDS,
    VOICES,
    realise_settings,
    render_clip,
)

TEXTS = (
    "the little dog found a red ball near the house",
    "my clever teacher carried a heavy basket",
    "a small bird sang behind the green tree today",
)


def median_f0(audio: np.ndarray) -> float:
    f0, voiced, _ = librosa.pyin(audio, fmin=60, fmax=500, sr=16000, frame_length=1024, hop_length=256)
    return float(np.median(f0[voiced]))


def semitone_spread(audio: np.ndarray) -> float:
    f0, voiced, _ = librosa.pyin(audio, fmin=60, fmax=500, sr=16000, frame_length=1024, hop_length=256)
    return float(np.std(12 * np.log2(f0[voiced])))


def rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(audio**2)))


def render(
    text: str,
    voice: str = "m3",
    pitch: str = "normal",
    volume: str = "normal",
    speed: str = "normal",
    emotion: str = "neutral",
    emphasis: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    audio, _ = render_clip(text, voice, pitch, volume, speed, emotion, emphasis, seed)
    assert audio.dtype == np.float32 and audio.ndim == 1 and audio.size > 16000
    return audio


# ------------------------------------------------------------------ attributes in the audio
@pytest.mark.parametrize("voice", ["m3", "f1"])
def test_pitch_bins_order_median_f0(voice):
    for i, text in enumerate(TEXTS):
        f0 = {b: median_f0(render(text, voice, pitch=b, seed=i)) for b in LEVELS}
        assert f0["low"] < f0["normal"] < f0["high"], (voice, text, f0)
        assert f0["high"] > 1.2 * f0["low"], (voice, text, f0)


def test_female_voices_are_higher_than_male_voices():
    text = TEXTS[0]
    male = max(median_f0(render(text, v.variant)) for v in VOICES if v.gender == "male")
    female = min(median_f0(render(text, v.variant)) for v in VOICES if v.gender == "female")
    assert female > male


@pytest.mark.parametrize("voice", ["m2", "f4"])
def test_volume_bins_order_rms(voice):
    for i, text in enumerate(TEXTS):
        level = {b: rms(render(text, voice, volume=b, seed=i)) for b in LEVELS}
        assert level["low"] < level["normal"] < level["high"], (voice, text, level)
        assert level["high"] > 1.8 * level["low"], (voice, text, level)


def test_speed_bins_order_seconds_per_word():
    for voice in ("m6", "f2"):
        for i, text in enumerate(TEXTS):
            spw = {b: render(text, voice, speed=b, seed=i).size / 16000 / len(text.split()) for b in SPEEDS}
            assert spw["fast"] < spw["normal"] < spw["slow"], (voice, text, spw)


def test_emphasis_lengthens_the_emphasised_word():
    for text in TEXTS:
        plain = render(text).size
        emphasised = [render(text, emphasis=i).size for i in (1, 3)]
        assert all(n > plain for n in emphasised), (text, plain, emphasised)


def test_emotion_melody_width_orders_sad_neutral_angry_happy():
    spread = {
        e: np.mean([semitone_spread(render(t, "m3", emotion=e, seed=i)) for i, t in enumerate(TEXTS)])
        for e in ("sad", "neutral", "angry", "happy")
    }
    assert spread["sad"] < spread["neutral"] < spread["angry"] < spread["happy"], spread


def test_render_clip_is_deterministic_and_seed_dependent():
    args = (TEXTS[1], "f1", "high", "low", "fast", "angry", 2)
    a, settings_a = render_clip(*args, seed=3)
    # Render something else in between: espeak state must not leak into the next clip.
    render_clip(TEXTS[2], "m2", "low", "high", "slow", "sad", 4, seed=9)
    b, settings_b = render_clip(*args, seed=3)
    assert settings_a == settings_b and np.array_equal(a, b)
    c, settings_c = render_clip(*args, seed=4)
    assert settings_c != settings_a


def test_bins_stay_separated_despite_jitter():
    rng = random.Random(0)
    for _ in range(500):
        low = realise_settings("m3", "low", "low", "slow", "neutral", rng)
        normal = realise_settings("m3", "normal", "normal", "normal", "neutral", rng)
        high = realise_settings("m3", "high", "high", "fast", "neutral", rng)
        for key in ("pitch", "volume", "rate"):
            assert low[key] < normal[key] < high[key]
