"""Tests for explainable_ser.evaluation.metrics: library cross-checks and hand-counted cases."""

from __future__ import annotations

import math
import os
import shutil

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from sklearn.metrics import balanced_accuracy_score

from explainable_ser.evaluation import metrics as M

LABELS = ["neutral", "happy", "sad", "angry"]
needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="needs Java")


# --------------------------------------------------------------------------- #
# Emotion
# --------------------------------------------------------------------------- #


def test_ua_matches_sklearn_balanced_accuracy():
    refs = ["neutral", "neutral", "happy", "sad", "sad", "sad", "angry", "angry", "neutral", "happy"]
    hyps = ["neutral", "sad", "happy", "sad", "neutral", "sad", "angry", "happy", "neutral", "neutral"]
    out = M.emotion_metrics(refs, hyps, LABELS)
    assert out["ua"] == pytest.approx(balanced_accuracy_score(refs, hyps))
    assert out["wa"] == pytest.approx(6 / 10)
    assert out["n"] == 10 and out["n_unparsed"] == 0 and out["n_no_reference"] == 0


def test_ua_hand_computed_three_classes():
    # recalls: a = 2/2, b = 1/2, c = 0/2  ->  UA 0.5; WA 3/6
    refs = ["a", "a", "b", "b", "c", "c"]
    hyps = ["a", "a", "b", "a", "b", "a"]
    out = M.emotion_metrics(refs, hyps, ["a", "b", "c"])
    assert out["ua"] == pytest.approx(0.5)
    assert out["wa"] == pytest.approx(0.5)
    assert out["per_class_recall"] == pytest.approx({"a": 1.0, "b": 0.5, "c": 0.0})
    # F1: a: P=2/4, R=1 -> 2/3; b: P=1/2, R=1/2 -> 1/2; c: 0  -> (2/3 + 1/2 + 0) / 3
    assert out["macro_f1"] == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)
    assert out["confusion"] == [[2, 0, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0]]
    assert out["confusion_columns"] == ["a", "b", "c", "unparsed"]


def test_unparsed_and_missing_reference():
    refs = ["a", "a", "b", "b", None, "c"]
    hyps = ["a", None, "b", "whatever", "a", "c"]
    out = M.emotion_metrics(refs, hyps, ["a", "b", "c"])
    assert out["n"] == 5 and out["n_no_reference"] == 1 and out["n_unparsed"] == 2
    # recalls a = 1/2, b = 1/2, c = 1
    assert out["ua"] == pytest.approx((0.5 + 0.5 + 1) / 3)
    assert out["wa"] == pytest.approx(3 / 5)
    assert out["confusion"] == [[1, 0, 0, 1], [0, 1, 0, 1], [0, 0, 1, 0]]
    # F1: every predicted class is precise, so F1 = 2R/(1+R): a, b: 2/3; c: 1
    assert out["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)


def test_macro_f1_averages_over_reference_classes_only():
    # "c" is predicted but never a reference: not averaged, but its false
    # positive still costs "b" its recall.
    out = M.emotion_metrics(["a", "b"], ["a", "c"], ["a", "b", "c"])
    assert out["macro_f1"] == pytest.approx((1.0 + 0.0) / 2)
    assert out["per_class_recall"]["c"] is None
    assert out["ua"] == pytest.approx(0.5)


def test_emotion_empty_and_invalid():
    out = M.emotion_metrics([None, None], ["a", None], ["a", "b"])
    assert out["ua"] is None and out["wa"] is None and out["macro_f1"] is None
    assert out["n"] == 0 and out["n_no_reference"] == 2
    assert out["confusion"] == [[0, 0, 0], [0, 0, 0]]
    assert M.emotion_metrics([], [], ["a"])["ua"] is None
    with pytest.raises(ValueError):
        M.emotion_metrics(["x"], ["a"], ["a", "b"])
    with pytest.raises(ValueError):
        M.emotion_metrics(["a"], ["a", "b"], ["a", "b"])


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(st.none(), st.sampled_from(LABELS)),
            st.one_of(st.none(), st.sampled_from(LABELS + ["unknown", ""])),
        ),
        max_size=30,
    )
)
def test_emotion_metrics_property(pairs):
    refs = [r for r, _ in pairs]
    hyps = [h for _, h in pairs]
    out = M.emotion_metrics(refs, hyps, LABELS)
    n = sum(r is not None for r in refs)
    assert out["n"] == n and out["n"] + out["n_no_reference"] == len(pairs)
    assert sum(map(sum, out["confusion"])) == n
    assert sum(row[-1] for row in out["confusion"]) == out["n_unparsed"]
    if n == 0:
        assert out["ua"] is None
    else:
        for key in ("ua", "wa", "macro_f1"):
            assert 0.0 <= out[key] <= 1.0


