"""Audio decoding shared by the corpus readers and prediction: any container PyAV reads to 16 kHz
mono, FLAC writing, and the sample count of a FLAC written earlier."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import soundfile as sf

SAMPLING_RATE = 16000
"""What every corpus is stored at (Hz), mono."""


def decode_mp4(path: str | Path):
    """The audio track of an mp4 as float32 mono 16 kHz samples (numpy, 1-D).

    Raises whatever PyAV raises for an unreadable file; ``ValueError`` without an audio track.
    """

    chunks = []
    # PyAV loads here, not with the module: every corpus reader imports this module, and the GPU
    # machines' image (the device check) has no PyAV and needs none (it decodes no MP4).
    import av

    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLING_RATE)
    with av.open(str(path)) as container:
        if not container.streams.audio:
            raise ValueError("no audio stream")
        for frame in container.decode(container.streams.audio[0]):
            chunks += [out.to_ndarray()[0] for out in resampler.resample(frame)]
    chunks += [out.to_ndarray()[0] for out in resampler.resample(None)]  # flush
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32, copy=False)


def cached_samples(flac: Path) -> int | None:
    """Samples of an existing usable cache file (16 kHz mono FLAC), else ``None``."""

    try:
        info = sf.info(str(flac))
    except Exception:  # absent or unreadable: decode again
        return None
    if info.samplerate != SAMPLING_RATE or info.channels != 1 or info.frames <= 0:
        return None
    return int(info.frames)


def write_flac(audio, flac: Path) -> None:
    """Write 16-bit FLAC atomically (a killed run never leaves a valid-looking half file)."""

    buffer = io.BytesIO()
    # The 5.1 downmix can exceed full scale; clip rather than let the int16 conversion wrap.
    sf.write(buffer, np.clip(audio, -1.0, 32767 / 32768), SAMPLING_RATE, subtype="PCM_16", format="FLAC")
    flac.parent.mkdir(parents=True, exist_ok=True)
    tmp = flac.with_name(f".{flac.name}.{os.getpid()}.tmp")
    tmp.write_bytes(buffer.getvalue())
    tmp.replace(flac)
