"""A trained model as a tool: audio in, transcript + caption + emotion + per-class scores out.

:class:`Explainer` is what ``predict``, the web app (:mod:`explainable_ser.app`) and notebooks
use. It wraps an :class:`~explainable_ser.model.ser.ExplainableSER` built either from a run's
checkpoint (:meth:`Explainer.from_checkpoint`, needs the run directory) or from an exported
directory (:meth:`Explainer.from_export`, see :mod:`explainable_ser.export`; needs neither
the run nor the training code)::

    import explainable_ser
    ser = explainable_ser.from_pretrained("exported/demo")
    ser.explain("clip.wav")  # {"transcript": ..., "caption": ..., "emotion": ..., ...}

Audio: anything soundfile reads (WAV, FLAC, OGG, ...) and, failing that, anything PyAV decodes
(MP3, M4A, MP4, WebM, ...), any rate (resampled to the model's 16 kHz), multichannel
downmixed, checked like training clips (empty, silent, non-finite, too short). A recording
longer than the model's ``data.max_clip_seconds`` is cut at its pauses
(:mod:`data_modules.segment`) and explained piece by piece (:meth:`Explainer.explain_recording`).
"""

from __future__ import annotations

import dataclasses
import functools
import re
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import soundfile as sf
import soxr
import torch

from data_modules.audio import decode_mp4
from data_modules.batches import SpeechBatchDataset, check_waveform, describe_refusal
from data_modules.evidence import clip_evidence, load_references
from data_modules.records import make_cut
from data_modules.segment import split_at_pauses
from explainable_ser.evaluation.decoding import concept_openings
from explainable_ser.evaluation.grounding import check_rationale
from explainable_ser.model.prompts import caption_attributes, get_task, parse_output
from explainable_ser.serving.bundle import load_exported
from explainable_ser.training.assembly import load_trained

_EMOTION_PREFIX = re.compile(r"emotion\s*:", re.IGNORECASE)


class AudioError(ValueError):
    """A file that cannot be explained: the message says why (no traceback needed)."""


def probe_seconds(path: str | Path) -> float:
    """A file's duration from its header (soundfile, else PyAV), without decoding it."""

    path = Path(path)
    if path.stat().st_size == 0:  # soundfile would say "Format not recognised"
        raise AudioError("empty file (0 bytes)")
    try:
        info = sf.info(str(path))
        return info.frames / info.samplerate
    except Exception:
        pass

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


def read_audio(path: str | Path, data_cfg, any_length: bool = False) -> np.ndarray:
    """Mono float32 samples at ``data_cfg.sampling_rate``; :class:`AudioError` names the problem.

    A format soundfile reads goes through the data module's own loader (the downmix, resampling
    and checks training clips get); anything else is decoded by PyAV and checked the same way.
    ``any_length``: no maximum duration (a long recording, to be cut into pieces)."""

    if any_length:
        data_cfg = dataclasses.replace(data_cfg, max_clip_seconds=float("inf"))

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
        cut = make_cut(
            path.stem, path, sampling_rate=info.samplerate, num_samples=info.frames, corpus="files", split="predict"
        )
        audio, reason = SpeechBatchDataset(data_cfg).load(cut)
        seconds = info.frames / info.samplerate if info.samplerate else None
    else:
        try:
            audio = decode_mp4(path)
        except Exception as err:
            raise AudioError(f"neither soundfile nor PyAV can decode it ({type(err).__name__}: {err})") from None
        reason = check_waveform(audio, 16000, data_cfg)
        seconds = audio.shape[-1] / 16000
        if reason is None and data_cfg.sampling_rate != 16000:
            audio = soxr.resample(audio, 16000, data_cfg.sampling_rate)
    if reason is not None:
        raise AudioError(describe_refusal(reason, seconds, data_cfg))
    return np.ascontiguousarray(audio, dtype=np.float32)


def summarize_recording(pieces: list[dict], labels: list[str], duration: float, skipped_short: int = 0) -> dict:
    """What a recording's explained pieces say together (see :meth:`Explainer.explain_recording`)."""
    seconds = np.array([p["end"] - p["start"] for p in pieces], dtype=float)
    weights = seconds / seconds.sum()
    scores = {
        lab: round(float(sum(w * p["emotion_scores"][lab] for w, p in zip(weights, pieces))), 4) for lab in labels
    }
    share = {lab: round(float(sum(w for w, p in zip(weights, pieces) if p["emotion"] == lab)), 4) for lab in labels}
    return {
        "duration": round(duration, 2),
        "n_pieces": len(pieces),
        "skipped_short": skipped_short,
        "emotion": max(labels, key=lambda lab: scores[lab]),
        "emotion_scores": scores,
        "emotion_share": share,
        "timeline": [[p["start"], p["end"], p["emotion"]] for p in pieces],
        "transcript": " ".join(p["transcript"] for p in pieces if p.get("transcript")),
        "pieces": pieces,
    }


