"""``data_modules.rationales --source evidence`` end to end: speaker corpora (IEMOCAP-like,
MELD-like), a clip made loud and high read back as such, resume, references, paraphrase."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from lhotse import CutSet

from data_modules import evidence as E
from data_modules import evidence_rationales
from data_modules.evidence_rationales import paraphrase_ok
from data_modules.rationales import main
from data_modules.records import make_cut, record_of
from explainable_ser.evaluation.grounding import parse_cues

from conftest import save_tiny_instruct

SR = 16000


def voice(f0: float, semitones: float, seconds: float, amp: float) -> np.ndarray:
    """A harmonic glide from ``f0`` up ``semitones`` (a pitch range), peak ``amp``."""
    t = np.arange(int(seconds * SR)) / SR
    freq = f0 * 2 ** (semitones * t / seconds / 12)
    phase = 2 * np.pi * np.cumsum(freq) / SR
    x = sum(np.sin(k * phase) / k for k in range(1, 8))
    x *= np.minimum(1.0, np.minimum(t, seconds - t) / 0.02)  # no clicks at the ends
    return (amp * x / np.max(np.abs(x))).astype(np.float32)


def corpus(tmp_path, name: str, clips: list[tuple]) -> str:
    """A manifest of ``(id, speaker, emotion, f0, semitones, seconds, amp)`` clips, each saying
    the same six syllables (so a shorter clip is a faster one)."""
    cuts = []
    for utt, speaker, emotion, f0, semis, seconds, amp in clips:
        path = tmp_path / f"{utt}.wav"
        x = voice(f0, semis, seconds, amp)
        sf.write(path, x, SR)
        cuts.append(
            make_cut(
                utt,
                path,
                sampling_rate=SR,
                num_samples=len(x),
                corpus=name,
                split="train",
                transcript="a better day today",
                emotion=emotion,
                speaker=speaker,
            )
        )
    out = tmp_path / f"{name}_cuts_train.jsonl.gz"
    CutSet.from_cuts(cuts).to_file(out)
    return str(out)


def run(manifest, out, *extra):
    return main(
        ["--manifest", manifest, "--out", str(out), "--source", "evidence", "--workers", "1", "--no-progress", *extra]
    )


@pytest.fixture(scope="module")
def iemocap_like(tmp_path_factory):
    """Two speakers with neutral speech (Ses01F, Ses01M), an angry clip of each: louder, higher,
    wider and faster than that speaker's neutral voice; one unlabelled clip."""
    tmp = tmp_path_factory.mktemp("iemocap_like")
    clips = []
    for spk, f0 in (("Ses01F", 220.0), ("Ses01M", 110.0)):
        clips += [(f"{spk}_neu{i}", spk, "neutral", f0 * (1 + 0.01 * i), 3.0, 1.6, 0.1) for i in range(5)]
        clips.append((f"{spk}_ang", spk, "angry", f0 * 1.5, 10.0, 1.1, 0.5))
    clips.append(("Ses01F_xxx", "Ses01F", None, 220.0, 3.0, 1.6, 0.1))
    path = corpus(tmp, "iemocap", clips)
    out = tmp / "out" / "iemocap_cuts_train.jsonl.gz"
    assert run(path, out) == 0
    return path, out