def test_annotator_aware_accuracy():
    ann = [["happy", "neutral"], ["sad"], None, [], ["angry", "sad"]]
    hyps = ["neutral", "happy", "sad", "sad", None]
    assert M.annotator_aware_accuracy(ann, hyps) == pytest.approx(1 / 3)
    assert M.annotator_aware_accuracy([None, []], ["a", "b"]) is None


# --------------------------------------------------------------------------- #
# WER
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Hello, World!", "hello world"),
        ("  Don't   STOP.  ", "don't stop"),
        ("\u2018quoted\u2019 dogs' bones", "quoted dogs bones"),
        ("I\u2019m fine", "i'm fine"),
        ("well-known end.start", "well known end start"),
        ("ＡＢＣ　１２３", "abc 123"),  # full-width -> NFKC
        ("...", ""),
        ("你好，世界。", "你好 世界"),
    ],
)
def test_normalize_text(raw, expected):
    assert M.normalize_text(raw) == expected


def test_wer_hand_counted():
    out = M.wer(["The cat sat on the mat."], ["the cat SIT on mat"])
    assert out["wer"] == pytest.approx(2 / 6)
    assert (out["substitutions"], out["deletions"], out["insertions"]) == (1, 1, 0)
    assert out["ref_words"] == 6 and out["n"] == 1


def test_wer_corpus_level_none_hyp_and_skips():
    refs = ["a b c d", "e f", None, "..."]
    hyps = ["a b x d y", None, "whatever", "z"]
    out = M.wer(refs, hyps)
    # utt 1: 1 sub + 1 ins; utt 2: 2 del  -> 4 edits / 6 ref words (not mean of 0.5 and 1.0)
    assert out["wer"] == pytest.approx(4 / 6)
    assert (out["substitutions"], out["deletions"], out["insertions"]) == (1, 2, 1)
    assert out["n"] == 2 and out["n_skipped_empty_reference"] == 2
    assert M.wer([None], ["a"])["wer"] is None


# --------------------------------------------------------------------------- #
# Captions
# --------------------------------------------------------------------------- #

CAP_REFS = [
    ["A man speaks loudly with a high pitch.", "The male speaker talks loudly, pitch is high."],
    "A woman whispers slowly and sadly.",
    ["She speaks fast, with an angry tone!", "An angry female voice, fast speech."],
    ["A calm male voice at normal speed."],
]
CAP_HYPS = [
    "A man speaks loudly with high pitch.",
    "The woman whispers slowly.",
    None,
    "A calm man speaks at a normal speed.",
]