@dataclass
class Explainer:
    """A trained model with the settings it decodes with."""

    model: torch.nn.Module
    """An :class:`~explainable_ser.model.ser.ExplainableSER` (eval mode)."""
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

        cfg, _, module, _ = load_trained(ckpt, list(overrides), with_data=False)
        return cls(module.model, cfg, str(ckpt))

    @classmethod
    def from_export(cls, path: str | Path, device: str | None = None, overrides: list[str] | tuple = ()) -> Explainer:
        """From a directory written by ``python -m explainable_ser.export`` (``overrides``:
        e.g. ``eval.num_beams=4``)."""

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
        return {
            b: [round(float(v), 4) for v in w.detach().float().cpu()] for b, w in self.model.layer_weights().items()
        }

    def read(self, path: str | Path, any_length: bool = True) -> torch.Tensor:
        """A file's samples [T] at the model's rate; ``any_length=False`` refuses one longer than
        ``data.max_clip_seconds`` as training does."""
        return torch.from_numpy(read_audio(path, self.cfg.data, any_length=any_length))

    @property
    def max_seconds(self) -> float:
        """The longest piece explained whole (``data.max_clip_seconds``); longer audio is cut."""
        return float(self.cfg.data.max_clip_seconds)

    @property
    def explain_task(self):
        """The emotion task the model answers with its explanation: the first of ``eval.tasks``
        holding the emotion and a caption or rationale without the transcript (``ser_sed`` for the
        paper's systems, ``rat_ser`` for a rationale system), else ``ser_sed`` (``ser`` for an SSL
        baseline)."""
        if not getattr(self.model, "has_descriptor", True):
            return get_task("ser")
        for name in self.cfg.eval.tasks:
            fields = get_task(name).fields
            if "emotion" in fields and "transcript" not in fields and len(fields) > 1:
                return get_task(name)
        return get_task("ser_sed")

    @functools.cached_property
    def references(self) -> dict | None:
        """The usual voices an evidence rationale is judged against: the references file that
        ``data_modules.rationales --source evidence`` wrote beside the training manifest (None
        when the model was not trained on evidence rationales, or that file is not here)."""
        for spec in self.cfg.data.corpora:
            if spec.train_split is None:
                continue
            path = Path(spec.dir) / f"{spec.name}_cuts_{spec.train_split}.jsonl.gz.references.json"
            if path.is_file():
                return load_references(path)
        return None

    def checked_cues(self, wave: torch.Tensor, text: str | None, transcript: str | None) -> list[dict]:
        """Each measured cue ``text`` states (:func:`~explainable_ser.evaluation.grounding.parse_cues`)
        beside the clip's measurement and usual value, with its verdict; the clip is compared
        with the training corpus's usual neutral voice (the speaker is not known here)."""
        from data_modules.annotate.measure import measure_audio  # librosa's pYIN: only when asked

        measured = measure_audio(wave.detach().float().cpu().numpy(), self.cfg.data.sampling_rate, transcript)
        return check_rationale(text, clip_evidence(measured, None, self.references))

    # -- inference -----------------------------------------------------------------------------
    def explain(self, audio, zero_descriptor: bool = False) -> dict:
        """One file path or waveform [T] (16 kHz) -> its explanation (see :meth:`explain_batch`);
        a recording longer than :attr:`max_seconds` -> :meth:`explain_recording`'s summary."""
        wave = audio if isinstance(audio, torch.Tensor) else self.read(audio)
        if wave.numel() > self.max_seconds * self.cfg.data.sampling_rate:
            return self.explain_recording(wave, zero_descriptor=zero_descriptor)
        return self.explain_batch([wave], zero_descriptor=zero_descriptor)[0]

    def explain_recording(
        self, wave: torch.Tensor, zero_descriptor: bool = False, batch_seconds: float = 60.0, progress=None
    ) -> dict:
        """A recording of any length [T] -> its pieces explained and a summary.

        The recording is cut at its pauses into pieces of at most :attr:`max_seconds`
        (:func:`data_modules.segment.split_at_pauses`); the pieces are explained in batches of up
        to ``batch_seconds`` of audio. Returns ``pieces`` (each :meth:`explain_batch` row with
        ``piece``, ``start`` and ``end`` in seconds), ``timeline`` (``[start, end, emotion]``
        per piece), ``emotion`` and ``emotion_scores`` (the pieces' scores averaged, weighted by
        their duration), ``emotion_share`` (the share of the explained time each emotion was
        given), ``transcript`` (the pieces' transcripts joined), ``duration`` and
        ``skipped_short`` (speech runs shorter than ``data.min_clip_seconds``, not explained).
        ``progress``: called with the number of pieces done after each batch."""

        sr = self.cfg.data.sampling_rate
        audio = wave.detach().float().cpu().numpy()
        pieces, short = split_at_pauses(
            audio, sr, max_seconds=self.max_seconds, min_seconds=self.cfg.data.min_clip_seconds
        )
        if not pieces:
            raise AudioError(
                f"no speech found: no run of sound of at least {self.cfg.data.min_clip_seconds:.2f} s "
                f"(data.min_clip_seconds) within 35 dB of the recording's loudest part "
                f"(or of -25 dBFS, for a quieter recording)"
            )
        rows: list[dict] = []
        group: list = []
        for _k, piece in enumerate([*pieces, None]):
            full = piece is None or sum(p.end - p.start for p in group) + piece.end - piece.start > batch_seconds * sr
            if group and full:
                waves = [wave[p.start : p.end] for p in group]
                for p, row in zip(group, self.explain_batch(waves, zero_descriptor=zero_descriptor)):
                    start, end = p.seconds(sr)
                    rows.append({"piece": len(rows), "start": round(start, 2), "end": round(end, 2), **row})
                group = []
                if progress is not None:
                    progress(len(rows))
            if piece is not None:
                group.append(piece)
        return summarize_recording(rows, self.labels, duration=len(audio) / sr, skipped_short=len(short))

    @torch.no_grad()
    def explain_batch(self, waves: list[torch.Tensor], zero_descriptor: bool = False) -> list[dict]:
        """Waveforms [T_i] -> per utterance: ``transcript`` (the ASR task), ``caption`` and
        ``emotion`` (the emotion task; an SSL baseline writes no caption), ``emotion_scores``
        (the model's probability of ``Emotion: {label}`` after its own caption),
        ``emotion_source`` (``generated``, or ``scores`` when the text names no known label and
        the best-scoring one is given), the ``attributes`` read back from the caption, and the
        ``raw`` generated texts; ``concept_cues`` for a concept-led rationale
        (``eval.concept_rationale``). ``zero_descriptor``: the descriptor tokens are zeroed (the
        counterfactual: what the answer is without the explanation stream)."""
        model, labels = self.model, self.labels
        lens = torch.tensor([w.numel() for w in waves], device=self.device)
        wave = torch.zeros(len(waves), int(lens.max()), device=self.device)  # [B, T] zero-padded
        for i, w in enumerate(waves):
            wave[i, : w.numel()] = w.to(self.device)
        kw = dict(
            max_new_tokens=self.cfg.eval.max_new_tokens,
            num_beams=self.cfg.eval.num_beams,
            zero_descriptor=zero_descriptor,
        )
        asr = model.generate(wave, lens, get_task("asr"), **kw)
        task = self.explain_task
        stated = None
        if self.cfg.eval.concept_rationale is not None and task.fields[0] == "rationale":
            # concept-led (eval.concept_rationale): the concept heads' sure cues open the rationale
            speech = model.speech_tokens(
                wave, lens, sample_content=False, sample_descriptor=False, zero_descriptor=False
            )
            ids = [str(i) for i in range(len(waves))]
            openings, stated = concept_openings(model, speech, ids, self.cfg, zero_descriptor)
            raw = model.generate_from(speech, task, prefixes=openings, **kw)
        else:
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
            out.append(
                {
                    "transcript": parse_output(a)["transcript"],
                    "caption": p["caption"],
                    "emotion": p["emotion"] or best,
                    "emotion_source": "generated" if p["emotion"] else "scores",
                    "emotion_scores": {lab: round(float(v), 4) for lab, v in zip(labels, s)},
                    "attributes": caption_attributes(p["caption"]),
                    "raw": {"asr": a, task.name: r},
                }
            )
            if "rationale" in task.fields:
                out[-1]["rationale"] = p["rationale"]
            if stated is not None:
                out[-1]["concept_cues"] = stated[len(out) - 1]
        if self.references is not None:  # a model of evidence rationales: its cues are checked
            for row, w in zip(out, waves):
                row["cues"] = self.checked_cues(w, row.get("rationale") or row["caption"], row["transcript"])
        return out
