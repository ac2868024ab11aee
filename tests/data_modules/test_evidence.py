"""Acoustic evidence: usual voices, directions, cue choice and templates that read back."""

from __future__ import annotations

import itertools

import pytest

from data_modules import evidence as E
from data_modules.records import EMOTIONS
from explainable_ser.evaluation.grounding import check_rationale, emotion_words, parse_cues


def measured(f0=150.0, rng=6.0, lufs=-20.0, rate=4.0):
    return {"f0_median_hz": f0, "f0_range_semitones": rng, "loudness_lufs": lufs, "speaking_rate": rate}


def test_references_fall_back_from_neutral_speech_to_the_speaker_to_the_corpus():
    rows = [("a", "neutral", measured(f0=100.0))] * 5 + [("a", "angry", measured(f0=200.0))] * 5
    rows += [("b", "happy", measured(f0=300.0))] * 5  # no neutral speech of b
    rows += [("c", "neutral", measured(f0=400.0))] * 2  # too few clips of c
    refs = E.build_references(rows, min_clips=5)
    assert E.usual(refs, "a", "f0_median_hz") == (100.0, "speaker neutral")
    assert E.usual(refs, "b", "f0_median_hz") == (300.0, "speaker all")
    assert E.usual(refs, "c", "f0_median_hz") == (100.0, "corpus neutral")  # 5 of a's + 2 of c's
    assert E.usual(refs, None, "speaking_rate") == (4.0, "corpus neutral")
    assert E.usual(E.build_references([("x", "sad", measured())] * 3), "x", "f0_median_hz") is None


def test_directions_follow_the_dead_zones():
    refs = E.build_references([("a", "neutral", measured())] * 5)
    ev = E.clip_evidence(measured(f0=150.0 * 2 ** (3.1 / 12), rng=4.1, lufs=-18.1, rate=4.5), "a", refs)
    assert {k: v["direction"] for k, v in ev.items()} == {
        "pitch": "high",
        "range": "normal",  # -1.9 semitones: inside the 2-semitone dead zone
        "volume": "normal",  # +1.9 dB
        "speed": "normal",  # +12.5 %
    }
    assert ev["pitch"]["deviation"] == pytest.approx(3.1, abs=0.01)
    assert ev["volume"] == {
        "direction": "normal",
        "value": -18.1,
        "unit": "LUFS",
        "reference": -20.0,
        "deviation": 1.9,
        "delta_unit": "dB",
        "basis": "speaker neutral",
    }
    ev = E.clip_evidence(measured(f0=150.0 * 2 ** (-3.1 / 12), rng=3.9, lufs=-22.1, rate=3.3), "a", refs)
    assert {k: v["direction"] for k, v in ev.items()} == {
        "pitch": "low",
        "range": "narrow",
        "volume": "low",
        "speed": "slow",
    }
    unvoiced = {**measured(), "f0_median_hz": None, "f0_range_semitones": None}
    assert set(E.clip_evidence(unvoiced, "a", refs)) == {"volume", "speed"}


def test_cues_supporting_the_label_come_first_and_others_are_marked():
    refs = E.build_references([("a", "neutral", measured())] * 5)
    angry = E.clip_evidence(measured(f0=200.0, rng=9.0, lufs=-14.0, rate=3.0), "a", refs)
    profiles = {
        "angry": {"pitch": {"direction": "high"}, "volume": {"direction": "high"}, "speed": {"direction": "fast"}}
    }
    cues = E.choose_cues("angry", angry, profiles, max_cues=3, min_cues=2)
    assert [(c["cue"], c["direction"], c["supports"]) for c in cues] == [
        ("volume", "high", True),  # +6 dB = 3 dead zones, stronger than pitch's 5 semitones = 1.66
        ("pitch", "high", True),
    ]
    one = E.choose_cues("angry", angry, {"angry": {"volume": {"direction": "high"}}}, min_cues=2)
    assert [(c["cue"], c["supports"]) for c in one] == [("volume", True), ("speed", False)]  # -25 %: 1.67 zones
    text = E.render_rationale("angry", one, E.rng_for("u1"))
    assert text.endswith(", though with " + text.split(", though with ")[1])
    assert "slow" in text.split("though")[1]


