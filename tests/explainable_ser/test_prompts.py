"""Target format, the one parser, and caption attribute read-back."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from explainable_ser.prompts import (TASKS, caption_attributes, get_task, parse_output,
                                     render_target)

LABELS = ("neutral", "happy", "sad", "angry")
REC = {"transcript": "the dog found a red ball", "emotion": "sad",
       "caption": 'A male speaker with low pitch and high volume speaks at a slow pace, '
                  'emphasizing the word "ball".'}


def test_every_task_round_trips_through_the_parser():
    for task in TASKS.values():
        parsed = parse_output(render_target(task, REC), LABELS)
        for field in task.fields:
            assert parsed[field] == REC[field], (task.name, field)


def test_round_trip_survives_word_level_decoding():
    # The offline tokenizer lowercases and splits punctuation off words.
    decoded = ('description : a male speaker with low pitch and high volume speaks at a slow pace , '
               'emphasizing the word " ball " . emotion : sad')
    parsed = parse_output(decoded, LABELS)
    assert parsed["emotion"] == "sad" and parsed["parsed"]
    assert caption_attributes(parsed["caption"]) == {
        "pitch": "low", "volume": "high", "speed": "slow", "gender": "male", "emphasis": "ball"}


def test_missing_field_gives_no_target():
    assert render_target(get_task("ser_sed"), {"emotion": "sad", "caption": None}) is None
    assert render_target(get_task("asr"), {"transcript": "  "}) is None


def test_malformed_outputs_become_unparsed():
    for text in (None, "", "emotion:", "Emotion: bored", "Emotion: 42", "Description: x"):
        out = parse_output(text, LABELS)
        assert out["emotion"] is None and out["parsed"] is False
    assert parse_output("the dog sat")["transcript"] == "the dog sat"  # ASR without a prefix


def test_unknown_task_is_a_clear_error():
    try:
        get_task("translate")
    except ValueError as err:
        assert "translate" in str(err) and "asr" in str(err)
    else:
        raise AssertionError("expected ValueError")


@settings(max_examples=3000, deadline=None)
@given(st.one_of(st.none(), st.text(), st.text(alphabet="EmotionDescriptTanscr: \n\"|happysad", max_size=80)))
def test_parser_never_raises(text):
    out = parse_output(text, LABELS)
    assert set(out) == {"transcript", "caption", "emotion", "parsed"}
    assert out["emotion"] in (None, *LABELS)
    caption_attributes(out["caption"])


def test_caption_attributes_reads_back_every_synthcraft_template_and_value():
    import itertools

    from data_modules.synthcraft import CAPTION_TEMPLATES, render_caption

    for template, gender, pitch, volume, speed in itertools.product(
            range(len(CAPTION_TEMPLATES)), ("male", "female"), ("low", "normal", "high"),
            ("low", "normal", "high"), ("slow", "normal", "fast")):
        attrs = {"gender": gender, "pitch": pitch, "volume": volume, "speed": speed, "emphasis": "ball"}
        caption = render_caption(attrs, template=template)
        assert caption_attributes(caption) == attrs, caption