def _direct_pycocoevalcap():
    """The reference numbers: pycocoevalcap used the plain way."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    gts = {i: [{"caption": r} for r in ([r] if isinstance(r, str) else r)] for i, r in enumerate(CAP_REFS)}
    # The empty hypothesis is given to Java as-is here; the module keeps it away.
    res = {i: [{"caption": h or ""}] for i, h in enumerate(CAP_HYPS)}
    tok = PTBTokenizer()
    gts, res = tok.tokenize(gts), tok.tokenize(res)
    assert res[2] == [""]
    return {
        "bleu4": Bleu(4).compute_score(gts, res, verbose=0)[0][3],
        "rouge_l": Rouge().compute_score(gts, res)[0],
        "cider": Cider().compute_score(gts, res)[0],
    }


@needs_java
def test_caption_per_item_scores_are_the_scorers_own():
    refs = [*CAP_REFS, None]  # the last utterance has no reference
    out = M.caption_metrics(refs, [*CAP_HYPS, "x"], metrics=("bleu4", "rouge_l", "cider", "meteor"),
                            per_item=True)
    items = out["per_item"]
    assert set(items) == {"bleu4", "rouge_l", "cider", "meteor"}
    assert all(len(v) == 5 and v[4] is None for v in items.values())
    # ROUGE-L's and CIDEr-D's corpus scores are the mean of their per-caption scores.
    for key in ("rouge_l", "cider"):
        assert np.mean(items[key][:4]) == pytest.approx(out[key], rel=1e-9), key
    assert all(0.0 <= v <= 1.0 for v in items["meteor"][:4]) and items["meteor"][2] == 0.0
    assert items["bleu4"][2] == pytest.approx(0.0, abs=1e-6)  # the empty hypothesis
    assert items["bleu4"][0] > 0.3


@needs_java
def test_caption_metrics_match_pycocoevalcap():
    out = M.caption_metrics(CAP_REFS, CAP_HYPS, metrics=("bleu4", "rouge_l", "cider", "spice"))
    ref = _direct_pycocoevalcap()
    for key in ("bleu4", "rouge_l", "cider"):
        assert out[key] == pytest.approx(ref[key]), key
        assert key not in out["reasons"]
    assert out["bleu4"] > 0 and out["cider"] > 0
    assert out["meteor"] is None and out["reasons"]["meteor"] == "not requested"
    assert out["n"] == 4 and out["n_skipped_no_reference"] == 0


@pytest.mark.skipif(
    all(
        os.path.exists(os.path.join(M._pycocoevalcap_dir("spice") or "", "lib", j))
        for j in ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")
    ),
    reason="SPICE jars present",
)
def test_spice_none_with_reason_without_jars():
    out = M.caption_metrics(["a b"], ["a b"], language="zh", metrics=("spice",))
    assert out["spice"] is None and "English" in out["reasons"]["spice"]
    if shutil.which("java") is not None:
        out = M.caption_metrics(["a man speaks"], ["a man speaks"], metrics=("spice",))
        assert out["spice"] is None and "CoreNLP" in out["reasons"]["spice"]


@pytest.fixture
def closed_meteors(monkeypatch):
    """Records every METEOR scorer the module shuts down."""
    seen = []
    original = M._close_meteor

    def spy(meteor):
        seen.append(meteor)
        original(meteor)

    monkeypatch.setattr(M, "_close_meteor", spy)
    return seen


@pytest.mark.slow
@needs_java
def test_meteor_in_unit_interval_and_process_closed(closed_meteors):
    out = M.caption_metrics(CAP_REFS, CAP_HYPS, metrics=("meteor",))
    assert out["meteor"] is not None, out["reasons"]
    assert 0.0 < out["meteor"] < 1.0
    assert closed_meteors and closed_meteors[0].meteor_p.poll() is not None


def test_meteor_without_java(monkeypatch):
    monkeypatch.setattr(M.shutil, "which", lambda _: None)
    out = M.caption_metrics(["一个男人说话"], ["一个男人"], language="zh", metrics=("bleu4", "meteor"))
    assert out["meteor"] is None and "Java" in out["reasons"]["meteor"]
    assert out["bleu4"] is not None  # zh needs no Java for tokenisation
    out = M.caption_metrics(["a man"], ["a man"], metrics=("bleu4",))
    assert out["bleu4"] is None and "Java" in out["reasons"]["bleu4"]


@needs_java
def test_meteor_timeout_kills_process(closed_meteors):
    out = M.caption_metrics(["a man speaks"], ["a man speaks"], metrics=("meteor",), meteor_timeout_s=0.01)
    assert out["meteor"] is None and "timed out" in out["reasons"]["meteor"]
    assert closed_meteors[0].meteor_p.poll() is not None


def test_mandarin_char_tokenisation():
    assert M._char_tokenize("他说话很大声，语速快！ OK") == "他 说 话 很 大 声 语 速 快 o k"
    refs = ["他说话很大声，语速很快。"]
    hyps = ["他说话很大声。"]
    out = M.caption_metrics(refs, hyps, language="zh", metrics=("bleu4", "rouge_l", "cider"))
    from pycocoevalcap.rouge.rouge import Rouge

    gts = {0: ["他 说 话 很 大 声 语 速 很 快"]}
    res = {0: ["他 说 话 很 大 声"]}
    assert out["rouge_l"] == pytest.approx(Rouge().compute_score(gts, res)[0])
    assert out["rouge_l"] > 0


def test_caption_edge_cases():
    out = M.caption_metrics([None, [], [""]], ["a", "b", "c"], language="zh")
    assert out["n"] == 0 and out["n_skipped_no_reference"] == 3
    assert all(out[m] is None for m in M.CAPTION_METRICS)
    assert set(out["reasons"]) == set(M.CAPTION_METRICS)
    with pytest.raises(ValueError):
        M.caption_metrics(["a"], ["a"], language="fr")
    with pytest.raises(ValueError):
        M.caption_metrics(["a"], ["a"], metrics=("bleu",))


@needs_java
def test_caption_line_breaks_do_not_shift_alignment():
    # \u2028 and \r are line breaks to the line-based Java tokenizer.
    refs = ["first\u2028caption here", "second caption\rhere", "third caption here"]
    out = M.caption_metrics(refs, ["first caption here", "second caption here", "third caption here"],
                            metrics=("rouge_l",))
    assert out["rouge_l"] == pytest.approx(1.0)


# --------------------------------------------------------------------------- #
# Significance
# --------------------------------------------------------------------------- #

A = [0.9, 0.8, 0.85, 0.7, 0.95, 0.6, 0.88]
B = [0.7, 0.75, 0.8, 0.72, 0.9, 0.5, 0.8]


def test_paired_t_test_matches_scipy():
    out = M.paired_t_test(A, B)
    ref = stats.ttest_rel(A, B, alternative="greater")
    assert out["t"] == pytest.approx(ref.statistic)
    assert out["p"] == pytest.approx(ref.pvalue)
    assert out["n"] == 7 and out["mean_diff"] == pytest.approx(np.mean(np.subtract(A, B)))
    assert out["significant"] == (ref.pvalue < 0.05) and out["significant"]
    assert out["reason"] is None


def test_paired_t_test_one_tailed():
    ab, ba = M.paired_t_test(A, B), M.paired_t_test(B, A)
    assert ab["t"] == pytest.approx(-ba["t"])
    assert ab["p"] + ba["p"] == pytest.approx(1.0)
    assert not ba["significant"]
    two = M.paired_t_test(A, B, alternative="two-sided")
    assert two["p"] == pytest.approx(2 * ab["p"])


def test_paired_t_test_degenerate():
    for a, b in ([[1, 1, 1], [1, 1, 1]], [[1, 1, 1], [0, 0, 0]]):
        out = M.paired_t_test(a, b)
        assert out["p"] is None and out["t"] is None and not out["significant"]
        assert "variance" in out["reason"]
    out = M.paired_t_test([1.0, math.nan], [0.0, 0.5])
    assert out["n"] == 1 and out["p"] is None and "2" in out["reason"]


def test_per_utterance_scores():
    preds = [
        {"id": "1", "emotion_ref": "happy", "emotion": "happy", "transcript_ref": "a b c d", "transcript": "a b c"},
        {"id": "2", "emotion_ref": "sad", "emotion": None, "transcript_ref": "a b", "transcript": None},
        {"id": "3", "emotion_ref": None, "emotion": "sad", "transcript_ref": "", "transcript": "x"},
    ]
    emo = M.per_utterance_scores(preds, "accuracy")
    assert emo[:2] == [1.0, 0.0] and math.isnan(emo[2])
    ua = M.per_utterance_scores(preds, "ua")  # 2 scored, 2 classes of 1: weight 2 / (2 * 1) = 1
    assert ua[:2] == [1.0, 0.0] and math.isnan(ua[2])
    w = M.per_utterance_scores(preds, "wer")
    assert w[:2] == pytest.approx([-0.25, -1.0]) and math.isnan(w[2])
    with pytest.raises(ValueError):
        M.per_utterance_scores(preds, "bleu")


LABELS4 = ["neutral", "happy", "sad", "angry"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(LABELS4 + [None]), st.sampled_from(LABELS4 + [None, "bored"])),
                min_size=1, max_size=40))
def test_ua_scores_average_to_the_ua(pairs):
    preds = [{"emotion_ref": r, "emotion": h} for r, h in pairs]
    ua = M.emotion_metrics([r for r, _ in pairs], [h for _, h in pairs], LABELS4)["ua"]
    scores = [x for x in M.per_utterance_scores(preds, "ua") if not math.isnan(x)]
    if ua is None:
        assert scores == []
    else:
        assert abs(sum(scores) / len(scores) - ua) < 1e-12


def test_ua_scores_weigh_the_rare_class_up():
    # 6 neutral (all right), 2 sad (both wrong): WA 0.75, UA 0.5.
    preds = [{"emotion_ref": "neutral", "emotion": "neutral"}] * 6 + [{"emotion_ref": "sad", "emotion": "neutral"}] * 2
    assert M.per_utterance_scores(preds, "ua") == [8 / (2 * 6)] * 6 + [0.0] * 2
    assert sum(M.per_utterance_scores(preds, "accuracy")) / 8 == 0.75


# --------------------------------------------------------------------------- #
# Attributes
# --------------------------------------------------------------------------- #


def test_attribute_accuracy():
    refs = [
        {"gender": "Male", "pitch": "high", "volume": None},
        {"gender": "female", "pitch": "low"},
        {"gender": "female", "pitch": "normal", "speed": "fast"},
    ]
    hyps = [{"gender": "male ", "pitch": "HIGH", "volume": "loud"}, None, {"gender": "male", "pitch": "normal"}]
    out = M.attribute_accuracy(refs, hyps)
    assert out["accuracy"]["gender"] == pytest.approx(1 / 3)
    assert out["accuracy"]["pitch"] == pytest.approx(2 / 3)
    assert out["accuracy"]["speed"] == 0.0  # missing hyp value counts as wrong
    assert out["accuracy"]["volume"] is None and out["accuracy"]["emphasis"] is None
    assert out["n"] == {"gender": 3, "pitch": 3, "volume": 0, "speed": 1, "emphasis": 0}
    assert out["mean"] == pytest.approx((1 / 3 + 2 / 3 + 0.0) / 3)
    assert M.attribute_accuracy([], [])["mean"] is None


def test_caption_language_auto_scores_mandarin_records_by_characters():
    from explainable_ser.evaluation.metrics import compute_metrics

    def row(i, lang):
        return {"id": str(i), "task": "sed", "language": lang, "caption_ref": "说话人语速很快，情绪激动",
                "caption": "说话人语速很快", "attributes_ref": {}, "caption_attributes": {},
                "emotion_ref": None, "emotion": None, "transcript_ref": None}

    zh = compute_metrics([row(i, "zh") for i in range(3)], ["neutral"], caption_metrics=("bleu4",))
    en = compute_metrics([row(i, None) for i in range(3)], ["neutral"], caption_metrics=("bleu4",))
    assert zh["caption_language"] == "zh" and en["caption_language"] == "en"
    # One PTB "word" per Mandarin caption gives no 4-gram; characters do.
    assert zh["bleu4"] > 0.3 and zh["bleu4"] != en["bleu4"]


def test_compare_pairs_systems_that_decode_different_emotion_tasks():
    from explainable_ser.compare import compare

    def rows(task, emotions):
        return {(str(i), task): {"id": str(i), "task": task, "emotion_ref": ref, "emotion": hyp,
                                 "transcript_ref": None}
                for i, (ref, hyp) in enumerate(emotions)}

    refs = ["happy", "sad", "angry", "neutral"] * 5
    a = rows("ser_sed", [(r, r) for r in refs])  # always right
    b = rows("ser", [(r, "neutral") for r in refs])  # right on neutral only
    res = compare(a, b, ["neutral", "happy", "sad", "angry"])
    assert res["n_shared"] == 20 and res["metrics"]["ua"]["a"] == 1.0 and res["metrics"]["ua"]["b"] == 0.25
    assert res["metrics"]["ua"]["significant"]


def _write_predictions(path, rows):
    import json

    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_compare_names_and_runs_a_ua_and_an_accuracy_test(tmp_path, capsys):
    """A known pair of prediction files: the t and p are scipy's on the hand-weighted scores."""
    import json

    from explainable_ser.compare import main

    rng = np.random.default_rng(3)
    refs = ["neutral"] * 30 + ["happy"] * 10 + ["sad"] * 6 + ["angry"] * 4  # imbalanced
    a_hyp = [r if rng.random() < 0.7 else "neutral" for r in refs]
    b_hyp = ["neutral" if rng.random() < 0.8 else r for r in refs]
    rows = lambda hyps: [{"id": f"u{i}", "task": "ser", "emotion_ref": r, "emotion": h,  # noqa: E731
                          "transcript_ref": None} for i, (r, h) in enumerate(zip(refs, hyps))]
    a = _write_predictions(tmp_path / "a.jsonl", rows(a_hyp))
    b = _write_predictions(tmp_path / "b.jsonl", rows(b_hyp))
    assert main([a, b, "--json", "--no-captions"]) == 0
    res = json.loads(capsys.readouterr().out)
    n_c = {c: refs.count(c) for c in set(refs)}
    weight = [len(refs) / (4 * n_c[r]) for r in refs]
    for metric, w in (("ua", weight), ("accuracy", [1.0] * len(refs))):
        x = [wi * (h == r) for wi, h, r in zip(w, a_hyp, refs)]
        y = [wi * (h == r) for wi, h, r in zip(w, b_hyp, refs)]
        expected = stats.ttest_rel(x, y, alternative="greater")
        got = res["metrics"][metric]
        assert got["t"] == pytest.approx(expected.statistic, rel=1e-12), metric
        assert got["p"] == pytest.approx(expected.pvalue, rel=1e-9), metric
        assert got["a"] == pytest.approx(np.mean(x)) and got["b"] == pytest.approx(np.mean(y))
    assert res["metrics"]["ua"]["test"].endswith("(mean = UA)")
    assert res["metrics"]["accuracy"]["test"].endswith("(mean = WA)")
    assert res["metrics"]["ua"]["t"] != res["metrics"]["accuracy"]["t"], "imbalanced: two different tests"
    assert main([a, b, "--no-captions"]) == 0
    text = capsys.readouterr().out
    assert "class-weighted correctness (mean = UA)" in text and "correctness 1/0 (mean = WA)" in text


