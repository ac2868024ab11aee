"""Comparing two systems' predictions: paired tests per metric (python -m explainable_ser.compare)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from explainable_ser.evaluation import captions

from conftest import CAP_HYPS, CAP_REFS, needs_java


def test_compare_pairs_systems_that_decode_different_emotion_tasks():
    from explainable_ser.evaluation.significance import compare

    def rows(task, emotions):
        return {
            (str(i), task): {"id": str(i), "task": task, "emotion_ref": ref, "emotion": hyp, "transcript_ref": None}
            for i, (ref, hyp) in enumerate(emotions)
        }

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

    def rows(hyps):
        return [
            {
                "id": f"u{i}",
                "task": "ser",
                "emotion_ref": r,
                "emotion": h,
                "transcript_ref": None,
            }
            for i, (r, h) in enumerate(zip(refs, hyps))
        ]

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
    from explainable_ser.evaluation.report import read_predictions
    from explainable_ser.evaluation.significance import compare

    refs = [r if isinstance(r, str) else r[0] for r in CAP_REFS] * 3
    a_caps = [*CAP_HYPS] * 3
    b_caps = ["a voice", "someone talks", "speech", "a sound"] * 3

    def rows(caps):
        return [
            {
                "id": f"u{i}",
                "task": "sed",
                "caption_ref": r,
                "caption": c,
                "language": "en",
                "transcript_ref": None,
            }
            for i, (r, c) in enumerate(zip(refs, caps))
        ]

    res = compare(
        read_predictions(_write_predictions(tmp_path / "a.jsonl", rows(a_caps))),
        read_predictions(_write_predictions(tmp_path / "b.jsonl", rows(b_caps))),
    )
    assert {"bleu4", "rouge_l", "cider", "meteor"} <= set(res["metrics"])
    for key in ("rouge_l", "cider"):
        per = [
            captions.caption_metrics(refs, caps, metrics=(key,), per_item=True)["per_item"][key]
            for caps in (a_caps, b_caps)
        ]
        expected = stats.ttest_rel(per[0], per[1], alternative="greater")
        assert res["metrics"][key]["t"] == pytest.approx(expected.statistic, rel=1e-9), key
        assert res["metrics"][key]["p"] == pytest.approx(expected.pvalue, rel=1e-9), key
        assert res["metrics"][key]["significant"]


def test_compare_pools_seeds_pairing_each_run_with_its_own_seed(tmp_path, capsys):
    """Two pairs of runs: A beats B in each pair on other utterances, so pairing across pairs
    would pair wrong rows; pooled, the UA is the pooled one and the test runs on 2 x n rows."""
    import json

    from explainable_ser.compare import main

    refs = ["neutral", "happy", "sad", "angry"] * 4

    def write(name, hyps):
        return _write_predictions(
            tmp_path / name,
            [
                {"id": f"u{i}", "task": "ser", "emotion_ref": r, "emotion": h, "transcript_ref": None}
                for i, (r, h) in enumerate(zip(refs, hyps))
            ],
        )

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
