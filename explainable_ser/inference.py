"""A trained model as a tool: audio in, transcript + caption + emotion + per-class scores out.

:class:`Explainer` is what ``predict``, the web app (:mod:`explainable_ser.app`) and notebooks
use. It wraps an :class:`~explainable_ser.model.ExplainableSER` built either from a run's
checkpoint (:meth:`Explainer.from_checkpoint`, needs the run directory) or from an exported
directory (:meth:`Explainer.from_export`, see :mod:`explainable_ser.export`; needs neither
the run nor the training code)::

    import explainable_ser
    ser = explainable_ser.from_pretrained("exported/demo")
    ser.explain("clip.wav")  # {"transcript": ..., "caption": ..., "emotion": ..., ...}

Audio: anything soundfile reads (WAV, FLAC, OGG, ...) and, failing that, anything PyAV decodes
(MP3, M4A, MP4, WebM, ...), any rate (resampled to the model's 16 kHz), multichannel
downmixed, checked like training clips (empty, silent, non-finite, too short or long).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from explainable_ser.prompts import caption_attributes, get_task, parse_output

_EMOTION_PREFIX = re.compile(r"emotion\s*:", re.IGNORECASE)


class AudioError(ValueError):
    """A file that cannot be explained: the message says why (no traceback needed)."""


def probe_seconds(path: str | Path) -> float:
    """A file's duration from its header (soundfile, else PyAV), without decoding it."""
    import soundfile as sf

    path = Path(path)
    if path.stat().st_size == 0:  # soundfile would say "Format not recognised"
        raise AudioError("empty file (0 bytes)")
    try:
        info = sf.info(str(path))
        return info.frames / info.samplerate
    except Exception:
        pass
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise AudioError("no audio stream")
            stream = container.streams.audio[0]
            if stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base)
            if container.duration is not None:
                return container.duration / av.time_base
            return 0.0  # unknown from the header: bucketed as short, still decoded whole
    except AudioError:
        raise
    except Exception as err:
        raise AudioError(f"neither soundfile nor PyAV can read it ({type(err).__name__}: {err})") from None


def read_audio(path: str | Path, data_cfg) -> np.ndarray:
    """Mono float32 samples at ``data_cfg.sampling_rate``; :class:`AudioError` names the problem.

    A format soundfile reads goes through the data module's own loader (the downmix, resampling
    and checks training clips get); anything else is decoded by PyAV and checked the same way."""
    import soundfile as sf

    from data_modules.datamodule import SpeechBatchDataset, check_waveform, describe_refusal
    from data_modules.records import make_cut

    path = Path(path)
    if not path.is_file():
        raise AudioError("file not found")
    if path.stat().st_size == 0:
        raise AudioError("empty file (0 bytes)")
    try:
        info = sf.info(str(path))
    except Exception:  # not a libsndfile format: compressed audio or a video container
        info = None
    if info is not None:
        cut = make_cut(path.stem, path, sampling_rate=info.samplerate, num_samples=info.frames,
                       corpus="files", split="predict")
        audio, reason = SpeechBatchDataset(data_cfg).load(cut)
        seconds = info.frames / info.samplerate if info.samplerate else None
    else:
        from data_modules.corpora.meld import decode_mp4  # any PyAV container -> 16 kHz mono

        try:
            audio = decode_mp4(path)
        except Exception as err:
            raise AudioError(f"neither soundfile nor PyAV can decode it ({type(err).__name__}: "
                             f"{err})") from None
        reason = check_waveform(audio, 16000, data_cfg)
        seconds = audio.shape[-1] / 16000
        if reason is None and data_cfg.sampling_rate != 16000:
            import soxr

            audio = soxr.resample(audio, 16000, data_cfg.sampling_rate)
    if reason is not None:
        raise AudioError(describe_refusal(reason, seconds, data_cfg))
    return np.ascontiguousarray(audio, dtype=np.float32)