@needs_java
def test_compare_tests_captions_on_per_caption_scores(tmp_path):
    from explainable_ser.compare import compare, read_predictions

    refs = [r if isinstance(r, str) else r[0] for r in CAP_REFS] * 3
    a_caps = [*CAP_HYPS] * 3
    b_caps = ["a voice", "someone talks", "speech", "a sound"] * 3
    rows = lambda caps: [{"id": f"u{i}", "task": "sed", "caption_ref": r, "caption": c, "language": "en",  # noqa: E731
                          "transcript_ref": None} for i, (r, c) in enumerate(zip(refs, caps))]
    res = compare(read_predictions(_write_predictions(tmp_path / "a.jsonl", rows(a_caps))),
                  read_predictions(_write_predictions(tmp_path / "b.jsonl", rows(b_caps))))
    assert {"bleu4", "rouge_l", "cider", "meteor"} <= set(res["metrics"])
    for key in ("rouge_l", "cider"):
        per = [M.caption_metrics(refs, caps, metrics=(key,), per_item=True)["per_item"][key]
               for caps in (a_caps, b_caps)]
        expected = stats.ttest_rel(per[0], per[1], alternative="greater")
        assert res["metrics"][key]["t"] == pytest.approx(expected.statistic, rel=1e-9), key
        assert res["metrics"][key]["p"] == pytest.approx(expected.pvalue, rel=1e-9), key
        assert res["metrics"][key]["significant"]


