"""From a sampled ``CutSet`` to a padded batch: every clip checked before and after decoding,
unusable ones skipped with a reason (counted and logged by training, never dropped silently).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr
import torch
from lhotse import CutSet

from data_modules.captions import render_partial_caption
from data_modules.config import DataConfig
from data_modules.records import record_of


def describe_refusal(reason: str, seconds: float | None, cfg: DataConfig) -> str:
    """A reason code of :func:`check_waveform` in words, with the limit and the key that sets it
    (``too_short: 0.10 s < 0.30 s minimum (data.min_clip_seconds)``)."""
    if reason == "too_short" and seconds is not None:
        return f"too_short: {seconds:.2f} s < {cfg.min_clip_seconds:.2f} s minimum (data.min_clip_seconds)"
    if reason == "too_long" and seconds is not None:
        return (
            f"too_long: {seconds:.1f} s > {cfg.max_clip_seconds:g} s maximum (data.max_clip_seconds): "
            f"cut the recording into pieces of at most {cfg.max_clip_seconds:g} s"
        )
    words = {
        "empty_audio": "no samples",
        "non_finite_audio": "NaN or infinite samples",
        "silent_audio": "every sample is zero",
    }
    return f"{reason}: {words[reason]}" if reason in words else reason


def check_waveform(audio: np.ndarray, sr: int, cfg: DataConfig) -> str | None:
    """Reason a loaded waveform is unusable, or ``None`` when it is fine.

    Reasons: ``empty_audio`` (no samples), ``non_finite_audio`` (NaN/inf samples),
    ``too_short`` / ``too_long`` (outside ``[min_clip_seconds, max_clip_seconds]``) and
    ``silent_audio`` (every sample is zero).
    """
    if audio.size == 0 or sr <= 0:
        return "empty_audio"
    if not np.all(np.isfinite(audio)):
        return "non_finite_audio"
    seconds = audio.shape[-1] / sr
    if seconds < cfg.min_clip_seconds:
        return "too_short"
    if seconds > cfg.max_clip_seconds:
        return "too_long"
    if float(np.max(np.abs(audio))) == 0.0:
        return "silent_audio"
    return None


class SpeechBatchDataset(torch.utils.data.Dataset):
    """Turns a sampled ``CutSet`` into a padded batch; skips unusable clips with a reason.

    A clip is skipped (``batch["skipped"]``: id and reason; the training module counts and logs
    them) instead of failing the batch when, checked in this order:

    * its audio would be read through a shell (``unsafe_audio_source``): a lhotse ``command``
      source, a ``pipe:`` URL, or a ``.sph``/``.opus`` path with shell metacharacters (lhotse
      hands those to ``sph2pipe``/``ffmpeg`` via ``shell=True``); nothing is executed;
    * it has no supervision (``missing_supervision``) or a text field (transcript, caption,
      emotion) that is not valid UTF-8, e.g. a manifest line carrying ``\\udcff``-style escapes
      of undecodable bytes (``invalid_utf8_text``);
    * its manifest duration is zero or outside the clip limits (``empty_audio``, ``too_short``,
      ``too_long``): decided before any decoding, so an hour-long file is never read;
    * decoding fails (``audio_decode_failed: CAUSE``, CAUSE = ``missing_file``,
      ``sample_rate_mismatch`` (the file's rate is not the manifest's), ``truncated`` (fewer
      frames than declared) or the decoder's exception type);
    * the decoded waveform fails :func:`check_waveform`.

    Clips at another (declared, correct) rate are resampled to ``cfg.sampling_rate`` with soxr.
    """

    TEXT_FIELDS = ("transcript", "caption", "emotion")
    SHELL_DECODED = (".sph", ".opus")  # lhotse reads these through sph2pipe / ffmpeg subprocesses
    SAFE_PATH_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./+=@,%")

    def __init__(self, cfg: DataConfig):
        self.cfg = cfg

    @classmethod
    def unsafe_source(cls, cut) -> bool:
        """Whether lhotse would pass a string of this cut's manifest to a shell."""
        recording = getattr(cut, "recording", None)
        for src in getattr(recording, "sources", None) or ():
            text = str(src.source) if isinstance(src.source, (str, Path)) else ""
            if src.type == "command" or text.startswith("pipe:"):
                return True
            if text.lower().endswith(cls.SHELL_DECODED) and not set(text) <= cls.SAFE_PATH_CHARS:
                return True
        return False

    @classmethod
    def text_problem(cls, cut) -> str | None:
        """``missing_supervision`` / ``invalid_utf8_text`` for a cut's record, else ``None``."""
        if not getattr(cut, "supervisions", None):
            return "missing_supervision"
        sup = cut.supervisions[0]
        custom = sup.custom if isinstance(sup.custom, dict) else {}
        for value in (sup.text, custom.get("caption"), custom.get("emotion")):
            if isinstance(value, str):
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:  # lone surrogates: undecodable bytes upstream
                    return "invalid_utf8_text"
        return None

    def metadata_problem(self, cut) -> str | None:
        """Why a cut is unusable from its manifest entry alone (no audio is read), or ``None``."""
        if self.unsafe_source(cut):
            return "unsafe_audio_source"
        reason = self.text_problem(cut)
        if reason is not None:
            return reason
        duration = float(cut.duration)
        if not duration > 0:  # also NaN
            return "empty_audio"
        if duration > self.cfg.max_clip_seconds:
            return "too_long"
        if duration < self.cfg.min_clip_seconds:
            return "too_short"
        return None

    @staticmethod
    def decode_failure(cut, err: Exception) -> str:
        """The cause of a decoding error, for the skip reason (looked at only after a failure)."""
        recording = getattr(cut, "recording", None)
        for src in getattr(recording, "sources", None) or ():
            if src.type != "file":
                continue
            path = Path(str(src.source))
            if not path.is_file():
                return "missing_file"
            try:
                info = sf.info(str(path))
            except Exception:
                break
            if info.samplerate != recording.sampling_rate:
                return "sample_rate_mismatch"
            if info.frames < recording.num_samples:
                return "truncated"
        return type(err).__name__

    def load(self, cut) -> tuple[np.ndarray | None, str | None]:
        """``(mono float32 waveform at cfg.sampling_rate, None)`` or ``(None, reason)``."""
        reason = self.metadata_problem(cut)
        if reason is not None:
            return None, reason
        try:
            audio = cut.load_audio()  # [channels, samples]
        except Exception as err:  # any decoder failure is a per-clip skip, not a crash
            return None, f"audio_decode_failed: {self.decode_failure(cut, err)}"
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim == 2:
            audio = audio.mean(axis=0)  # downmix multichannel to mono
        sr = cut.sampling_rate
        reason = check_waveform(audio, sr, self.cfg)
        if reason is not None:
            return None, reason
        if sr != self.cfg.sampling_rate:
            audio = soxr.resample(audio, sr, self.cfg.sampling_rate).astype(np.float32)
        return audio, None

    def record(self, cut) -> dict:
        """The cut's record, its caption re-rendered when ``caption_attributes`` is set."""
        rec = record_of(cut)
        if self.cfg.caption_attributes is not None:
            rec["caption"] = render_partial_caption(rec["attributes"], self.cfg.caption_attributes)
        return rec

    def __getitem__(self, cuts: CutSet) -> dict[str, Any]:
        waves, records, skipped = [], [], []
        for cut in cuts:
            audio, reason = self.load(cut)
            if reason is not None:
                skipped.append({"id": cut.id, "reason": reason})
                continue
            waves.append(torch.from_numpy(audio))
            records.append(self.record(cut))
        lens = torch.tensor([w.numel() for w in waves], dtype=torch.long)
        max_len = int(lens.max()) if len(waves) else 0
        wave = torch.zeros(len(waves), max_len)  # [B, T] zero-padded
        for i, w in enumerate(waves):
            wave[i, : w.numel()] = w
        return {
            "wave": wave,
            "wave_lens": lens,
            "ids": [r["id"] for r in records],
            "records": records,
            "skipped": skipped,
            "padding_efficiency": padding_efficiency(lens),
        }


def padding_efficiency(lens: torch.Tensor | list[int]) -> float:
    """Real samples / padded samples of one batch (1.0 = no padding)."""
    lens = torch.as_tensor(lens)
    if lens.numel() == 0:
        return 1.0
    return float(lens.sum()) / float(lens.max() * lens.numel())


__all__ = ["SpeechBatchDataset", "check_waveform", "describe_refusal", "padding_efficiency"]
