"""The unified record: it survives serialisation, and emotion labels map to the canonical set."""

from __future__ import annotations

from lhotse import CutSet

from data_modules.records import canonical_emotion, field_labels, make_cut, record_of


def test_record_round_trip():
    cut = make_cut(
        "u1",
        "/x.flac",
        sampling_rate=16000,
        num_samples=32000,
        corpus="c",
        split="dev",
        transcript="hi",
        caption="cap",
        emotion="happy",
        attributes={"pitch": "low"},
        annotator_emotions=["happy", "sad"],
        speaker="s1",
        gender="female",
        session=2,
    )
    rec = record_of(CutSet.from_dicts([cut.to_dict()])[0])  # survives serialisation
    assert rec["transcript"] == "hi" and rec["caption"] == "cap" and rec["emotion"] == "happy"
    assert rec["attributes"] == {"pitch": "low"} and rec["annotator_emotions"] == ["happy", "sad"]
    assert rec["speaker"] == "s1" and rec["gender"] == "female" and rec["session"] == 2
    assert rec["duration"] == 2.0


def test_canonical_emotion_labels():
    assert canonical_emotion("exc") == "happy"  # IEMOCAP: excited merged into happy
    assert canonical_emotion(" Joy ") == "happy" and canonical_emotion("anger") == "angry"
    assert canonical_emotion("unknown") is None and canonical_emotion("fru") is None
    assert canonical_emotion(None) is None


def test_field_labels_index_each_records_value_among_the_heads():
    from explainable_ser.model.ser import IGNORE  # the index the model's losses ignore

    classes = {"evidence.volume": ["high", "normal", "low"], "gender": ["female", "male"]}
    records = [
        {"attributes": {"evidence": {"volume": {"direction": "low", "value": -30.0}}, "gender": "Male"}},
        {"attributes": {"evidence": {"volume": {"direction": "sideways"}}}},  # a value no head has
        {"emotion": "sad"},  # no such fields
    ]
    got = field_labels(classes, records)
    assert got["evidence.volume"] == [2, IGNORE, IGNORE]
    assert got["gender"] == [1, IGNORE, IGNORE]
