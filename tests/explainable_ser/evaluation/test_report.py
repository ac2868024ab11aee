"""A run's metrics.json from prediction rows (explainable_ser.evaluation.report)."""

from __future__ import annotations

import pytest

from explainable_ser.evaluation import captions, report


def test_caption_language_auto_scores_mandarin_records_by_characters():
    from explainable_ser.evaluation.report import compute_metrics

    def row(i, lang):
        return {
            "id": str(i),
            "task": "sed",
            "language": lang,
            "caption_ref": "说话人语速很快，情绪激动",
            "caption": "说话人语速很快",
            "attributes_ref": {},
            "caption_attributes": {},
            "emotion_ref": None,
            "emotion": None,
            "transcript_ref": None,
        }

    zh = compute_metrics([row(i, "zh") for i in range(3)], ["neutral"], caption_metrics=("bleu4",))
    en = compute_metrics([row(i, None) for i in range(3)], ["neutral"], caption_metrics=("bleu4",))
    assert zh["caption_language"] == "zh" and en["caption_language"] == "en"
    # One PTB "word" per Mandarin caption gives no 4-gram; characters do.
    assert zh["bleu4"] > 0.3 and zh["bleu4"] != en["bleu4"]


def test_caption_language_warning_names_the_mismatch():
    assert captions.script_language("A male speaker, low pitch.") == "en"
    assert captions.script_language("声音小而弱，隐隐带有抽泣声") == "zh"
    assert captions.script_language("说话人 speaks 很快") == "zh"  # 5 ideographs outweigh 6 letters
    assert captions.script_language("... 42") is None
    english = ["A woman speaks fast.", "A man whispers.", None, ""]
    assert "2 of 2 hypotheses are English" in captions.caption_language_warning(english, "zh")
    assert captions.caption_language_warning(english, "en") is None
    assert captions.caption_language_warning(["一个男人说话", "A man speaks"], "zh") is None  # no majority
    rows = [
        {
            "id": str(i),
            "task": "sed",
            "caption_ref": "心中疑惑不解",
            "caption": c,
            "raw": c or "Description: ??",
            "attributes_ref": None,
            "caption_attributes": None,
            "language": "zh",
        }
        for i, c in enumerate(["A calm voice.", None, "A loud voice."])
    ]
    out = report.compute_metrics(rows, ["neutral"], caption_metrics=("bleu4",))
    assert out["caption_language"] == "zh" and len(out["warnings"]) == 1
    rows = [{**r, "caption": "声音小而弱", "raw": "Description: 声音小而弱"} for r in rows]
    assert report.compute_metrics(rows, ["neutral"], caption_metrics=("bleu4",))["warnings"] == []


def _emo_row(uid: str, ref: str, hyp: str | None) -> dict:
    return {"id": uid, "task": "ser_sed", "emotion_ref": ref, "emotion": hyp}


def test_counterfactual_separates_broken_from_changed_answers():
    labels = ["neutral", "happy", "sad", "angry"]
    refs = ["happy", "happy", "sad", "sad", "angry", "neutral"]
    normal = ["happy", "happy", "sad", "angry", "angry", None]
    zeroed = [None, "sad", "sad", None, "sad", "sad"]
    rows = [_emo_row(f"u{i}", r, h) for i, (r, h) in enumerate(zip(refs, normal))]
    cf = report.counterfactual(rows, [_emo_row(f"u{i}", r, z) for i, (r, z) in enumerate(zip(refs, zeroed))], labels)
    assert cf["n"] == 6 and cf["n_unparseable"] == 2 and cf["unparseable_rate"] == pytest.approx(2 / 6)
    # the normal decode parsed 5 (u0..u4); of those u0 and u3 broke
    assert cf["became_unparseable_rate"] == pytest.approx(2 / 5)
    # both parsed: u1 happy->sad, u2 sad->sad, u4 angry->sad: 2 of 3 changed
    assert cf["n_both_parsed"] == 3 and cf["changed_among_parsed_rate"] == pytest.approx(2 / 3)
    # normal answers of those three: happy, sad, angry (1/3 each); zeroed: sad (1): 1 - 1/3
    assert cf["changed_if_independent"] == pytest.approx(2 / 3)
    # UA over the both-parsed three: normal recalls happy 1, sad 1, angry 1; zeroed only sad 1
    assert cf["ua_parsed"] == pytest.approx(1.0) and cf["ua_zeroed_parsed"] == pytest.approx(1 / 3)
    assert cf["chance_ua"] == pytest.approx(1 / 4)  # four classes present among the references
    assert cf["emotion_changed_rate"] == pytest.approx(5 / 6)  # u0, u1, u3, u4, u5 differ


def test_counterfactual_when_every_zeroed_output_breaks():
    rows = [_emo_row("a", "sad", "sad"), _emo_row("b", "happy", "happy")]
    cf = report.counterfactual(rows, [_emo_row("a", "sad", None), _emo_row("b", "happy", None)], ["happy", "sad"])
    assert cf["unparseable_rate"] == 1.0 and cf["n_both_parsed"] == 0
    assert cf["changed_among_parsed_rate"] is None and cf["ua_zeroed_parsed"] is None
    assert cf["ua"] == 1.0 and cf["ua_zeroed"] == 0.0  # the combined figures would read "changed"


def test_compute_metrics_reports_chance_columns_and_one_probe_per_stream():
    labels = ["happy", "sad"]
    rows = [
        {**_emo_row("a", "sad", "sad"), "transcript_ref": None, "caption_ref": None},
        {**_emo_row("b", "happy", "sad"), "transcript_ref": None, "caption_ref": None},
    ]
    m = report.compute_metrics(
        rows,
        labels,
        {
            "descriptor": [_emo_row("a", "sad", None), _emo_row("b", "happy", "happy")],
            "content": [_emo_row("a", "sad", "sad"), _emo_row("b", "happy", "sad")],
        },
    )
    assert m["confusion_columns"] == ["happy", "sad", "unparsed"] and len(m["confusion"][0]) == 3
    assert m["chance"]["ua"] == 0.5
    assert m["counterfactual"]["descriptor"]["unparseable_rate"] == 0.5
    assert m["counterfactual"]["content"]["changed_among_parsed_rate"] == 0.0