def test_caption_language_warning_names_the_mismatch():
    assert M.script_language("A male speaker, low pitch.") == "en"
    assert M.script_language("声音小而弱，隐隐带有抽泣声") == "zh"
    assert M.script_language("说话人 speaks 很快") == "zh"  # 5 ideographs outweigh 6 letters
    assert M.script_language("... 42") is None
    english = ["A woman speaks fast.", "A man whispers.", None, ""]
    assert "2 of 2 hypotheses are English" in M.caption_language_warning(english, "zh")
    assert M.caption_language_warning(english, "en") is None
    assert M.caption_language_warning(["一个男人说话", "A man speaks"], "zh") is None  # no majority
    rows = [{"id": str(i), "task": "sed", "caption_ref": "心中疑惑不解", "caption": c, "raw": c or "Description: ??",
             "attributes_ref": None, "caption_attributes": None, "language": "zh"}
            for i, c in enumerate(["A calm voice.", None, "A loud voice."])]
    out = M.compute_metrics(rows, ["neutral"], caption_metrics=("bleu4",))
    assert out["caption_language"] == "zh" and len(out["warnings"]) == 1
    rows = [{**r, "caption": "声音小而弱", "raw": "Description: 声音小而弱"} for r in rows]
    assert M.compute_metrics(rows, ["neutral"], caption_metrics=("bleu4",))["warnings"] == []


