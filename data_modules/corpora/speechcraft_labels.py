"""SpeechCraft's label files read into descriptor records: ``key:value`` label strings,
JSON/JSONL files and their variants, values normalised to SynthCraft's vocabulary.

The formats accepted and the choices made: the docstring of the reader,
:mod:`data_modules.corpora.speechcraft`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_modules.corpora.common import BadInput, PrepareReport
from data_modules.records import canonical_emotion

LABEL_EXTENSIONS: tuple[str, ...] = (".json", ".jsonl")

# Record keys holding a caption, in order of preference (see the reader's docstring).
CAPTION_KEYS: tuple[str, ...] = (
    "description",
    "caption",
    "text_description",
    "style_description",
    "text_style_target",
    "instruction",
)
# JSONL fields that may name the utterance.
KEY_FIELDS: tuple[str, ...] = ("key", "id", "sid", "segment_id", "utt_id", "utt")
ATTRIBUTE_KEYS: tuple[str, ...] = ("gender", "age", "pitch", "volume", "speed", "emphasis")

_LEVELS = {
    "low": "low",
    "normal": "normal",
    "medium": "normal",
    "moderate": "normal",
    "mid": "normal",
    "middle": "normal",
    "average": "normal",
    "high": "high",
}
_SPEEDS = {
    "slow": "slow",
    "normal": "normal",
    "medium": "normal",
    "moderate": "normal",
    "average": "normal",
    "fast": "fast",
}
_GENDERS = {"male": "male", "man": "male", "m": "male", "female": "female", "woman": "female", "f": "female"}
_LABEL_ALIASES = {"energy": "volume", "transcript": "transcription", "text": "transcription"}
_NONE_WORDS = {"", "none", "null", "n/a", "unknown", "-"}


# ------------------------------------------------------------------------------ labels
def parse_labels(text: str) -> dict[str, str]:
    """``"age:Elderly\\tgender:male\\t...\\ttranscription: text"`` -> ``{"age": "Elderly", ...}``.

    Keys are lowercased (``energy`` read as ``volume``); the transcription keeps the rest of
    the string, tabs included. Parts without a colon are ignored.
    """
    out: dict[str, str] = {}
    parts = text.split("\t")
    for i, part in enumerate(parts):
        key, sep, value = part.partition(":")
        if not sep:
            continue
        key = _LABEL_ALIASES.get(key.strip().lower(), key.strip().lower())
        if key == "transcription":
            out[key] = "\t".join([value, *parts[i + 1 :]]).strip()
            break
        out[key] = value.strip()
    return out


def _looks_like_labels(text: str) -> bool:
    return bool(re.search(r"(^|\t)\s*(gender|emotion|pitch|age)\s*:", text, re.IGNORECASE))


def iter_label_files(paths: Iterable[str | Path]) -> Iterator[Path]:
    """The label files named or found (recursively, sorted) in the given folders."""
    for path in map(Path, paths):
        if path.is_dir():
            yield from sorted(
                p
                for p in path.rglob("*")
                if p.suffix in LABEL_EXTENSIONS and p.is_file() and not p.name.startswith("._")
            )
        else:
            yield path


def _record_of_value(value: Any, file: Path) -> dict[str, Any] | None:
    """A label file's value as a record dict (keys lowercased); ``None`` when unusable."""
    if isinstance(value, str):
        if _looks_like_labels(value):
            return {"labels": value}
        return {"instruction" if "instruct" in file.name.lower() else "description": value}
    if isinstance(value, dict):
        return {str(k).lower(): v for k, v in value.items()}
    return None


def _jsonl_pairs(text: str) -> Iterator[tuple[int, Any]]:
    """``(line number, parsed object or the JSONDecodeError)`` for each non-empty line."""
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as err:
                yield number, err
            except (ValueError, RecursionError) as err:  # a >4300-digit int, deep nesting
                yield number, json.JSONDecodeError(f"{type(err).__name__}: {err}", line, 0)


