"""The Explainer on recordings longer than the model takes whole: cut at pauses, each piece
explained as if it were a clip of its own, and a summary over the pieces."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch


@pytest.fixture(scope="module")
def ser(exported):
    from explainable_ser.serving.inference import Explainer

    return Explainer.from_export(exported, overrides=["data.max_clip_seconds=3"])  # short pieces, fast


def long_recording(clip, pauses=(0.8, 1.0, 0.7)):
    audio, sr = sf.read(str(clip), dtype="float32")
    parts = []
    for p in pauses:
        parts += [np.zeros(int(p * sr), dtype=np.float32), audio]
    return torch.from_numpy(np.concatenate(parts + [np.zeros(sr // 2, dtype=np.float32)])), audio.size / sr


def test_a_recording_longer_than_the_limit_is_explained_piece_by_piece(ser, trained_run):
    _, clip = trained_run
    wave, clip_seconds = long_recording(clip)
    assert wave.numel() / 16000 > ser.max_seconds
    out = ser.explain(wave)  # longer than max_seconds: explain_recording
    assert out["n_pieces"] == 3 and len(out["pieces"]) == 3 and out["skipped_short"] == 0
    starts = [0.8, 0.8 + clip_seconds + 1.0, 0.8 + 2 * clip_seconds + 1.7]
    for piece, start in zip(out["pieces"], starts):
        assert abs(piece["start"] - start) <= 0.15 and abs(piece["end"] - (start + clip_seconds)) <= 0.15
        alone = ser.explain_batch([wave[round(piece["start"] * 16000) : round(piece["end"] * 16000)]])[0]
        assert {k: v for k, v in piece.items() if k not in ("piece", "start", "end")} == alone
    assert [t[2] for t in out["timeline"]] == [p["emotion"] for p in out["pieces"]]
    assert sum(out["emotion_share"].values()) == pytest.approx(1.0, abs=1e-3)
    weights = np.array([p["end"] - p["start"] for p in out["pieces"]])
    for lab, v in out["emotion_scores"].items():
        want = float(np.dot(weights / weights.sum(), [p["emotion_scores"][lab] for p in out["pieces"]]))
        assert v == pytest.approx(want, abs=1e-4)
    assert out["emotion"] == max(out["emotion_scores"], key=out["emotion_scores"].get)


def test_a_recording_without_speech_says_so(ser):
    from explainable_ser.serving.inference import AudioError

    quiet = torch.zeros(16000 * 5)
    quiet[100] = 1e-3  # not all zeros, so not refused as silent, but no run of sound
    with pytest.raises(AudioError, match=r"no speech found.*data.min_clip_seconds"):
        ser.explain_recording(quiet)


def test_an_evidence_model_checks_each_stated_cue_against_the_clip(ser, trained_run, monkeypatch):
    """With the usual voices of evidence rationales at hand, each explained clip's stated cues
    come back beside its measurement; the explanation task is the one the model was evaluated on."""
    from data_modules.evidence import build_references
    from explainable_ser.serving.inference import Explainer
    from explainable_ser.serving.page import CUE_COLUMNS, cues_table

    from conftest import harmonic

    usual = {"f0_median_hz": 150.0, "f0_range_semitones": 2.0, "loudness_lufs": -40.0, "speaking_rate": 4.0}
    refs = build_references([("spk", "neutral", usual)] * 5)
    wave = torch.from_numpy(harmonic(300.0, 1.5, amp=0.5))
    cues = Explainer.checked_cues(
        type("S", (), {"cfg": ser.cfg, "references": refs})(), wave, "a high pitch (300 Hz) and a quiet voice", "a b c"
    )
    assert [(c["cue"], c["verdict"]) for c in cues] == [("pitch", "right"), ("volume", "hallucinated")]
    assert cues[0]["measured"] == pytest.approx(300.0, rel=0.02) and cues[0]["reference"] == 150.0
    table = cues_table({"cues": cues})
    assert list(table.columns) == CUE_COLUMNS and table.iloc[0].tolist()[:2] == ["pitch", "high (300 Hz)"]
    led = cues_table({"cues": cues, "concept_cues": [{"cue": "volume", "direction": "low", "confidence": 0.934}]})
    assert led["stated"].tolist() == ["high (300 Hz)", "low (p = 0.93)"]  # the head's probability

    assert ser.explain_task.name == "ser_sed" and ser.references is None  # the paper's model: no cues
    monkeypatch.setattr(ser.cfg.eval, "tasks", ["asr", "rat_ser"])
    assert ser.explain_task.name == "rat_ser"
    monkeypatch.setitem(ser.__dict__, "references", refs)
    _, clip = trained_run
    row = ser.explain(clip)
    assert "rationale" in row and isinstance(row["cues"], list)
    assert set(row["raw"]) == {"asr", "rat_ser"}


def test_a_concept_led_explainer_opens_each_rationale_with_its_heads_cues(tiny_tokenizer, seeded):
    """``eval.concept_rationale`` reaches the Explainer: each clip's rationale opens with the
    cues its concept heads are sure of, and the row keeps them with their probabilities."""
    from data_modules.evidence import rationale_opening, rng_for
    from explainable_ser.model.build import build_model
    from explainable_ser.serving.inference import Explainer

    from conftest import TINY_CONCEPTS, tiny_config

    cfg = tiny_config(
        TINY_CONCEPTS,
        "eval.concept_rationale=0.0",
        "eval.tasks=[asr, rat_ser]",
        "eval.max_new_tokens=3",
    )
    ex = Explainer(build_model(cfg.model, tiny_tokenizer), cfg)
    assert ex.explain_task.name == "rat_ser"
    rows = ex.explain_batch([torch.randn(32000) * 0.1, torch.randn(20000) * 0.1])
    for i, row in enumerate(rows):
        assert len(row["concept_cues"]) == 2
        opening = "Rationale: " + rationale_opening(row["concept_cues"], rng_for(str(i)))
        seen = ex.model.tokenizer.decode(ex.model.prompts.text_ids(opening), skip_special_tokens=True)
        assert row["raw"]["rat_ser"].startswith(seen)