def _emo_row(uid: str, ref: str, hyp: str | None) -> dict:
    return {"id": uid, "task": "ser_sed", "emotion_ref": ref, "emotion": hyp}


def test_counterfactual_separates_broken_from_changed_answers():
    labels = ["neutral", "happy", "sad", "angry"]
    refs = ["happy", "happy", "sad", "sad", "angry", "neutral"]
    normal = ["happy", "happy", "sad", "angry", "angry", None]
    zeroed = [None, "sad", "sad", None, "sad", "sad"]
    rows = [_emo_row(f"u{i}", r, h) for i, (r, h) in enumerate(zip(refs, normal))]
    cf = M.counterfactual(rows, [_emo_row(f"u{i}", r, z) for i, (r, z) in enumerate(zip(refs, zeroed))],
                          labels)
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
    cf = M.counterfactual(rows, [_emo_row("a", "sad", None), _emo_row("b", "happy", None)],
                          ["happy", "sad"])
    assert cf["unparseable_rate"] == 1.0 and cf["n_both_parsed"] == 0
    assert cf["changed_among_parsed_rate"] is None and cf["ua_zeroed_parsed"] is None
    assert cf["ua"] == 1.0 and cf["ua_zeroed"] == 0.0  # the combined figures would read "changed"


def test_chance_levels_hand_computed():
    ch = M.chance_levels(["sad", "sad", "happy", None],
                         [{"gender": "male", "pitch": "low", "emphasis": "dog"},
                          {"gender": "male", "pitch": "high", "emphasis": "cat"},
                          {"gender": "female", "pitch": None, "emphasis": "a"}],
                         ["the dog ran", "a cat", "a b c d"])
    assert ch["ua"] == 0.5 and ch["wa"] == pytest.approx(2 / 3) and ch["wer"] == 1.0
    acc = ch["attribute_accuracy"]["accuracy"]
    assert acc["gender"] == pytest.approx(2 / 3) and acc["pitch"] == 0.5
    assert acc["emphasis"] == pytest.approx((1 / 3 + 1 / 2 + 1 / 4) / 3)  # a random word of each
    assert acc["volume"] is None
    assert ch["attribute_accuracy"]["mean"] == pytest.approx(np.mean([2 / 3, 0.5, (1 / 3 + 1 / 2 + 1 / 4) / 3]))


