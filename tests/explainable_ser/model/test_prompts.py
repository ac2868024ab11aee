"""Target format, the one parser, and caption attribute read-back."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from explainable_ser.model.prompts import (
    TASKS,
    caption_attributes,
    get_task,
    parse_output,
    render_target,
)

LABELS = ("neutral", "happy", "sad", "angry")
REC = {
    "transcript": "the dog found a red ball",
    "emotion": "sad",
    "caption": 'A male speaker with low pitch and high volume speaks at a slow pace, emphasizing the word "ball".',
    "rationale": "His low, slow voice and the stress on the ball sound sad.",
}


def test_every_task_round_trips_through_the_parser():
    for task in TASKS.values():
        parsed = parse_output(render_target(task, REC), LABELS)
        for field in task.fields:
            assert parsed[field] == REC[field], (task.name, field)


def test_round_trip_survives_word_level_decoding():
    # The offline tokenizer lowercases and splits punctuation off words.
    decoded = (
        "description : a male speaker with low pitch and high volume speaks at a slow pace , "
        'emphasizing the word " ball " . emotion : sad'
    )
    parsed = parse_output(decoded, LABELS)
    assert parsed["emotion"] == "sad" and parsed["parsed"]
    assert caption_attributes(parsed["caption"]) == {
        "pitch": "low",
        "volume": "high",
        "speed": "slow",
        "gender": "male",
        "emphasis": "ball",
    }


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
@given(st.one_of(st.none(), st.text(), st.text(alphabet='EmotionDescriptTanscrRal: \n"|happysad', max_size=80)))
def test_parser_never_raises(text):
    out = parse_output(text, LABELS)
    assert set(out) == {"transcript", "caption", "emotion", "rationale", "parsed"}
    assert out["emotion"] in (None, *LABELS)
    caption_attributes(out["caption"])


def test_caption_attributes_reads_back_every_synthcraft_template_and_value():
    import itertools

    from data_modules.captions import CAPTION_TEMPLATES, render_caption

    for template, gender, pitch, volume, speed in itertools.product(
        range(len(CAPTION_TEMPLATES)),
        ("male", "female"),
        ("low", "normal", "high"),
        ("low", "normal", "high"),
        ("slow", "normal", "fast"),
    ):
        attrs = {"gender": gender, "pitch": pitch, "volume": volume, "speed": speed, "emphasis": "ball"}
        caption = render_caption(attrs, template=template)
        assert caption_attributes(caption) == attrs, caption


@pytest.mark.packaged
def test_chatml_pieces_of_smollm2_splice_at_the_slots_and_end_with_im_end():
    """SmolLM2's own ChatML template: the three pieces are the rendered prompt with the two
    slots cut out, each tokenised alone; the target ends with <|im_end|>, its end of turn."""
    from explainable_ser.model.prompts import (
        CONTENT_SLOT,
        DESCRIPTOR_SLOT,
        PromptBuilder,
        get_task,
    )
    from explainable_ser.model.tokenizer import load_tokenizer

    tok = load_tokenizer("pkg:smollm2-135m-instruct")
    builder = PromptBuilder(tok, "You are a helpful language and speech assistant.")
    for name in ("asr", "ser_sed"):
        task = get_task(name)
        head, mid, tail = builder.pieces(task)
        text = tok.apply_chat_template(
            [
                {"role": "system", "content": builder.system_prompt},
                {"role": "user", "content": f"{CONTENT_SLOT}{DESCRIPTOR_SLOT}{task.instruction}"},
            ],
            tokenize=False,
            add_generation_prompt=True,
        )
        assert tok.decode(head) == text.split(CONTENT_SLOT)[0]
        assert tok.decode(head).endswith("<|im_start|>user\n")
        assert mid == []  # the two slots are adjacent in the user turn
        assert tok.decode(tail) == task.instruction + "<|im_end|>\n<|im_start|>assistant\n"
        assert tok.decode(head + mid + tail) == text.replace(CONTENT_SLOT, "").replace(DESCRIPTOR_SLOT, "")
    target = builder.target_ids("Emotion: sad")
    assert target[-1] == tok.convert_tokens_to_ids("<|im_end|>") == builder.eot_id
    assert tok.decode(target[:-1]) == "Emotion: sad"


@pytest.mark.parametrize("name", ["asr_ser_rat", "rat_ser", "sed_ser_rat"])
def test_rationale_orders_parse_back_whatever_comes_first(name):
    task = get_task(name)
    text = render_target(task, REC)
    assert (
        text.index("Rationale:") > text.index("Emotion:")
        if name != "rat_ser"
        else text.index("Rationale:") < text.index("Emotion:")
    )
    parsed = parse_output(text, LABELS)
    assert parsed["rationale"] == REC["rationale"] and parsed["emotion"] == "sad" and parsed["parsed"]
    # word-level decoding of the reasoning-first answer still reads back
    decoded = "rationale : his low , slow voice sounds sad . emotion : sad"
    assert parse_output(decoded, LABELS)["rationale"] == "his low , slow voice sounds sad ."
    assert render_target(task, {**REC, "rationale": None}) is None


def test_value_spans_cover_each_attribute_value_and_the_emotion_label():
    from explainable_ser.model.prompts import value_spans

    target = render_target(get_task("ser_sed"), REC)
    assert [target[a:b] for a, b in value_spans(target)] == ["low", "high", "slow", "male", "sad"]
    asr = render_target(get_task("asr"), REC)
    assert value_spans(asr) == []  # a transcript states no value


@pytest.mark.parametrize("which", ["word", "smollm2"])
def test_value_mask_marks_exactly_the_value_tokens(which):
    """The masked tokens decode to the values and nothing else, with the words around them
    (" low" as one BPE token in SmolLM2's vocabulary), and the mask lines up with target_ids."""
    from explainable_ser.model.prompts import PromptBuilder

    if which == "word":
        from explainable_ser.offline.tokenizer import build_word_tokenizer

        tok = build_word_tokenizer([REC["caption"], REC["transcript"], " ".join(LABELS)])
    else:
        from explainable_ser.model.tokenizer import load_tokenizer

        tok = load_tokenizer("pkg:smollm2-135m-instruct")
    builder = PromptBuilder(tok)
    target = render_target(get_task("ser_sed"), REC)
    ids, mask = builder.target_ids(target), builder.value_mask(target)
    assert len(mask) == len(ids) and mask[-1] is False
    picked = [tok.decode([t]).strip() for t, m in zip(ids, mask) if m]
    assert picked == ["male", "low", "high", "slow", "sad"]  # in the order of the text
    assert not any(builder.value_mask(render_target(get_task("asr"), REC)))
