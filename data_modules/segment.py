"""Long recordings cut into pieces the encoder accepts, at the pauses between utterances.

Voice activity is measured on the signal's energy: librosa's non-silent intervals, frames whose
RMS is within ``top_db`` of the loudest frame, or of ``floor_db`` dBFS where the loudest frame is
quieter than that (so a recording of near-silence has no speech, rather than its loudest click).
It cannot tell speech from other sound of the same level. Runs of speech separated by less than
``min_pause`` (breaths, gaps between words) stay one piece; a piece longer than
``max_seconds`` is cut again at its longest inner pause, and with no pause left, into equal
parts. Each piece keeps up to ``pad_seconds`` of the silence around it (never past half-way
to its neighbour), so an onset is not clipped. Pieces shorter than ``min_seconds`` are not
explained; :func:`split_at_pauses` returns them apart so that a caller can count them.
"""

from __future__ import annotations

from dataclasses import dataclass

import librosa
import numpy as np


@dataclass(frozen=True)
class Piece:
    """One piece of a recording, in samples ``[start, end)``."""

    start: int
    end: int

    def seconds(self, sr: int) -> tuple[float, float]:
        return self.start / sr, self.end / sr


def speech_runs(
    audio: np.ndarray,
    sr: int,
    top_db: float = 35.0,
    min_pause: float = 0.3,
    frame_seconds: float = 0.05,
    hop_seconds: float = 0.01,
    floor_db: float = -25.0,
) -> list[tuple[int, int]]:
    """Sample intervals of speech: librosa's non-silent intervals, those closer than
    ``min_pause`` seconds joined."""

    if audio.size == 0 or not np.any(audio):
        return []
    frame, hop = max(1, int(frame_seconds * sr)), max(1, int(hop_seconds * sr))
    floor = 10.0 ** (floor_db / 20.0)  # an RMS amplitude: librosa compares frame RMS in dB (20 log10)
    intervals = librosa.effects.split(
        audio, top_db=top_db, frame_length=frame, hop_length=hop, ref=lambda rms: max(float(np.max(rms)), floor)
    )
    runs: list[list[int]] = []
    for start, end in intervals.tolist():
        start, end = max(0, start), min(len(audio), end)
        if runs and start - runs[-1][1] < min_pause * sr:
            runs[-1][1] = end
        else:
            runs.append([start, end])
    return [(s, e) for s, e in runs]


def _cut_long(audio: np.ndarray, start: int, end: int, limit: int, sr: int, top_db: float) -> list[tuple[int, int]]:
    """``[start, end)`` in parts of at most ``limit`` samples: at the longest inner pause (found
    with half the pause length each time round), else in equal parts."""
    if end - start <= limit:
        return [(start, end)]
    for min_pause in (0.2, 0.1, 0.05):
        inner = speech_runs(audio[start:end], sr, top_db=top_db, min_pause=min_pause)
        if len(inner) > 1:
            gaps = [(inner[i + 1][0] - inner[i][1], i) for i in range(len(inner) - 1)]
            _, i = max(gaps)
            cut = start + (inner[i][1] + inner[i + 1][0]) // 2
            return _cut_long(audio, start, cut, limit, sr, top_db) + _cut_long(audio, cut, end, limit, sr, top_db)
    n = -(-(end - start) // limit)  # ceil
    bounds = np.linspace(start, end, n + 1).round().astype(int).tolist()
    return list(zip(bounds[:-1], bounds[1:]))


def split_at_pauses(
    audio: np.ndarray,
    sr: int,
    *,
    max_seconds: float,
    min_seconds: float = 0.3,
    min_pause: float = 0.3,
    top_db: float = 35.0,
    pad_seconds: float = 0.1,
) -> tuple[list[Piece], list[Piece]]:
    """A recording -> ``(pieces, too_short)``: the pieces to explain, in time order, each at
    most ``max_seconds`` long (padding included), and the speech runs shorter than
    ``min_seconds``, left out."""
    if max_seconds <= 2 * pad_seconds:
        raise ValueError(f"max_seconds {max_seconds} leaves no room beside {pad_seconds} s of padding")
    limit = int((max_seconds - 2 * pad_seconds) * sr)
    runs = []
    for s, e in speech_runs(audio, sr, top_db=top_db, min_pause=min_pause):
        runs += _cut_long(audio, s, e, limit, sr, top_db)
    pad = int(pad_seconds * sr)
    pieces, short = [], []
    for k, (s, e) in enumerate(runs):
        left = runs[k - 1][1] if k else 0
        right = runs[k + 1][0] if k + 1 < len(runs) else len(audio)
        s2 = max(s - pad, (left + s + 1) // 2, 0)  # never past half-way to the neighbour
        e2 = min(e + pad, (e + right) // 2, len(audio))
        piece = Piece(int(s2), int(e2))
        (pieces if (e2 - s2) >= min_seconds * sr else short).append(piece)
    return pieces, short