def test_compute_metrics_reports_chance_columns_and_one_probe_per_stream():
    labels = ["happy", "sad"]
    rows = [{**_emo_row("a", "sad", "sad"), "transcript_ref": None, "caption_ref": None},
            {**_emo_row("b", "happy", "sad"), "transcript_ref": None, "caption_ref": None}]
    m = M.compute_metrics(rows, labels, {"descriptor": [_emo_row("a", "sad", None), _emo_row("b", "happy", "happy")],
                                         "content": [_emo_row("a", "sad", "sad"), _emo_row("b", "happy", "sad")]})
    assert m["confusion_columns"] == ["happy", "sad", "unparsed"] and len(m["confusion"][0]) == 3
    assert m["chance"]["ua"] == 0.5
    assert m["counterfactual"]["descriptor"]["unparseable_rate"] == 0.5
    assert m["counterfactual"]["content"]["changed_among_parsed_rate"] == 0.0


def test_annotator_aware_f1_falls_back_to_the_annotators_plurality():
    labels = ["neutral", "happy", "sad"]
    ann = [["sad", "sad", "happy"], ["happy"], ["neutral"], None, ["other"]]
    maj = [None, "happy", "neutral", "sad", None]
    hyps = ["neutral", "happy", "neutral", "sad", "sad"]
    # first: no majority given, annotators say sad twice -> scored against sad (wrong);
    # the unannotated and the no-usable-label utterances are left out
    assert M.annotator_aware_f1(ann, maj, hyps, labels) == pytest.approx(
        M.emotion_metrics(["sad", "happy", "neutral"], ["neutral", "happy", "neutral"], labels)["macro_f1"])
    assert M.annotator_aware_f1([None], [None], ["sad"], labels) is None


