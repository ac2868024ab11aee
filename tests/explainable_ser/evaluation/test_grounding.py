"""Stated cues read from captions and rationales, checked against attributes; consistency."""

from __future__ import annotations

import pytest

from explainable_ser.evaluation.grounding import (
    consistency,
    emotion_words,
    grounding,
    stated_cues,
)
from explainable_ser.model.prompts import caption_attributes

LABELS = ["neutral", "happy", "sad", "angry"]


@pytest.mark.parametrize(
    "text, want",
    [
        (
            'A female speaker with high pitch and low volume speaks at a slow pace, emphasizing the word "ball".',
            {"gender": "female", "pitch": "high", "volume": "low", "speed": "slow", "emphasis": "ball"},
        ),
        (
            "Her voice is loud and she speaks quickly, with a high, tense pitch.",
            {"gender": "female", "pitch": "high", "volume": "high", "speed": "fast", "emphasis": None},
        ),
        (
            "The pitch is low and the pace is slow; he sounds tired.",
            {"gender": "male", "pitch": "low", "volume": None, "speed": "slow", "emphasis": None},
        ),
        (
            "A quiet, hushed delivery at a normal rate.",
            {"gender": None, "pitch": None, "volume": "low", "speed": "normal", "emphasis": None},
        ),
        ("", {"gender": None, "pitch": None, "volume": None, "speed": None, "emphasis": None}),
    ],
)
def test_stated_cues(text, want):
    assert stated_cues(text) == want


def test_captions_read_the_same_as_the_caption_parser():
    from data_modules.captions import CAPTION_TEMPLATES, render_caption

    attrs = {"gender": "male", "pitch": "normal", "volume": "high", "speed": "fast", "emphasis": "door"}
    for i in range(len(CAPTION_TEMPLATES)):
        cap = render_caption(attrs, template=i)
        assert stated_cues(cap) == caption_attributes(cap) == attrs, cap


def test_grounding_scores_and_hallucinated_cues_by_hand():
    refs = [
        {"gender": "female", "pitch": "high", "volume": "low"},
        {"gender": "male", "pitch": "low", "volume": "high", "speed": "fast"},
        {"pitch": "normal"},
    ]
    texts = [
        "She speaks with a high pitch and loud voice.",  # gender ok, pitch ok, volume wrong
        "His pitch is low.",  # gender ok, pitch ok
        "A male speaker with high pitch.",
    ]  # gender unknown, pitch wrong
    g = grounding(texts, refs)
    assert g["per_cue"]["gender"] == {"stated": 3, "checked": 2, "accuracy": 1.0, "hallucinated": 0.0}
    assert g["per_cue"]["pitch"]["accuracy"] == pytest.approx(2 / 3)
    assert g["per_cue"]["volume"] == {"stated": 1, "checked": 1, "accuracy": 0.0, "hallucinated": 1.0}
    assert g["per_cue"]["speed"]["stated"] == 0 and g["per_cue"]["speed"]["accuracy"] is None
    assert g["n_checked_cues"] == 6 and g["hallucinated_cue_rate"] == pytest.approx(2 / 6)
    assert g["accuracy"] == pytest.approx(4 / 6)


def test_consistency_of_emotion_words():
    assert emotion_words("a cheerful, excited voice", LABELS) == {"happy"}
    c = consistency(
        ["happy", "sad", "angry", None, "neutral"],
        ["She sounds cheerful.", "He sounds furious.", "Loud and fast.", "x", None],
        LABELS,
    )
    assert c == {"n": 3, "inconsistent_rate": pytest.approx(1 / 3), "no_emotion_word_rate": pytest.approx(1 / 3)}
