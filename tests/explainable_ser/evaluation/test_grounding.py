"""Stated cues read from captions and rationales, checked against attributes; consistency."""

from __future__ import annotations

import pytest

from explainable_ser.evaluation.grounding import (
    check_cue,
    consistency,
    cue_grounding,
    emotion_words,
    grounding,
    parse_cues,
    rationale_samples,
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


# -- cues against measurements --------------------------------------------------------------
EV = {
    "pitch": {"direction": "high", "value": 240.0, "reference": 180.0, "deviation": 4.98},
    "range": {"direction": "normal", "value": 6.0, "reference": 6.5, "deviation": -0.5},
    "volume": {"direction": "high", "value": -14.0, "reference": -20.0, "deviation": 6.0},
    "speed": {"direction": "slow", "value": 3.0, "reference": 4.0, "deviation": -25.0},
}


@pytest.mark.parametrize(
    "text, want",
    [
        (
            "A wide pitch range (11 semitones), a loud voice (+6 dB) and a high pitch (240 Hz).",
            [("range", "wide", 11.0, "semitones"), ("volume", "high", 6.0, "dB"), ("pitch", "high", 240.0, "Hz")],
        ),
        (
            "Her voice is quiet, she speaks slowly, with a monotone melody.",
            [("volume", "low", None, None), ("speed", "slow", None, None), ("range", "narrow", None, None)],
        ),
        (
            "a soft, low volume (-4 dB), an unhurried, slow pace",
            [("volume", "low", -4.0, "dB"), ("speed", "slow", None, None)],
        ),
        (
            "a pitch near its usual (164 Hz) and a steady pace",
            [("pitch", "normal", 164.0, "Hz"), ("speed", "normal", None, None)],
        ),
        ("high-pitched, then a high pitch again", [("pitch", "high", None, None)]),  # first mention only
        (
            "This female speaker has low pitch and high volume",
            [("pitch", "low", None, None), ("volume", "high", None, None)],
        ),
        (None, []),
    ],
)
def test_parse_cues(text, want):
    assert [(c["cue"], c["direction"], c["value"], c["unit"]) for c in parse_cues(text)] == want


def test_each_stated_cue_is_checked_against_the_measurement():
    def verdict(cue, direction, value=None):
        return check_cue({"cue": cue, "direction": direction, "value": value, "unit": None}, EV)["verdict"]

    assert verdict("pitch", "high") == "right"
    assert verdict("pitch", "high", 250.0) == "right"  # 0.7 semitones off: inside the 3-semitone zone
    assert verdict("pitch", "high", 350.0) == "wrong"  # 6.5 semitones off
    assert verdict("range", "wide") == "hallucinated"  # a deviation the clip does not show
    assert verdict("speed", "fast") == "hallucinated"  # the opposite one
    assert verdict("speed", "normal") == "wrong"  # a miss, not an invention
    assert verdict("volume", "high", 3.0) == "wrong"  # +3 dB stated, +6 measured: 3 dB off
    assert verdict("volume", "high", 5.0) == "right"
    assert verdict("speed", "slow", 3.3) == "right"  # 10 % off
    assert check_cue({"cue": "pitch", "direction": "low", "value": None}, {})["verdict"] == "unchecked"


def test_cue_grounding_by_hand():
    texts = [
        "The speaker sounds angry: a loud voice (+6 dB), a high pitch and a fast pace.",  # right, right, halluc.
        "A slow pace (3.1 syllables/s) and a narrow pitch range: the speaker is sad.",  # right, halluc.
        "Sounds happy and angry.",  # no cue; two emotions
        None,  # no rationale: not counted
    ]
    got = cue_grounding(
        texts, [EV, EV, EV, EV], ["angry", "happy", "angry", "sad"], ("neutral", "happy", "sad", "angry")
    )
    assert got["n_rationales"] == 3
    assert got["n_stated_cues"] == got["n_checked_cues"] == 5
    assert got["cues_per_rationale"] == pytest.approx(5 / 3)
    assert got["cue_accuracy"] == pytest.approx(3 / 5)
    assert got["hallucinated_cue_rate"] == pytest.approx(2 / 5)
    assert got["magnitude_accuracy"] == 1.0 and got["n_magnitudes"] == 2
    assert got["emotion_consistency"] == pytest.approx(1 / 3)  # only the first names its answer alone
    assert got["per_cue"]["speed"] == {"stated": 2, "accuracy": 0.5, "hallucinated": 0.5}


def test_rationale_samples_are_drawn_by_seed_and_checked():
    rows = [
        {"id": f"u{i}", "task": "rat_ser", "rationale": "A loud voice (+6 dB).", "attributes_ref": {"evidence": EV}}
        for i in range(8)
    ]
    rows += [{"id": "none", "task": "rat_ser", "rationale": "A loud voice.", "attributes_ref": {}}]
    first = rationale_samples(rows, n=3, seed=0)
    assert [s["id"] for s in first] == [s["id"] for s in rationale_samples(list(reversed(rows)), n=3, seed=0)]
    assert len(first) == 3 and "none" not in {s["id"] for s in first}
    assert first[0]["cues"][0]["verdict"] == "right" and first[0]["measured"]["volume"] == (-14.0, None, -20.0, "high")


def test_the_stereotype_check_tells_reading_the_clip_from_reciting_the_emotion():
    quiet = {**EV, "volume": {"direction": "low", "value": -26.0, "reference": -20.0, "deviation": -6.0}}
    # three angry clips: two loud (the stereotype: loud), one quiet
    evs, refs = [EV, EV, quiet], ["angry", "angry", "angry"]
    recite = ["A loud voice: the speaker is angry."] * 3
    got = cue_grounding(recite, evs, refs, ("neutral", "angry"), reference_emotions=refs)["stereotype"]
    assert got["share"] == 1.0 and got["baseline_accuracy"] == pytest.approx(2 / 3)
    assert got["n_off_stereotype"] == 0 and got["accuracy_off_stereotype"] is None
    assert got["profiles"]["angry"]["volume"] == "high"
    read = ["A loud voice: the speaker is angry."] * 2 + ["A quiet voice, yet the speaker is angry."]
    got = cue_grounding(read, evs, refs, ("neutral", "angry"), reference_emotions=refs)
    assert got["cue_accuracy"] == 1.0 and got["stereotype"]["share"] == pytest.approx(2 / 3)
    assert got["stereotype"]["accuracy_off_stereotype"] == 1.0 and got["stereotype"]["n_off_stereotype"] == 1
    assert "stereotype" not in cue_grounding(read, evs, refs, ("neutral", "angry"))