def test_profiles_are_the_direction_most_clips_of_an_emotion_show():
    ev_high = {"pitch": {"direction": "high"}}
    ev_norm = {"pitch": {"direction": "normal"}}
    got = E.build_profiles([("happy", ev_high), ("happy", ev_high), ("happy", ev_norm), (None, ev_norm)])
    assert got == {"happy": {"pitch": {"direction": "high", "share": 0.667}}}


@pytest.mark.parametrize("template", range(len(E.TEMPLATES)))
def test_every_phrase_in_every_template_reads_back_as_stated(template, monkeypatch):
    """Each (cue, direction) phrase, with its number, in each template, is read back by the
    grounding parser as that cue and direction, and checks right against its own evidence."""
    monkeypatch.setattr(E, "TEMPLATES", (E.TEMPLATES[template],))
    values = {
        "pitch": (240.0, 7.0),
        "range": (11.0, 4.0),
        "volume": (-14.0, 6.0),
        "speed": (5.8, 30.0),
    }
    every = [(key, phrase) for key, phrases in E.PHRASES.items() for phrase in phrases]
    for ((cue, direction), phrase), numbers in itertools.product(every, (True, False)):
        monkeypatch.setitem(E.PHRASES, (cue, direction), (phrase,))
        sign = {"low": -1, "narrow": -1, "slow": -1, "normal": 0}.get(direction, 1)
        value, dev = values[cue]
        ev = {
            cue: {
                "direction": direction,
                "value": value,
                "unit": E.CUES[cue].unit,
                "reference": value,
                "deviation": sign * dev,
                "delta_unit": E.CUES[cue].delta_unit,
            }
        }
        cues = [{"cue": cue, **ev[cue], "supports": True}]
        text = E.render_rationale("sad", cues, E.rng_for(phrase), numbers=numbers)
        got = check_rationale(text, ev)
        assert [(c["cue"], c["direction"], c["verdict"]) for c in got] == [(cue, direction, "right")], text
        assert (got[0]["value"] is not None) is numbers, text
        assert emotion_words(text, ("neutral", "happy", "sad", "angry")) == {"sad"}, text


def test_a_rationale_with_no_supporting_cue_says_so():
    cues = [{"cue": "volume", "direction": "low", "value": -25.0, "deviation": -5.0, "supports": False}]
    text = E.render_rationale("angry", cues, E.rng_for("x"))
    assert text == "Labelled angry, though the voice shows " + text.split("shows ")[1]
    assert [(c["cue"], c["direction"]) for c in parse_cues(text)] == [("volume", "low")]


def test_only_clear_cues_are_stated_when_asked():
    refs = E.build_references([("a", "neutral", measured())] * 5)
    # volume +6 dB (3 dead zones), pitch +5 semitones (1.66), speed -25 % (1.67), range +0.5 (0.25)
    ev = E.clip_evidence(measured(f0=200.0, rng=6.5, lufs=-14.0, rate=3.0), "a", refs)
    profiles = {"angry": {c: {"direction": d} for c, d in (("pitch", "high"), ("volume", "high"), ("range", "wide"))}}
    every = E.choose_cues("angry", ev, profiles, max_cues=3, min_cues=2)
    assert [c["cue"] for c in every] == ["volume", "pitch"]
    clear = E.choose_cues("angry", ev, profiles, max_cues=3, min_cues=2, min_strength=2.0)
    # pitch (1.66 zones) is borderline at 2; range, 0.25 zones from usual, is clearly normal
    assert [(c["cue"], c["supports"]) for c in clear] == [("volume", True), ("range", False)]


def test_a_rationale_without_numbers_states_the_same_cues():
    cues = [
        {"cue": "volume", "direction": "high", "value": -14.0, "deviation": 6.0, "supports": True},
        {"cue": "speed", "direction": "slow", "value": 3.0, "deviation": -25.0, "supports": False},
    ]
    with_numbers = E.render_rationale("angry", cues, E.rng_for("x"))
    without = E.render_rationale("angry", cues, E.rng_for("x"), numbers=False)
    assert not any(ch.isdigit() for ch in without) and any(ch.isdigit() for ch in with_numbers)
    assert [(c["cue"], c["direction"], c["value"]) for c in parse_cues(without)] == [
        ("volume", "high", None),
        ("speed", "slow", None),
    ]


