"""The unified record: one utterance, as every corpus reader produces it.

The carrier is a lhotse ``MonoCut`` whose single supervision holds the text fields and whose
``custom`` dict holds the rest. Manifests are ``CutSet`` JSONL files (lazily readable) or Shar
shards; nothing downstream depends on which reader produced them.

Record fields (the contract of the design notes):

=====================  ================================================================
``id``                 the cut id == the supervision id (unique within a corpus)
audio source           the cut's ``Recording`` (path, offset = ``cut.start``,
                       ``cut.duration``, ``sampling_rate``, ``channel``)
``corpus``             corpus name (``synthcraft``, ``iemocap`` ...)
``split``              ``train`` / ``dev`` / ``test`` (or a corpus-specific name)
``transcript``         ``supervision.text`` (may be ``None`` where a corpus has none)
``caption``            descriptor caption (``None`` where the corpus has none)
``emotion``            canonical emotion label (see :data:`EMOTIONS`) or ``None``
``attributes``         dict: gender, age, pitch, volume, speed, emphasis (where known)
``annotator_emotions`` list of canonical labels, one per annotator (where kept)
``rationale``          a sentence or two explaining the emotion (``data_modules.rationales``
                       writes them with a teacher LLM or from measurements), ``None`` where
                       there is none
``rationale_cues``     the measured cues an evidence rationale states (``{cue, direction,
                       value, unit, reference, ...}``); ``attributes.evidence`` holds every
                       cue's measurement (``data_modules.evidence``)
``rationale_source``   what wrote the rationale (``evidence-v1``, a paraphrasing model)
``speaker``            ``supervision.speaker``
``gender``             ``supervision.gender`` (``male`` / ``female``)
``session`` / ``fold`` corpus-specific grouping (IEMOCAP sessions)
=====================  ================================================================
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lhotse import AudioSource, MonoCut, Recording, SupervisionSegment

# Canonical emotion labels. SynthCraft and IEMOCAP use the first four; MELD adds three;
# SpeechCraft's "unknown" maps to None (no emotion target).
EMOTIONS: tuple[str, ...] = ("neutral", "happy", "sad", "angry", "surprised", "fearful", "disgusted")

# Aliases seen in the real releases, mapped onto the canonical labels.
EMOTION_ALIASES: dict[str, str] = {
    "neu": "neutral",
    "neutral": "neutral",
    "calm": "neutral",
    "hap": "happy",
    "happy": "happy",
    "joy": "happy",
    "exc": "happy",
    "excited": "happy",
    "happiness": "happy",
    "sad": "sad",
    "sadness": "sad",
    "ang": "angry",
    "angry": "angry",
    "anger": "angry",
    "sur": "surprised",
    "surprise": "surprised",
    "surprised": "surprised",
    "fea": "fearful",
    "fear": "fearful",
    "fearful": "fearful",
    "dis": "disgusted",
    "disgust": "disgusted",
    "disgusted": "disgusted",
}

CUSTOM_FIELDS = (
    "corpus",
    "split",
    "caption",
    "emotion",
    "attributes",
    "annotator_emotions",
    "session",
    "fold",
    "rationale",
    "rationale_cues",
    "rationale_source",
)


def canonical_emotion(label: str | None) -> str | None:
    """Map a corpus label to a canonical one; ``None`` for unknown/other labels."""
    if label is None:
        return None
    return EMOTION_ALIASES.get(label.strip().lower())


def make_cut(
    utt_id: str,
    audio_path: str | Path,
    *,
    sampling_rate: int,
    num_samples: int,
    corpus: str,
    split: str,
    transcript: str | None = None,
    caption: str | None = None,
    emotion: str | None = None,
    attributes: dict[str, Any] | None = None,
    annotator_emotions: list[str] | None = None,
    speaker: str | None = None,
    gender: str | None = None,
    language: str | None = None,
    start: float = 0.0,
    duration: float | None = None,
    channel: int = 0,
    recording_id: str | None = None,
    recording_duration: float | None = None,
    session: str | int | None = None,
    fold: int | None = None,
    rationale: str | None = None,
) -> MonoCut:
    """Build one unified record.

    ``start``/``duration`` select a segment of a longer recording (GigaSpeech); by default the
    whole file is the utterance. ``num_samples`` is the length of the whole recording file.
    """
    rec_id = recording_id or utt_id
    rec_dur = recording_duration if recording_duration is not None else num_samples / sampling_rate
    recording = Recording(
        id=rec_id,
        sources=[AudioSource(type="file", channels=[channel], source=str(audio_path))],
        sampling_rate=sampling_rate,
        num_samples=num_samples,
        duration=rec_dur,
    )
    seg_dur = duration if duration is not None else rec_dur - start
    custom = {
        "corpus": corpus,
        "split": split,
        "caption": caption,
        "emotion": emotion,
        "attributes": dict(attributes or {}),
        "annotator_emotions": list(annotator_emotions) if annotator_emotions else None,
        "session": session,
        "fold": fold,
        "rationale": rationale,
    }
    sup = SupervisionSegment(
        id=utt_id,
        recording_id=rec_id,
        start=0.0,
        duration=seg_dur,
        channel=channel,
        text=transcript,
        speaker=speaker,
        gender=gender,
        language=language,
        custom=custom,
    )
    return MonoCut(id=utt_id, start=start, duration=seg_dur, channel=channel, recording=recording, supervisions=[sup])


def record_field(record: dict, name: str):
    """A descriptor field's value: ``emotion``, an ``attributes`` key (``pitch``), or a measured
    cue's direction (``evidence.pitch``: ``attributes.evidence.pitch.direction``, written by
    ``data_modules.rationales --source evidence``)."""
    if name == "emotion":
        return record.get("emotion")
    attrs = record.get("attributes") or {}
    if "." in name:
        group, key = name.split(".", 1)
        got = (attrs.get(group) or {}).get(key)
        return got.get("direction") if isinstance(got, dict) else got
    return attrs.get(name, record.get(name))


def field_value(record: dict, name: str) -> str | None:
    """:func:`record_field` as a lowercase string (None when the record lacks it)."""
    value = record_field(record, name)
    return None if value is None else str(value).strip().lower()


def field_labels(classes: dict[str, list[str]], records: list[dict]) -> dict[str, list[int]]:
    """Per field, each record's value as its index among ``classes[field]``; -100 (the index
    torch's cross-entropy ignores) where the record has none, or one not among them."""
    out = {}
    for f, values in classes.items():
        got = [field_value(r, f) for r in records]
        out[f] = [values.index(v) if v in values else -100 for v in got]
    return out