def read_label_file(path: Path, report: PrepareReport) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(key, record)`` pairs of one label file; bad files, lines and values are skipped.

    A ``.json`` file that does not parse as a whole is skipped (``bad_label_file``, the
    decoder's line and column in the detail): records cannot be told apart reliably in a
    broken document. A broken line of a ``.jsonl`` file skips that line (``bad_label_line``).
    """
    try:
        text = path.read_text(encoding="utf-8-sig", errors="replace")
    except OSError as err:
        report.skip("bad_label_file", str(path), f"{type(err).__name__}: {err}")
        return
    if path.suffix == ".jsonl":
        entries: list[tuple[str, Any]] = []
        for number, obj in _jsonl_pairs(text):
            where = f"{path}:{number}"
            if isinstance(obj, json.JSONDecodeError):
                report.skip("bad_label_line", where, str(obj))
                continue
            if not isinstance(obj, dict):
                report.skip("bad_label_line", where, f"not an object: {type(obj).__name__}")
                continue
            key = next((obj[k] for k in KEY_FIELDS if isinstance(obj.get(k), str)), None)
            if key is not None:
                entries.append((key, {k: v for k, v in obj.items() if k not in KEY_FIELDS}))
            elif len(obj) == 1:
                entries.extend(obj.items())
            else:
                report.skip("bad_label_line", where, f"no key field ({', '.join(KEY_FIELDS)})")
    else:
        try:
            document = json.loads(text)
        except (ValueError, RecursionError) as err:  # JSONDecodeError, huge ints, deep nesting
            detail = str(err) if isinstance(err, json.JSONDecodeError) else f"{type(err).__name__}: {err}"
            report.skip("bad_label_file", str(path), detail)
            return
        if not isinstance(document, dict):
            report.skip("bad_label_file", str(path), "top level is not a JSON object")
            return
        entries = list(document.items())
    for key, value in entries:
        record = _record_of_value(value, path)
        if record is None:
            report.skip("bad_label_record", str(key), f"{path}: value is a {type(value).__name__}")
            continue
        yield str(key), record


def load_labels(paths: Iterable[str | Path], report: PrepareReport) -> dict[str, dict[str, Any]]:
    """key -> record merged over all label files (an earlier file's field wins)."""
    records: dict[str, dict[str, Any]] = {}
    for path in iter_label_files(paths):
        for key, record in read_label_file(path, report):
            merged = records.setdefault(key, {})
            for name, value in record.items():
                merged.setdefault(name, value)
    return records


@dataclass
class Descriptors:
    """What one label record says about its utterance."""

    transcript: str | None
    caption: str | None
    emotion: str | None
    attributes: dict[str, str]
    captions: dict[str, str] = field(default_factory=dict)
    extra: dict[str, str] = field(default_factory=dict)  # other label keys (topic ...)
    dropped: dict[str, str] = field(default_factory=dict)  # attribute values outside the vocabulary


def _normalise_attribute(name: str, value: str) -> str | None:
    """A label value in SynthCraft's vocabulary, or ``None`` when it has no place there."""
    word = " ".join(value.strip().lower().replace("_", " ").split())
    if word in _NONE_WORDS:
        return None
    if name in ("pitch", "volume"):
        return _LEVELS.get(word)
    if name == "speed":
        return _SPEEDS.get(word)
    if name == "gender":
        return _GENDERS.get(word)
    return word  # age (child ... elderly) and emphasis (free words) are kept as lowercased text


def describe(record: dict[str, Any]) -> Descriptors:
    """The descriptors of a label record. Raises :class:`BadInput` (``bad_label_record``)
    when it has neither a parsable ``labels`` string nor a caption."""

    labels_text = record.get("labels")
    if labels_text is not None and not isinstance(labels_text, str):
        raise BadInput("bad_label_record", f"'labels' is a {type(labels_text).__name__}")
    labels = parse_labels(labels_text) if labels_text else {}
    # Fields given as separate record keys count like label pairs (labels win).
    for name in (*ATTRIBUTE_KEYS, "emotion", "transcription"):
        if isinstance(record.get(name), str):
            labels.setdefault(name, record[name])
    captions = {k: record[k].strip() for k in CAPTION_KEYS if isinstance(record.get(k), str) and record[k].strip()}
    if not labels and not captions:
        raise BadInput("bad_label_record", "no key:value labels and no caption")
    attributes, dropped = {}, {}
    for name in ATTRIBUTE_KEYS:
        if name in labels:
            value = _normalise_attribute(name, labels[name])
            if value is not None:
                attributes[name] = value
            elif labels[name].strip().lower() not in _NONE_WORDS:
                dropped[name] = labels[name]
    known = {*ATTRIBUTE_KEYS, "emotion", "transcription"}
    return Descriptors(
        transcript=labels.get("transcription") or None,
        caption=next(iter(captions.values()), None),
        emotion=canonical_emotion(labels.get("emotion")),
        attributes=attributes,
        captions=captions,
        extra={k: v for k, v in labels.items() if k not in known},
        dropped=dropped,
    )
