"""Tasks, prompts, targets and the one parser that reads generated text back.

The prompt is the LLM's own chat template (paper Fig. 1)::

    system: "You are a helpful language and speech assistant."
    user:   <Content> <Speech descriptor> {instruction}
    assistant: {target}<|eot_id|>

Speech tokens are spliced at ``<Content>`` and ``<Speech descriptor>``: the rendered template is
cut at those two placeholders and each text piece is tokenised on its own, so the splice
positions never depend on how a tokenizer would have split the placeholder strings.

Targets are fields with fixed prefixes, in a fixed order (transcript, description, emotion)::

    Transcript: the dog found a ball
    Description: A male speaker with low pitch ... emphasizing the word "ball".
    Emotion: sad

:func:`parse_output` reads any text back into those fields. It never raises: a field it cannot
find is ``None``, and an emotion outside the label set is ``None`` (counted as unparsed).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SYSTEM_PROMPT = "You are a helpful language and speech assistant."
CONTENT_SLOT = "<Content>"
DESCRIPTOR_SLOT = "<Speech descriptor>"

FIELD_PREFIX = {
    "transcript": "Transcript:",
    "caption": "Description:",
    "emotion": "Emotion:",
    "rationale": "Rationale:",
}
FIELD_ORDER = ("transcript", "caption", "emotion", "rationale")


@dataclass(frozen=True)
class Task:
    """One instruction and the record fields its target holds."""

    name: str
    instruction: str
    fields: tuple[str, ...]


TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        Task("asr", "Please transcribe the speech content of the input audio.", ("transcript",)),
        Task(
            "ser_sed",
            "Please caption the input audio according to content and speech "
            "descriptor-related information, then give the emotion.",
            ("caption", "emotion"),
        ),
        # Not in the paper: the emotion before the caption (where the emotion sits in the target).
        Task(
            "ser_sed_emotion_first",
            "Please give the emotion of the input audio, then caption it "
            "according to content and speech descriptor-related information.",
            ("emotion", "caption"),
        ),
        Task("ser", "Please recognize the emotion of the speaker in the input audio.", ("emotion",)),
        Task(
            "sed",
            "Please caption the input audio according to content and speech descriptor-related information.",
            ("caption",),
        ),
        # Table 3 target ablation: transcript + descriptors + emotion in one target.
        Task(
            "asr_ser_sed",
            "Please transcribe the input audio, caption it according to its speech descriptors, then give the emotion.",
            ("transcript", "caption", "emotion"),
        ),
        Task("asr_ser", "Please transcribe the input audio, then give the emotion.", ("transcript", "emotion")),
        # Rationales (not in the paper). arXiv 2509.24187's order: transcript, emotion, then
        # the reason; and a reasoning-first order, the reason before the label it leads to.
        Task(
            "asr_ser_rat",
            "Please transcribe the input audio, give the emotion, then explain "
            "in one or two sentences which cues show it.",
            ("transcript", "emotion", "rationale"),
        ),
        Task(
            "rat_ser",
            "Please explain in one or two sentences which cues in the input audio "
            "show the speaker's emotion, then give the emotion.",
            ("rationale", "emotion"),
        ),
        Task(
            "sed_ser_rat",
            "Please caption the input audio according to content and speech "
            "descriptor-related information, give the emotion, then explain it in one or two "
            "sentences.",
            ("caption", "emotion", "rationale"),
        ),
    ]
}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    return TASKS[name]


def render_target(task: Task, record: dict) -> str | None:
    """Target text for a record, or ``None`` when the record lacks a field the task needs."""
    parts = []
    for name in task.fields:
        value = record.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        parts.append(f"{FIELD_PREFIX[name]} {str(value).strip()}")
    return "\n".join(parts)


def select_targets(
    prompts: PromptBuilder, task: Task, records: list[dict], labels, room: int | None
) -> tuple[list[int], list[str], list[tuple[str, str]]]:
    """The utterances of a batch that ``task`` can train on: ``(kept indices, their target texts,
    [(id, reason) skipped])``. Reasons: an emotion outside ``labels``
    (``unknown_emotion_for_{task}``), a field the target needs is missing
    (``missing_field_for_{task}``), a target longer than the LLM's ``room`` of text tokens
    (``sequence_too_long_for_{task}``)."""
    if room is not None:
        room -= sum(len(p) for p in prompts.pieces(task))  # speech tokens come on top
    keep, targets, skipped = [], [], []
    for i, rec in enumerate(records):
        if "emotion" in task.fields and rec.get("emotion") is not None and rec["emotion"] not in labels:
            skipped.append((rec["id"], f"unknown_emotion_for_{task.name}"))
            continue
        target = render_target(task, rec)
        if target is None:
            skipped.append((rec["id"], f"missing_field_for_{task.name}"))
            continue
        if room is not None and len(prompts.target_ids(target)) > room:
            skipped.append((rec["id"], f"sequence_too_long_for_{task.name}"))
            continue
        keep.append(i)
        targets.append(target)
    return keep, targets, skipped


class TargetSelector:
    """:func:`select_targets` for the data side: ``selector(task_name, records)`` ->
    ``{"keep": [index], "texts": [target], "skipped": [(id, reason)]}``. The data module calls it
    on every training and validation batch (it never imports the model: the selector is handed
    to it), so a batch reaches the training step with its targets chosen."""

    def __init__(self, prompts: PromptBuilder, labels, room: int | None):
        self.prompts, self.labels, self.room = prompts, set(labels), room

    def __call__(self, task_name: str, records: list[dict]) -> dict:
        keep, texts, skipped = select_targets(self.prompts, get_task(task_name), records, self.labels, self.room)
        return {"keep": keep, "texts": texts, "skipped": skipped}


def user_message(task: Task) -> str:
    return f"{CONTENT_SLOT}{DESCRIPTOR_SLOT}{task.instruction}"


class PromptBuilder:
    """Token ids of the prompt pieces around the two speech slots, per task (cached)."""

    def __init__(self, tokenizer, system_prompt: str = SYSTEM_PROMPT):
        self.tok = tokenizer
        self.system_prompt = system_prompt
        self._cache: dict[str, tuple[list[int], list[int], list[int]]] = {}
        self.eot_id = tokenizer.convert_tokens_to_ids("<|eot_id|>")
        if self.eot_id is None or self.eot_id == tokenizer.unk_token_id:
            self.eot_id = tokenizer.eos_token_id

    def _ids(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"] if text else []

    def pieces(self, task: Task) -> tuple[list[int], list[int], list[int]]:
        """(before <Content>, between the slots, after <Speech descriptor> incl. assistant header)."""
        if task.name not in self._cache:
            text = self.tok.apply_chat_template(
                [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": user_message(task)}],
                tokenize=False,
                add_generation_prompt=True,
            )
            head, rest = text.split(CONTENT_SLOT, 1)
            mid, tail = rest.split(DESCRIPTOR_SLOT, 1)
            self._cache[task.name] = (self._ids(head), self._ids(mid), self._ids(tail))
        return self._cache[task.name]

    def text_ids(self, text: str) -> list[int]:
        """The tokens of a piece of answer text, as they begin its target's tokens."""
        return self._ids(text)

    def target_ids(self, text: str) -> list[int]:
        """Target tokens followed by the end-of-turn token (the model learns to stop)."""
        return self._ids(text) + [self.eot_id]

    def value_mask(self, text: str) -> list[bool]:
        """Per token of :meth:`target_ids`: does it spell part of a value (an attribute value of
        the caption, the emotion label)? A token counts when its characters overlap a value's."""
        spans = value_spans(text)
        if not spans:
            return [False] * len(self.target_ids(text))
        if not getattr(self.tok, "is_fast", False):
            raise ValueError(
                f"value_mask needs a fast tokenizer (character offsets); {type(self.tok).__name__} is not one"
            )
        offsets = self.tok(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        mask = [any(a < e and s < b for s, e in spans) for a, b in offsets]
        return mask + [False]  # the end-of-turn token


# -- parsing ---------------------------------------------------------------------------------
_PREFIX_RE = re.compile(r"(transcript|description|emotion|rationale)\s*:", re.IGNORECASE)
_PREFIX_FIELD = {"transcript": "transcript", "description": "caption", "emotion": "emotion", "rationale": "rationale"}


def parse_output(text: str | None, labels: tuple[str, ...] | list[str] | None = None) -> dict:
    """Generated text -> ``{"transcript", "caption", "emotion", "rationale", "parsed"}``.

    The first occurrence of each prefix wins; a field runs until the next prefix. Text with no
    prefix at all is taken as a bare transcript (ASR outputs that dropped the prefix). The
    emotion is the first word after ``Emotion:`` if it is in ``labels`` (when given); otherwise
    ``None``. ``parsed`` is False when an emotion was expected but not recovered.
    """
    out: dict = {"transcript": None, "caption": None, "emotion": None, "rationale": None}
    if not isinstance(text, str):
        return {**out, "parsed": False}
    matches = list(_PREFIX_RE.finditer(text))
    if not matches:
        bare = text.strip()
        out["transcript"] = bare or None
    for i, m in enumerate(matches):
        field = _PREFIX_FIELD[m.group(1).lower()]
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        value = text[m.end() : end].strip()
        if out[field] is None and value:
            out[field] = value
    if out["emotion"] is not None:
        word = re.findall(r"[a-z]+", out["emotion"].lower())
        label = word[0] if word else None
        if labels is not None and label not in labels:
            label = None
        out["emotion"] = label
    out["parsed"] = out["emotion"] is not None
    return out


# Attribute vocabulary of SpeechCraft-style captions, read back for attribute accuracy.
_ATTR_PATTERNS = {
    "pitch": re.compile(r"\b(low|normal|high)[- ]pitch", re.IGNORECASE),
    "volume": re.compile(r"\b(low|normal|high)[- ](?:volume|energy)", re.IGNORECASE),
    # Adjacent words only: "normal pitch ... at a slow pace" must read "slow".
    "speed": re.compile(r"\b(slow|normal|fast)[- ](?:pace|speed|rate|tempo)", re.IGNORECASE),
    "gender": re.compile(r"\b(male|female)\b", re.IGNORECASE),
    "emphasis": re.compile(r"word\s*\"\s*([^\"]+?)\s*\"", re.IGNORECASE),
}


_WORD = re.compile(r"\s*(\S+)")


def value_spans(target: str) -> list[tuple[int, int]]:
    """Character spans of the values in a rendered target: each caption attribute read by
    :func:`caption_attributes` (pitch, volume, speed, gender; not the emphasised word, which is
    content) and the word after ``Emotion:``."""
    spans = []
    k = target.find(FIELD_PREFIX["emotion"])
    caption = target if k < 0 else target[:k]
    for key in ("pitch", "volume", "speed", "gender"):
        m = _ATTR_PATTERNS[key].search(caption)
        if m:
            spans.append(m.span(1))
    if k >= 0:
        m = _WORD.match(target, k + len(FIELD_PREFIX["emotion"]))
        if m:
            spans.append(m.span(1))
    return spans


def caption_attributes(caption: str | None) -> dict[str, str | None]:
    """Read pitch / volume / speed / gender / emphasis back from a descriptor caption."""
    out: dict[str, str | None] = {k: None for k in _ATTR_PATTERNS}
    if not isinstance(caption, str):
        return out
    for key, pattern in _ATTR_PATTERNS.items():
        m = pattern.search(caption)
        if m:
            out[key] = m.group(1).lower()
    return out