def record_of(cut) -> dict[str, Any]:
    """The record fields of a cut as a plain dict (no audio)."""
    sup = cut.supervisions[0]
    custom = sup.custom or {}
    out = {
        "id": cut.id,
        "duration": cut.duration,
        "transcript": sup.text,
        "speaker": sup.speaker,
        "gender": sup.gender,
        "language": sup.language,
    }
    for key in CUSTOM_FIELDS:
        out[key] = custom.get(key)
    out["attributes"] = dict(out["attributes"] or {})
    return out


def read_progress(path: str | Path) -> dict[str, dict]:
    """The rows a resumable job appended to its progress file, by ``id`` (a cut-off last line is
    dropped, see :func:`read_appended_jsonl`)."""
    try:
        rows, _ = read_appended_jsonl(path)
    except ValueError as err:
        raise ValueError(f"{err}: delete it to start over") from None
    return {row["id"]: row for row in rows}


def read_jsonl(path: str | Path) -> list[dict]:
    """One dict per non-empty line of a JSONL file (``predictions.jsonl``, manifests' rows);
    a line that is not a JSON object is a :class:`ValueError` naming the file and line."""

    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{n}: not a JSON line ({err})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{n}: not a JSON object")
            rows.append(row)
    return rows


def manifest_path(out_dir: str | Path, corpus: str, split: str) -> Path:
    """Where a corpus split's cut manifest lives inside a prepared directory."""
    return Path(out_dir) / f"{corpus}_cuts_{split}.jsonl.gz"


def read_appended_jsonl(path: str | Path) -> tuple[list[dict], bool]:
    """``(rows, dropped)`` of a JSONL file that a resumable job appends to (``predict --out``,
    ``data_modules.rationales``' progress file). A last line cut off mid-write is removed from
    the file (``dropped``), and a whole last line without its newline gets one, so the lines
    appended next start on a line of their own. Any other bad line is a :class:`ValueError`."""

    path = Path(path)
    if not path.is_file():
        return [], False
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    rows = []
    for i, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:  # the line being written when the job stopped
                path.write_text("".join(lines[:-1]), encoding="utf-8")
                return rows, True
            raise ValueError(f"{path} line {i + 1} is not JSON") from None
    if lines and not lines[-1].endswith("\n"):
        with open(path, "a", encoding="utf-8") as f:
            f.write("\n")
    return rows, False
