"""``python -m explainable_ser.crossval``: fold handling, summary, resume, compare on its outputs.

The end-to-end test builds a fake two-fold "iemocap" out of a tiny SynthCraft: manifests named
``iemocap_cuts_fold{k}_{train,dev,test}`` holding SynthCraft cuts, each test utterance in
exactly one fold, as in leave-one-session-out.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from lhotse import CutSet

from data_modules.records import manifest_path
from data_modules.synthcraft import generate
from explainable_ser import crossval
from explainable_ser.config import ConfigError, load_config
from explainable_ser.training import folds

from conftest import TINY_LLM

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
IEMOCAP_SYS7 = [str(EXPERIMENTS / f) for f in ("base.yaml", "sys7.yaml", "data_iemocap.yaml")]

# Fast: no CTC pre-training, no captions (no Java scorers), two steps per stage, no decoding
# during validation. ``ser`` keeps an emotion target, so UA is defined.
QUICK = [
    "model.encoder.kind=fbank",
    "training.stages.0.epochs=1",
    "training.stages.1.epochs=1",
    "training.stages.1.tasks=[ser,asr]",
    "eval.tasks=[asr,ser]",
    "eval.max_new_tokens=6",
    "eval.val_decode_limit=0",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
    "data.max_duration=12",
]


@pytest.fixture(scope="module")
def fake_iemocap(tmp_path_factory):
    out = tmp_path_factory.mktemp("fake_iemocap")
    generate(out, n_train=24, n_dev=6, n_test=6, seed=5, progress=False)
    splits = {s: CutSet.from_file(manifest_path(out, "synthcraft", s)).to_eager() for s in ("train", "dev", "test")}
    test = list(splits["test"])
    for k, held_out in enumerate((test[:3], test[3:]), start=1):
        splits["train"].to_file(manifest_path(out, "iemocap", f"fold{k}_train"))
        splits["dev"].to_file(manifest_path(out, "iemocap", f"fold{k}_dev"))
        CutSet.from_cuts(held_out).to_file(manifest_path(out, "iemocap", f"fold{k}_test"))
    return out


def cv_args(corpus_dir, run_dir) -> list[str]:
    return [
        *TINY_LLM,
        *QUICK,
        "data.corpora.0.name=iemocap",
        f"data.corpora.0.dir={corpus_dir}",
        "data.corpora.0.train_split=fold1_train",
        "data.corpora.0.val_split=fold1_dev",
        "data.corpora.0.test_split=fold1_test",
        f"run_dir={run_dir}",
    ]


@pytest.fixture(scope="module")
def cv_run(fake_iemocap, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("cv")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: extra threads only spin on a shared CPU
    try:
        assert crossval.main([*cv_args(fake_iemocap, run_dir), "--folds", "1-2"]) == 0
    finally:
        torch.set_num_threads(threads)
    return run_dir


def test_parse_folds():
    assert folds.parse_folds("1-5") == [1, 2, 3, 4, 5]
    assert folds.parse_folds("1,3") == [1, 3]
    assert folds.parse_folds("2") == [2]
    assert folds.parse_folds("1-2,2,4") == [1, 2, 4]
    for bad in ("0", "3-1", "a", ""):
        with pytest.raises(ConfigError):
            folds.parse_folds(bad)


def test_fold_overrides_set_every_split_and_the_run_dir(tmp_path):
    cfg = load_config(IEMOCAP_SYS7)
    fold = load_config([*IEMOCAP_SYS7, *folds.fold_overrides(cfg, "iemocap", 3, tmp_path)])
    iemocap = fold.data.corpora[1]
    assert (iemocap.train_split, iemocap.val_split, iemocap.test_split) == ("fold3_train", "fold3_dev", "fold3_test")
    assert fold.data.corpora[0].train_split == "train"  # SpeechCraft untouched
    assert fold.resolved_run_dir() == tmp_path / "fold3"


def test_summarize_means_and_sample_std():
    s = folds.summarize(
        {
            1: {"ua": 0.5, "wer": None, "confusion": [[1]], "attribute_accuracy": {"mean": 0.2}},
            2: {"ua": 0.7, "wer": 0.1, "parsed": True, "attribute_accuracy": {"mean": 0.4}},
        }
    )
    assert s["mean"]["ua"] == pytest.approx(0.6) and s["std"]["ua"] == pytest.approx(0.1414213562)
    assert s["mean"]["wer"] == 0.1 and s["std"]["wer"] is None and s["n_folds"]["wer"] == 1
    assert s["mean"]["attribute_accuracy.mean"] == pytest.approx(0.3)
    assert "confusion" not in s["mean"] and "parsed" not in s["mean"]  # lists and booleans are not metrics
    table = folds.format_table(s).splitlines()
    assert [line.split()[0] for line in table[1:]] == ["fold1", "fold2", "mean", "std"]
    assert table[1].split()[1:5] == ["0.5000", "-", "-", "-"]


def test_missing_corpus_is_a_config_error(capsys):
    assert crossval.main(["--folds", "1"]) == 2  # the demo config has no iemocap corpus
    assert "iemocap" in capsys.readouterr().err


def test_two_folds_end_to_end(cv_run):
    for k in (1, 2):
        assert (cv_run / f"fold{k}" / "metrics.json").exists()
        assert (cv_run / f"fold{k}" / "stage2" / "final.ckpt").exists()
    summary = json.loads((cv_run / "crossval.json").read_text())
    assert summary["folds"] == [1, 2]
    per_fold_ua = [summary["per_fold"][f"fold{k}"]["ua"] for k in (1, 2)]
    assert summary["mean"]["ua"] == pytest.approx(sum(per_fold_ua) / 2)
    assert summary["mean"]["n_utterances"] == 3 and summary["std"]["n_utterances"] == 0.0
    rows = [json.loads(line) for line in (cv_run / "predictions.jsonl").read_text().splitlines()]
    assert {r["fold"] for r in rows} == {1, 2}
    assert len({r["id"] for r in rows}) == 6, "every test utterance once, over both folds"
    pooled = json.loads((cv_run / "metrics.json").read_text())
    assert pooled["n_utterances"] == 6 and pooled["folds"] == [1, 2]
    assert load_config([str(cv_run / "config.yaml")]).data.corpora[0].name == "iemocap"


def test_finished_folds_are_skipped(cv_run, fake_iemocap, monkeypatch, capsys):
    def no_training(cfg):
        raise AssertionError(f"fold {cfg.run_dir} was trained again")

    monkeypatch.setattr(folds, "run_fit", no_training)
    before = (cv_run / "crossval.json").read_text()
    assert crossval.main([*cv_args(fake_iemocap, cv_run), "--folds", "1-2"]) == 0
    out = capsys.readouterr().out
    assert out.count("finished earlier") == 2 and "mean" in out
    assert json.loads((cv_run / "crossval.json").read_text()) == json.loads(before)


def test_compare_pairs_crossvalidated_systems(cv_run, capsys):
    from explainable_ser.compare import main as compare_main

    pred = str(cv_run / "predictions.jsonl")
    assert compare_main([pred, pred, "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n_shared"] == 6 and res["only_a"] == 0  # 6 utterances (each decoded for 2 tasks)
    assert set(res["metrics"]) == {"ua", "accuracy", "wer"}
    assert res["metrics"]["ua"]["test"] == "class-weighted correctness (mean = UA)"
