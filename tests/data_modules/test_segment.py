"""Long recordings cut at pauses: where the pieces fall, how long they may be, what is left out."""

from __future__ import annotations

import numpy as np
import pytest

from data_modules.segment import speech_runs, split_at_pauses

SR = 16000


def burst(seconds: float, seed: int, gaps: float = 0.08) -> np.ndarray:
    """A voiced-like sound: a 150 Hz tone with noise, with short word-like gaps inside."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    x = 0.3 * np.sin(2 * np.pi * 150 * t) * (1 + 0.3 * rng.standard_normal(t.size))
    for k in range(1, int(seconds / 0.5)):  # a gap every 0.5 s, shorter than a pause
        a = int(k * 0.5 * SR)
        x[a : a + int(gaps * SR)] = 0.0
    return x.astype(np.float32)


def recording(lengths, pauses, noise=1e-4, seed=0):
    rng = np.random.default_rng(seed)
    parts, truth, pos = [], [], 0
    for i, (n, p) in enumerate(zip(lengths, pauses)):
        gap = np.zeros(int(p * SR), dtype=np.float32)
        x = burst(n, seed=i)
        parts += [gap, x]
        truth.append((pos + gap.size, pos + gap.size + x.size))
        pos += gap.size + x.size
    parts.append(np.zeros(SR // 2, dtype=np.float32))
    audio = np.concatenate(parts)
    return audio + (noise * rng.standard_normal(audio.size)).astype(np.float32), truth


def test_pieces_are_the_utterances_between_pauses():
    audio, truth = recording([2.0, 3.1, 1.4, 4.2], [0.7, 1.0, 0.6, 0.9])
    pieces, short = split_at_pauses(audio, SR, max_seconds=30)
    assert short == [] and len(pieces) == len(truth)
    for p, (s, e) in zip(pieces, truth):
        assert p.start <= s and p.end >= e  # the whole utterance, nothing clipped
        assert s - p.start <= 0.15 * SR and p.end - e <= 0.15 * SR  # and little silence around it
    assert all(a.end <= b.start for a, b in zip(pieces, pieces[1:]))


def test_a_run_longer_than_the_limit_is_cut_at_its_longest_inner_pause():
    # two utterances 0.25 s apart (less than the 0.3 s pause): one run of 9.5 s, limit 6 s
    audio, truth = recording([5.0, 4.25], [0.5, 0.25])
    pieces, _ = split_at_pauses(audio, SR, max_seconds=6)
    assert len(pieces) == 2
    cut = (truth[0][1] + truth[1][0]) / 2
    assert abs(pieces[0].end - cut) <= 0.05 * SR or pieces[0].end <= truth[1][0]
    assert all(p.end - p.start <= 6 * SR for p in pieces)


def test_speech_without_any_pause_is_cut_into_equal_parts_within_the_limit():
    x = 0.3 * np.sin(2 * np.pi * 150 * np.arange(25 * SR) / SR).astype(np.float32)
    pieces, _ = split_at_pauses(x, SR, max_seconds=10)
    lengths = [p.end - p.start for p in pieces]
    assert len(pieces) == 3 and max(lengths) <= 10 * SR and max(lengths) - min(lengths) <= 0.25 * SR


def test_too_short_runs_are_returned_apart_and_silence_has_none():
    audio, _ = recording([0.08, 2.0], [0.8, 0.8])  # 0.08 s of sound: under 0.3 s even padded
    pieces, short = split_at_pauses(audio, SR, max_seconds=30, min_seconds=0.3, pad_seconds=0.05)
    assert len(pieces) == 1 and len(short) == 1 and short[0].end <= pieces[0].start
    assert split_at_pauses(np.zeros(SR * 5, dtype=np.float32), SR, max_seconds=30) == ([], [])
    assert speech_runs(np.zeros(0, dtype=np.float32), SR) == []
    with pytest.raises(ValueError, match="no room"):
        split_at_pauses(audio, SR, max_seconds=0.1)


def test_a_quiet_recording_is_measured_against_the_floor_in_dbfs():
    """Bursts at -40 dBFS RMS over noise at -70 dBFS: the floor (-25 dBFS) sets the threshold at
    -60 dBFS, so the noise is a pause. (Read as a power, the floor would sit at -50 dBFS, the
    threshold at -75 dBFS, and the noise would join the bursts into one run.)"""
    sr = 16000
    rng = np.random.default_rng(0)
    t = np.arange(sr) / sr
    burst = np.sqrt(2) * 10 ** (-40 / 20) * np.sin(2 * np.pi * 220 * t)  # RMS -40 dBFS
    noise = lambda n: rng.normal(0.0, 10 ** (-70 / 20), n)  # noqa: E731
    audio = np.concatenate([noise(sr), burst + noise(sr), noise(sr), burst + noise(sr), noise(sr)]).astype(np.float32)
    runs = speech_runs(audio, sr)
    assert len(runs) == 2
    assert [round(s / sr, 1) for s, _ in runs] == [1.0, 3.0]
