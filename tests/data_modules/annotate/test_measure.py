"""The annotator's measurements: known signals measured right, bad audio never crashes (null with
a reason)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from data_modules.annotate.measure import (
    CLIP_FRACTION,
    clipped_share,
    count_syllables,
    measure_audio,
    measure_cut,
)
from data_modules.records import make_cut

from conftest import harmonic

SR = 16000


# ------------------------------------------------------------------------------- syllables
@pytest.mark.parametrize(
    "text, count, method",
    [
        ("the little dog liked a house", 7, "en_vowel_groups"),  # lit-tle, liked, house
        ("painted carried moved", 5, "en_vowel_groups"),  # -ed after t, vowel, v
        ("Route 66!", 3, "en_vowel_groups"),  # route + one per digit
        ("我们今天很高兴", 7, "han_characters"),
        ("我们 like 他", 4, "mixed"),
        ("", 0, "none"),
        (None, 0, "none"),
    ],
)
def test_count_syllables(text, count, method):
    assert count_syllables(text) == (count, method)


# ---------------------------------------------------------------------------- measurements
@pytest.mark.parametrize("f0, gender", [(110.0, "male"), (220.0, "female")])
def test_pitch_of_a_harmonic_tone_and_gender_from_f0(f0, gender):
    m = measure_audio(harmonic(f0, 1.0), SR, "a b c d")
    assert m["null_reasons"] == {}
    assert m["f0_median_hz"] == pytest.approx(f0, rel=0.02)
    assert m["f0_p5_hz"] == pytest.approx(f0, rel=0.03)
    assert m["f0_range_semitones"] < 0.5
    assert m["voiced_fraction"] > 0.8
    assert m["gender_f0"] == gender


def test_loudness_scales_agree_and_follow_the_gain():
    sine = (0.5 * np.sin(2 * np.pi * 1000 * np.arange(SR) / SR)).astype(np.float32)
    m = measure_audio(sine, SR, "la")
    rms_dbfs = 20 * np.log10(0.5 / np.sqrt(2))
    assert m["loudness_method"] == "lufs"
    assert m["loudness_lufs"] == pytest.approx(rms_dbfs, abs=0.3)  # BS.1770's 1 kHz calibration
    quiet = measure_audio(harmonic(150, 1.0, amp=0.05), SR, "la")
    loud = measure_audio(harmonic(150, 1.0, amp=0.2), SR, "la")
    for key in ("loudness_lufs", "level_db", "peak_level_db"):
        assert loud[key] - quiet[key] == pytest.approx(20 * np.log10(4), abs=0.3), key


def test_speaking_rate_counts_syllables_over_speech_only():
    speech = harmonic(140, 1.0)
    padded = np.concatenate([np.zeros(SR, np.float32), speech, np.zeros(SR, np.float32)])
    m = measure_audio(padded, SR, "the little dog liked a house")  # 7 syllables
    assert m["speech_seconds"] == pytest.approx(1.0, abs=0.1)
    assert m["speaking_rate"] == pytest.approx(7 / m["speech_seconds"])
    assert m["syllables"] == 7


def test_other_sampling_rates_are_resampled():
    t = np.arange(8000) / 8000
    x = 0.3 * np.sin(2 * np.pi * 200 * t) + 0.1 * np.sin(2 * np.pi * 400 * t)
    m = measure_audio(x.astype(np.float32), 8000, "hello")
    assert m["f0_median_hz"] == pytest.approx(200, rel=0.02)
    assert m["duration"] == pytest.approx(1.0)


# ---------------------------------------------------------------------- bad audio: no crash
ALL_NULL = ("f0_median_hz", "loudness_lufs", "level_db", "peak_level_db", "speaking_rate", "gender_f0")


@pytest.mark.parametrize(
    "audio, reason",
    [
        (np.zeros(SR, np.float32), "silent_audio"),
        (np.full(SR, 1e-6, np.float32), "silent_audio"),  # below one 16-bit step
        (harmonic(150, 0.05), "too_short"),  # < 0.1 s
        (np.zeros(0, np.float32), "empty_audio"),
        (np.where(np.arange(SR) == 100, np.nan, harmonic(150, 1.0)), "non_finite_audio"),
        (np.where(np.arange(SR) == 7, np.inf, harmonic(150, 1.0)), "non_finite_audio"),
    ],
)
def test_unusable_audio_nulls_every_attribute_with_its_reason(audio, reason):
    m = measure_audio(audio, SR, "the dog")
    assert all(m[key] is None for key in ALL_NULL)
    assert m["null_reasons"] == {"pitch": reason, "volume": reason, "speed": reason, "gender": reason}
    json.dumps(m)  # plain JSON, no NaN


def test_short_clip_falls_back_to_rms_db_loudness():
    x = harmonic(150, 0.2)  # under pyloudnorm's 400 ms block, over the 0.1 s minimum
    m = measure_audio(x, SR, "hi")
    assert m["loudness_method"] == "rms_db"
    assert m["loudness_lufs"] == pytest.approx(10 * np.log10(np.mean(x.astype(float) ** 2)), abs=0.5)
    assert "volume" not in m["null_reasons"]


def test_clipped_audio_nulls_volume_only():
    x = np.clip(harmonic(150, 1.0, amp=3.0), -1.0, 1.0)
    m = measure_audio(x, SR, "the dog")
    assert m["clipped_fraction"] > CLIP_FRACTION
    assert m["null_reasons"] == {"volume": "clipped_audio"}
    assert m["loudness_lufs"] is None and m["peak_level_db"] is None
    assert m["f0_median_hz"] == pytest.approx(150, rel=0.03)
    assert m["speaking_rate"] is not None
    # Crests reaching full scale are not clipping, even periodic ones; flat tops are.
    t = np.arange(SR) / SR
    swell = harmonic(150, 1.0) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    assert clipped_share(swell / np.max(np.abs(swell))) == 0.0
    assert clipped_share(harmonic(60, 1.0, amp=1.0)) == 0.0
    assert clipped_share(np.clip(harmonic(150, 1.0, amp=0.05) * 2, -0.06, 0.06)) == 0.0


def test_no_voiced_frame_nulls_pitch_and_f0_gender(monkeypatch):
    """pyin's voicing decides (it even calls a few frames of white noise voiced, so the
    unvoiced case is forced here)."""
    import librosa

    def unvoiced(y, **kw):
        n = 1 + len(y) // kw["hop_length"]
        return np.full(n, np.nan), np.zeros(n, bool), np.zeros(n)

    monkeypatch.setattr(librosa, "pyin", unvoiced)
    rng = np.random.default_rng(0)
    m = measure_audio((0.1 * rng.standard_normal(SR)).astype(np.float32), SR, "shh")
    assert m["null_reasons"].get("pitch") == "no_voiced_frames"
    assert m["level_method"] == "speech_frames" and m["speaking_rate"] is not None
    assert m["null_reasons"].get("gender") == "no_voiced_frames"
    assert m["f0_median_hz"] is None and m["loudness_lufs"] is not None


@pytest.mark.parametrize(
    "transcript, reason", [(None, "no_transcript"), ("  ", "no_transcript"), ("... !", "no_syllables")]
)
def test_speed_needs_a_transcript(transcript, reason):
    m = measure_audio(harmonic(150, 1.0), SR, transcript)
    assert m["null_reasons"] == {"speed": reason} and m["speaking_rate"] is None


def test_undecodable_audio_is_a_null_record(tmp_path):
    cut = make_cut(
        "broken",
        tmp_path / "missing.flac",
        sampling_rate=SR,
        num_samples=SR,
        corpus="x",
        split="test",
        transcript="the dog",
    )
    m = measure_cut(cut)
    assert m["null_reasons"]["pitch"].startswith("audio_decode_failed")
    assert all(m[key] is None for key in ALL_NULL)