def test_a_loud_high_fast_clip_is_explained_by_its_numbers(iemocap_like):
    _, out = iemocap_like
    recs = {r["id"]: r for r in map(record_of, CutSet.from_file(out))}
    ang = recs["Ses01M_ang"]
    cues = {c["cue"]: c for c in ang["rationale_cues"]}
    assert len(cues) == 3 and all(c["supports"] for c in cues.values())
    ev = ang["attributes"]["evidence"]
    assert {k: v["direction"] for k, v in ev.items()} == {
        "pitch": "high",
        "range": "wide",
        "volume": "high",
        "speed": "fast",
    }
    assert ev["pitch"]["basis"] == "speaker neutral"
    median_f0_ratio = 12 * np.log2(1.5 / 1.02) + (10 - 3) / 2  # the glides' median F0s, in semitones
    assert ev["pitch"]["deviation"] == pytest.approx(median_f0_ratio, abs=0.5)
    assert ev["volume"]["deviation"] == pytest.approx(20 * np.log10(5), abs=1.5)  # 5x the amplitude
    for c in cues.values():  # every stated number is in the text
        assert c["direction"] == ev[c["cue"]]["direction"]
    assert "angry" in ang["rationale"] and ang["rationale_source"] == "evidence-v1"
    assert "Hz" in ang["rationale"] or "semitones" in ang["rationale"] or "dB" in ang["rationale"]
    assert recs["Ses01F_xxx"]["rationale"] is None and recs["Ses01F_xxx"]["attributes"]["evidence"]

    report = json.loads((out.parent / (out.name + ".report.json")).read_text())
    assert report["n_records"] == 13 and report["n_with_rationale"] == 12
    assert report["failures"] == {"no_emotion": 1} and report["contradictions"] == 0
    assert report["cues_per_rationale"] >= 2
    texts = [r["rationale"] for r in recs.values() if r["rationale"]]
    assert report["distinct_rate"] == len(set(texts)) / 12
    refs = json.loads((out.parent / (out.name + ".references.json")).read_text())
    assert set(refs["speakers"]) == {"Ses01F", "Ses01M"} and refs["profiles"]["angry"]["volume"]["direction"] == "high"


def test_a_rerun_resumes_without_measuring_again(iemocap_like, tmp_path, monkeypatch):
    path, out = iemocap_like

    def no_measuring(*a, **k):
        raise AssertionError("measured again")

    monkeypatch.setattr("data_modules.annotate.measure.measure_cuts", no_measuring)
    before = [record_of(c)["rationale"] for c in CutSet.from_file(out)]
    assert run(path, out) == 0
    assert [record_of(c)["rationale"] for c in CutSet.from_file(out)] == before


def test_a_meld_like_corpus_judges_rare_speakers_against_the_corpus(tmp_path, iemocap_like):
    """MELD's speakers mostly say a few lines: theirs is compared with the corpus's usual
    voice, and dev/test use the training split's references."""
    clips = [(f"dia{i}_utt0", f"Extra{i}", "neutral", 150.0 * (1 + 0.02 * i), 3.0, 1.6, 0.1) for i in range(6)]
    clips.append(("dia9_utt0", "Joey", "sad", 100.0, 0.5, 2.6, 0.03))
    path = corpus(tmp_path, "meld", clips)
    out = tmp_path / "out" / "meld_cuts_train.jsonl.gz"
    assert run(path, out) == 0
    sad = {r["id"]: r for r in map(record_of, CutSet.from_file(out))}["dia9_utt0"]
    ev = sad["attributes"]["evidence"]
    assert ev["pitch"]["basis"] == "corpus neutral"
    assert {k: v["direction"] for k, v in ev.items()} == {
        "pitch": "low",
        "range": "narrow",  # a 0.5-semitone glide against 3
        "volume": "low",
        "speed": "slow",
    }
    assert {c["cue"] for c in sad["rationale_cues"]} >= {"pitch", "volume"}

    refs = out.parent / (out.name + ".references.json")
    test_out = tmp_path / "test_out" / "meld_cuts_test.jsonl.gz"
    assert run(path, test_out, "--references", str(refs)) == 0
    assert json.loads((test_out.parent / (test_out.name + ".references.json")).read_text()) == json.loads(
        refs.read_text()
    )
    assert run(path, test_out, "--references", str(tmp_path / "missing.json")) == 2


def test_a_paraphrase_is_kept_only_when_every_cue_survives():
    cues = [
        {"cue": "volume", "direction": "high", "value": -14.0, "deviation": 6.0},
        {"cue": "speed", "direction": "fast", "value": 5.8, "deviation": 40.0},
    ]
    ev = {
        "volume": {"direction": "high", "value": -14.0, "deviation": 6.0, "reference": -20.0},
        "speed": {"direction": "fast", "value": 5.8, "deviation": 40.0, "reference": 4.1},
    }
    assert (
        paraphrase_ok("Angry, judging by a loud voice (+6 dB) and a hurried pace (5.8 syllables/s).", cues, "angry", ev)
        is None
    )
    assert paraphrase_ok("Angry, judging by a loud voice (+6 dB).", cues, "angry", ev) == "cues_changed"
    assert paraphrase_ok("Angry: a loud voice (+1 dB) and a fast pace (5.8 syllables/s).", cues, "angry", ev) == (
        "cue_contradicted"
    )
    assert paraphrase_ok("Happy: a loud voice (+6 dB) and a fast pace (5.8 syllables/s).", cues, "angry", ev) == (
        "emotion_changed"
    )
    assert paraphrase_ok("Angry: a loud voice (+6 dB) and a fast pace.", cues, "angry", ev) == "number_dropped"