def test_a_clip_with_only_borderline_cues_still_states_its_clearest():
    refs = E.build_references([("a", "neutral", measured())] * 5)
    # pitch +5 semitones (1.66 dead zones), volume +3 dB (1.5), range +1.5 (0.75), speed -20 % (1.33)
    ev = E.clip_evidence(measured(f0=200.0, rng=7.5, lufs=-17.0, rate=3.2), "a", refs)
    profiles = {"angry": {"pitch": {"direction": "high"}, "volume": {"direction": "high"}}}
    assert E.choose_cues("angry", ev, profiles, min_strength=2.0) == E.choose_cues("angry", ev, profiles)


def test_describe_first_states_the_clips_clearest_cues_before_the_emotion():
    refs = E.build_references([("a", "neutral", measured())] * 5)
    # volume -6 dB (3 dead zones), speed +50 % (3.3), pitch +5 semitones (1.66), range +0.5 (0.25)
    ev = E.clip_evidence(measured(f0=200.0, rng=6.5, lufs=-26.0, rate=6.0), "a", refs)
    profiles = {"angry": {"pitch": {"direction": "high"}, "volume": {"direction": "high"}}}
    by_profile = E.choose_cues("angry", ev, profiles, max_cues=3, min_cues=2, min_strength=1.5)
    assert [c["cue"] for c in by_profile][0] == "pitch"  # the label's usual cue leads
    by_clip = E.choose_cues("angry", ev, profiles, max_cues=3, min_cues=2, min_strength=1.5, by="strength")
    # deviations strongest first, then the clearly normal range; the quiet voice is stated
    # although angry clips are usually loud, and marked as not supporting the label
    assert [(c["cue"], c["direction"], c["supports"]) for c in by_clip] == [
        ("speed", "fast", False),
        ("volume", "low", False),
        ("pitch", "high", True),
    ]
    assert E.choose_cues("sad", ev, profiles, min_strength=1.5, by="strength") == [
        {**c, "supports": False} for c in by_clip
    ]  # the same cues whatever the label
    text = E.render_rationale("angry", by_clip, E.rng_for("x"), numbers=False, describe_first=True)
    assert text.index("angry") > max(text.index(w) for w in ("pace", "pitch")) and "though" not in text
    assert [(c["cue"], c["direction"]) for c in parse_cues(text)] == [(c["cue"], c["direction"]) for c in by_clip]
    assert all(c["verdict"] == "right" for c in check_rationale(text, ev))
    assert emotion_words(text, EMOTIONS) == {"angry"}
    with pytest.raises(ValueError, match="by must be"):
        E.choose_cues("angry", ev, profiles, by="label")


def test_a_rationale_opening_states_its_cues_in_order_and_stops_before_the_emotion():
    """Every phrase of every cue and direction, in every describe-first template, reads back as
    stated; the opening names no emotion and is where the template's emotion would follow."""
    every = [{"cue": cue, "direction": d} for cue, d in E.PHRASES]
    for i in range(40):  # the utterance's draw picks the template and the phrases
        cues = [every[(i + k * 5) % len(every)] for k in range(3)]
        if len({c["cue"] for c in cues}) < 3:
            continue
        text = E.rationale_opening(cues, E.rng_for(f"u{i}"))
        assert [(c["cue"], c["direction"]) for c in parse_cues(text)] == [(c["cue"], c["direction"]) for c in cues]
        assert not emotion_words(text, EMOTIONS), text
        # a describe-first template's words between its cues and its emotion end the opening
        tails = [t[t.lower().index("{cues}") + len("{cues}") : t.index("{emotion}")].rstrip() for t in E.CUES_FIRST]
        assert any(text.endswith(tail) for tail in tails), text
        finished = text + " sad."  # the model's word after it reads as the rationale's emotion
        assert emotion_words(finished, EMOTIONS) == {"sad"}, finished
    with pytest.raises(ValueError, match="no cues"):
        E.rationale_opening([], E.rng_for("x"))