@dataclass
class Explainer:
    """A trained model with the settings it decodes with."""

    model: torch.nn.Module
    """An :class:`~explainable_ser.model.ExplainableSER` (eval mode)."""
    cfg: object
    """The run's :class:`~explainable_ser.config.ExperimentConfig` (labels, audio checks, decoding)."""
    source: str = ""
    """Where it was loaded from (checkpoint or exported directory)."""

    def __post_init__(self):
        self.model.eval()

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_checkpoint(cls, ckpt: str | Path, overrides: list[str] | tuple = ()) -> Explainer:
        """From ``RUN/stage/x.ckpt`` (the run directory holds its config and tokenizer)."""
        from explainable_ser.assembly import load_trained

        cfg, _, module, _ = load_trained(ckpt, list(overrides), with_data=False)
        return cls(module.model, cfg, str(ckpt))

    @classmethod
    def from_export(cls, path: str | Path, device: str | None = None,
                        overrides: list[str] | tuple = ()) -> Explainer:
        """From a directory written by ``python -m explainable_ser.export`` (``overrides``:
        e.g. ``eval.num_beams=4``)."""
        from explainable_ser.export import load_exported

        cfg, model = load_exported(path, device=device, overrides=overrides)
        return cls(model, cfg, str(path))

    # -- properties ----------------------------------------------------------------------------
    @property
    def labels(self) -> list[str]:
        return list(self.cfg.training.labels)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def layer_weights(self) -> dict[str, list[float]]:
        """Each branch's learned softmax weights over the encoder layers."""
        return {b: [round(float(v), 4) for v in w.detach().float().cpu()]
                for b, w in self.model.layer_weights().items()}

    def read(self, path: str | Path) -> torch.Tensor:
        return torch.from_numpy(read_audio(path, self.cfg.data))

    # -- inference -----------------------------------------------------------------------------
    def explain(self, audio, zero_descriptor: bool = False) -> dict:
        """One file path or waveform [T] (16 kHz) -> its explanation (see :meth:`explain_batch`)."""
        wave = audio if isinstance(audio, torch.Tensor) else self.read(audio)
        return self.explain_batch([wave], zero_descriptor=zero_descriptor)[0]

    @torch.no_grad()
    def explain_batch(self, waves: list[torch.Tensor], zero_descriptor: bool = False) -> list[dict]:
        """Waveforms [T_i] -> per utterance: ``transcript`` (the ASR task), ``caption`` and
        ``emotion`` (the emotion task; an SSL baseline writes no caption), ``emotion_scores``
        (the model's probability of ``Emotion: {label}`` after its own caption),
        ``emotion_source`` (``generated``, or ``scores`` when the text names no known label and
        the best-scoring one is given), the ``attributes`` read back from the caption, and the
        ``raw`` generated texts. ``zero_descriptor``: the descriptor tokens are zeroed (the
        counterfactual: what the answer is without the explanation stream)."""
        model, labels = self.model, self.labels
        lens = torch.tensor([w.numel() for w in waves], device=self.device)
        wave = torch.zeros(len(waves), int(lens.max()), device=self.device)  # [B, T] zero-padded
        for i, w in enumerate(waves):
            wave[i, : w.numel()] = w.to(self.device)
        kw = dict(max_new_tokens=self.cfg.eval.max_new_tokens, num_beams=self.cfg.eval.num_beams,
                  zero_descriptor=zero_descriptor)
        asr = model.generate(wave, lens, get_task("asr"), **kw)
        task = get_task("ser_sed" if getattr(model, "has_descriptor", True) else "ser")
        raw = model.generate(wave, lens, task, **kw)
        parsed = [parse_output(r, tuple(labels)) for r in raw]
        prefixes = []
        for r in raw:
            m = _EMOTION_PREFIX.search(r)
            prefixes.append((r[: m.start()] if m else r).strip())
        zero = {"zero_descriptor": True} if zero_descriptor else {}  # an SSL baseline has no such stream
        scores = model.label_scores(wave, lens, task, prefixes, labels, **zero)
        out = []
        for a, r, p, s in zip(asr, raw, parsed, scores):
            best = labels[int(torch.as_tensor(s).argmax())]
            out.append({
                "transcript": parse_output(a)["transcript"],
                "caption": p["caption"],
                "emotion": p["emotion"] or best,
                "emotion_source": "generated" if p["emotion"] else "scores",
                "emotion_scores": {lab: round(float(v), 4) for lab, v in zip(labels, s)},
                "attributes": caption_attributes(p["caption"]),
                "raw": {"asr": a, task.name: r},
            })
        return out
