"""The demo's alignment warm start: targets, CTC onto frozen LLM embeddings, fit wiring."""

from __future__ import annotations

import pytest
import torch
from lhotse import CutSet

from data_modules.records import record_of
from data_modules.synthcraft import generate
from explainable_ser.model import build_model
from explainable_ser.offline.tokenizer import build_word_tokenizer
from explainable_ser.offline.warmstart import CTCHead, descriptor_words, warm_start
from conftest import tiny_config

REC = {"emotion": "angry", "transcript": "the dog ran",
       "attributes": {"gender": "male", "pitch": "low", "volume": "high", "speed": "fast", "emphasis": "dog"}}


def test_descriptor_words_spell_the_fields_in_order():
    fields = ["gender", "pitch", "volume", "speed", "emphasis", "emotion"]
    assert descriptor_words(REC, fields) == "male low pitch high volume fast speed dog angry"
    assert descriptor_words(REC, ["emotion"]) == "angry"
    assert descriptor_words({**REC, "emotion": None}, fields) is None
    assert descriptor_words({"emotion": "sad", "attributes": {}}, ["pitch"]) is None


def test_ctc_head_scores_the_nearest_embedding_row_highest():
    torch.manual_seed(0)
    rows = torch.randn(5, 8)
    head = CTCHead(rows, scale=10.0)
    logits = head(3.0 * rows[None])  # [1, 5, 6]: each row against blank + the 5 rows
    assert logits.argmax(-1)[0].tolist() == [1, 2, 3, 4, 5]  # index 0 is the blank


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("sc")
    generate(root, n_train=24, n_dev=6, n_test=1, seed=3, progress=False)

    def load(split):
        cuts = CutSet.from_file(root / f"synthcraft_cuts_{split}.jsonl.gz")
        return [(torch.from_numpy(c.load_audio()[0]), record_of(c)) for c in cuts]

    return load("train"), load("dev")


@pytest.mark.parametrize("branch", ["content", "descriptor"])
def test_warm_start_trains_only_its_branch_and_lowers_the_ctc_loss(clips, branch, seeded):
    train, dev = clips
    tok = build_word_tokenizer([r["transcript"] for _, r in train] + ["pitch volume speed male female"
                                                                    " low normal high slow fast neutral happy sad angry"])
    model = build_model(tiny_config().model, tok, init_seed=0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    report = warm_start(model, branch, train, dev, tok, fields=["gender", "pitch", "emotion"], epochs=8,
                        lr=3e-3, batch_size=8, scale=30.0, norm_weight=0.1, seed=0, progress=False)
    assert report["loss_last_epoch"] < 0.8 * report["loss_first_epoch"]
    assert report["train_utterances"] == 24 and report["dev_utterances"] == 6
    assert 0.0 <= report["dev_error_rate"]
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(n.startswith(f"{branch}.") for n in changed)