def test_paraphrases_that_lose_cues_leave_the_template(iemocap_like, tmp_path):
    """A (random, tiny) instruct model's rewrites lose the cues: every template stands, and
    the report counts why."""
    path, _ = iemocap_like
    model = save_tiny_instruct(tmp_path / "lm", "a loud voice pace the speaker sounds angry", max_positions=512)
    out = tmp_path / "p" / "iemocap_cuts_train.jsonl.gz"
    assert run(path, out, "--paraphrase", str(model), "--max-new-tokens", "8", "--batch-size", "4") == 0
    report = json.loads((out.parent / (out.name + ".report.json")).read_text())
    para = report["paraphrase"]
    assert para["kept"] + para["template_kept"] == 12 and sum(para["rejected"].values()) == para["template_kept"]
    rows = [record_of(c) for c in CutSet.from_file(out)]
    kept = [r for r in rows if r["rationale_source"] and "paraphrase" in r["rationale_source"]]
    assert len(kept) == para["kept"]
    assert len((out.parent / (out.name + ".paraphrase.jsonl")).read_text().splitlines()) == 12
    assert evidence_rationales.PARAPHRASE_PROMPT[1].count("{rationale}") == 1


def test_rationales_without_numbers_keep_the_numbers_in_their_cues(iemocap_like, tmp_path):
    path, _ = iemocap_like
    out = tmp_path / "plain.jsonl.gz"
    assert run(path, out, "--no-numbers", "--min-strength", "1.5") == 0
    recs = [r for r in map(record_of, CutSet.from_file(out)) if r["rationale"]]
    assert len(recs) == 12
    for r in recs:
        assert not any(ch.isdigit() for ch in r["rationale"]), r["rationale"]
        assert all(isinstance(c["value"], float) for c in r["rationale_cues"])
    report = json.loads((tmp_path / "plain.jsonl.gz.report.json").read_text())
    assert report["numbers"] is False and report["min_strength"] == 1.5 and report["contradictions"] == 0


def test_every_measured_cue_can_be_stated(iemocap_like, tmp_path):
    path, _ = iemocap_like
    out = tmp_path / "all.jsonl.gz"
    assert run(path, out, "--max-cues", "4", "--min-cues", "4") == 0
    recs = [r for r in map(record_of, CutSet.from_file(out)) if r["rationale"]]
    for r in recs:  # supporting cues first, the rest said as such
        assert sorted(c["cue"] for c in r["rationale_cues"]) == ["pitch", "range", "speed", "volume"]
        supports = [c["supports"] for c in r["rationale_cues"]]
        assert supports == sorted(supports, reverse=True)
    report = json.loads((tmp_path / "all.jsonl.gz.report.json").read_text())
    assert report["cues_per_rationale"] == 4 and report["contradictions"] == 0


def test_describe_first_states_each_clips_own_cues_before_its_emotion(iemocap_like, tmp_path):
    path, _ = iemocap_like
    out = tmp_path / "describe.jsonl.gz"
    assert run(path, out, "--no-numbers", "--min-strength", "1.5", "--describe-first") == 0
    recs = [r for r in map(record_of, CutSet.from_file(out)) if r["rationale"]]
    assert len(recs) == 12
    for r in recs:
        ev = r["attributes"]["evidence"]
        assert [c["cue"] for c in r["rationale_cues"]] == [
            c["cue"] for c in E.choose_cues("sad", ev, {}, min_strength=1.5, by="strength")
        ]  # the label plays no part in the choice
        assert "though" not in r["rationale"] and not r["rationale"].startswith("Labelled")
        before = r["rationale"][: r["rationale"].index(r["emotion"])]
        assert [c["cue"] for c in parse_cues(before)] == [c["cue"] for c in r["rationale_cues"]]  # cues first
    report = json.loads((tmp_path / "describe.jsonl.gz.report.json").read_text())
    assert report["describe_first"] is True and report["contradictions"] == 0
