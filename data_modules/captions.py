"""SpeechCraft-style descriptor captions: SynthCraft's templates, also the annotator's
(:mod:`data_modules.annotate`) and the data module's partial captions, so one keyword parser
(:func:`explainable_ser.model.prompts.caption_attributes`) reads every caption back.
"""

from __future__ import annotations

import random

# (body, emphasis clause): the clause is appended only when an emphasised word is known.
CAPTION_TEMPLATES: tuple[tuple[str, str], ...] = (
    (
        "A {gender} speaker with {pitch} pitch and {volume} volume speaks at a {speed} pace",
        ', emphasizing the word "{emphasis}"',
    ),
    (
        "Speaking at a {speed} pace, a {gender} speaker uses {pitch} pitch and {volume} volume",
        ', with emphasis on the word "{emphasis}"',
    ),
    (
        "The {gender} speaker talks with {volume} volume and {pitch} pitch at a {speed} pace",
        ', stressing the word "{emphasis}"',
    ),
    (
        "With {pitch} pitch and {volume} volume, a {gender} speaker delivers the sentence at a {speed} pace",
        ', putting emphasis on the word "{emphasis}"',
    ),
    (
        "This {gender} speaker has {pitch} pitch and {volume} volume and speaks at a {speed} pace",
        ', and the word "{emphasis}" is emphasized',
    ),
)


def render_caption(attributes: dict, rng: random.Random | None = None, template: int | None = None) -> str:
    """A SpeechCraft-style caption of the descriptors in ``attributes``.

    Needs ``gender``, ``pitch``, ``volume`` and ``speed``; ``emphasis`` is optional. The caption
    always contains "<gender> speaker", "<level> pitch", "<level> volume", "at a <speed> pace"
    and, with an emphasis, 'the word "<word>"'. ``template`` picks a template by index;
    otherwise ``rng`` (or a fresh unseeded one) picks one at random.
    """
    if template is None:
        template = (rng or random.Random()).randrange(len(CAPTION_TEMPLATES))
    body, clause = CAPTION_TEMPLATES[template]
    caption = body.format(**{key: attributes[key] for key in ("gender", "pitch", "volume", "speed")})
    if attributes.get("emphasis"):
        caption += clause.format(emphasis=attributes["emphasis"])
    return caption + "."


DESCRIBABLE = ("gender", "pitch", "volume", "speed", "emphasis")


def render_partial_caption(attributes: dict, names: list[str] | tuple[str, ...]) -> str | None:
    """A caption that names only the descriptors in ``names`` (the per-attribute ablation),
    in the wording :func:`explainable_ser.model.prompts.caption_attributes` reads back; ``None``
    when the record has none of them. Deterministic: one fixed template."""
    has = {k: attributes.get(k) for k in DESCRIBABLE if k in names and attributes.get(k) not in (None, "")}
    if not has:
        return None
    caption = f"A {has['gender']} speaker" if "gender" in has else "A speaker"
    levels = [f"{has[k]} {k}" for k in ("pitch", "volume") if k in has]
    if levels:
        caption += " with " + " and ".join(levels)
    caption += f" speaks at a {has['speed']} pace" if "speed" in has else " speaks"
    if "emphasis" in has:
        caption += f', emphasizing the word "{has["emphasis"]}"'
    return caption + "."