def test_compare_pools_seeds_pairing_each_run_with_its_own_seed(tmp_path, capsys):
    """Two pairs of runs: A beats B in each pair on other utterances, so pairing across pairs
    would pair wrong rows; pooled, the UA is the pooled one and the test runs on 2 x n rows."""
    import json

    from explainable_ser.compare import main

    refs = ["neutral", "happy", "sad", "angry"] * 4

    def write(name, hyps):
        return _write_predictions(tmp_path / name, [
            {"id": f"u{i}", "task": "ser", "emotion_ref": r, "emotion": h, "transcript_ref": None}
            for i, (r, h) in enumerate(zip(refs, hyps))])

    half = len(refs) // 2
    a0 = write("a0.jsonl", refs[:half] + ["neutral"] * half)  # right on the first half
    b0 = write("b0.jsonl", ["neutral"] * len(refs))
    a1 = write("a1.jsonl", ["neutral"] * half + refs[half:])  # right on the second half
    b1 = write("b1.jsonl", ["neutral"] * len(refs))
    assert main([a0, b0, "--pair", a1, b1, "--json", "--no-captions"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n_shared"] == 2 * len(refs) and res["only_a"] == 0
    x = [float(h == r) for h, r in zip(refs[:half] + ["neutral"] * half + ["neutral"] * half + refs[half:], refs * 2)]
    y = [float(r == "neutral") for r in refs * 2]
    expected = stats.ttest_rel(x, y, alternative="greater")
    assert res["metrics"]["accuracy"]["t"] == pytest.approx(expected.statistic, rel=1e-12)
    assert res["metrics"]["accuracy"]["a"] == pytest.approx(np.mean(x))
    assert main([a0, b0, "--pair", a1, str(tmp_path / "missing.jsonl"), "--no-captions"]) == 2
    assert "missing.jsonl" in capsys.readouterr().err
