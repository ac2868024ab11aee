"""Preparation is a step of its own: building an experiment prepares nothing, prepare() makes
the built-in corpus and the offline CTC encoder, once."""

from __future__ import annotations

import pytest

from data_modules.records import manifest_path
from explainable_ser.training.assembly import build
from explainable_ser.training.preparation import prepare

from conftest import tiny_config


def test_build_prepares_nothing_and_prepare_makes_the_corpus_and_the_encoder_once(tmp_path):
    corpus, run_dir = tmp_path / "synthcraft", tmp_path / "run"
    cfg = tiny_config(
        f"data.corpora.0.dir={corpus}",
        "data.synthcraft.n_train=6",
        "data.synthcraft.n_dev=2",
        "data.synthcraft.n_test=2",
        "model.encoder.kind=ctc_fbank",
    )
    train = manifest_path(corpus, "synthcraft", "train")
    encoder = run_dir / "offline_models" / "encoder"
    # The offline word tokenizer reads the training texts: unprepared, build says what is missing
    with pytest.raises(FileNotFoundError, match="manifest for corpus 'synthcraft' split 'train' not found"):
        build(cfg, run_dir)
    assert not train.exists() and not encoder.exists()
    dm = prepare(cfg, run_dir)
    assert train.exists() and any(encoder.iterdir())
    made = {p: p.stat().st_mtime_ns for p in [train, *encoder.rglob("*")] if p.is_file()}
    prepare(cfg, run_dir)  # a second call finds everything made
    assert {p: p.stat().st_mtime_ns for p in made} == made
    _, module = build(cfg, run_dir, dm)
    assert module.model is not None
