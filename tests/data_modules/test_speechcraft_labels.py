"""SpeechCraft's label files: the label string parses, and the real released samples read into
descriptors in SynthCraft's vocabulary."""

from __future__ import annotations

from data_modules.corpora import speechcraft_labels as sc
from data_modules.corpora.common import PrepareReport

from conftest import (
    SPEECHCRAFT_FORK_LABELS,
    SPEECHCRAFT_LJ_LABELS,
    needs_speechcraft_samples,
)


def test_parse_labels_string():
    parsed = sc.parse_labels(
        "age:Elderly\tgender:male\tEnergy:high\tspeed:fast\temotion:sad\ttranscription: Tabs\tstay, colons: too"
    )
    assert parsed == {
        "age": "Elderly",
        "gender": "male",
        "volume": "high",
        "speed": "fast",
        "emotion": "sad",
        "transcription": "Tabs\tstay, colons: too",
    }


@needs_speechcraft_samples
def test_real_label_samples_parse():
    report = PrepareReport("speechcraft")
    records = sc.load_labels([SPEECHCRAFT_LJ_LABELS, SPEECHCRAFT_FORK_LABELS], report)
    assert len(records) == 18 and not report.skipped
    lj = sc.describe(records["LJSpeech_LJ010-0227"])
    assert lj.transcript == ("He went from Newgate first to Bethlehem, from which he was removed to Broadmoor.")
    assert lj.emotion == "sad" and lj.caption is None
    assert lj.attributes == {"gender": "male", "age": "elderly", "pitch": "low", "volume": "normal", "speed": "fast"}
    fork = [sc.describe(r) for k, r in records.items() if k.startswith("audio_segments")]
    assert len(fork) == 6
    assert [d.emotion for d in fork] == [None, "fearful", None, None, "angry", "angry"]
    assert fork[0].caption == "The speaker speaks in normal pitch, high volume and fast speed."
    for desc in (sc.describe(r) for r in records.values()):
        assert desc.attributes["pitch"] in ("low", "normal", "high")
        assert desc.attributes["volume"] in ("low", "normal", "high")
        assert desc.attributes["speed"] in ("slow", "normal", "fast")
        assert desc.transcript and not desc.dropped
