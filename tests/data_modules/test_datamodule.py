"""The data module: starting a loader leaves the global RNG alone (exact resume relies on it)."""

from __future__ import annotations

import torch

from data_modules.config import DataConfig

from conftest import fake_cuts


def test_starting_a_loader_leaves_the_global_rng_alone(tmp_path):
    """Exact resume relies on it: loaders are created at different points of a resumed run."""
    from data_modules.datamodule import CorpusSpec, SpeechDataModule
    from data_modules.records import manifest_path

    fake_cuts(12).to_file(manifest_path(tmp_path, "fake", "dev"))
    dm = SpeechDataModule(DataConfig(corpora=[CorpusSpec(name="fake", dir=str(tmp_path))]))
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    iter(dm.eval_dataloaders("val_split", 1, 0)[0])
    assert torch.equal(torch.rand(3), expected)


def _batch(n: int, start: int = 0) -> dict:
    records = [{"id": f"u{start + i}", "caption": None if (start + i) % 3 == 0 else "c"} for i in range(n)]
    return {"ids": [r["id"] for r in records], "records": records, "skipped": []}


def _selector(task: str, records: list[dict]) -> dict:
    """A stand-in for the model's selector: ``sed`` needs a caption, ``asr`` takes every clip."""
    keep = [i for i, r in enumerate(records) if task == "asr" or r["caption"]]
    skipped = [(r["id"], f"missing_field_for_{task}") for i, r in enumerate(records) if i not in keep]
    return {"keep": keep, "texts": [f"{task}:{records[i]['id']}" for i in keep], "skipped": skipped}


def test_training_batches_take_the_tasks_in_turn_with_targets_chosen_on_the_data_side():
    from types import SimpleNamespace

    from data_modules.datamodule import SpeechDataModule

    dm = SpeechDataModule(DataConfig())
    dm.target_selector, dm.tasks = _selector, ["sed", "asr", "asr"]
    dm.trainer = SimpleNamespace(training=True, validating=False, sanity_checking=False)
    dm.train_sampler = SimpleNamespace(epoch=0)
    got = [dm.on_before_batch_transfer(_batch(3, 3 * k), 0) for k in range(5)]
    assert [b["task"] for b in got] == ["sed", "asr", "asr", "sed", "asr"]
    first = got[0]["targets"]
    assert list(first) == ["sed"] and first["sed"]["keep"] == [1, 2]
    assert first["sed"]["skipped"] == [("u0", "missing_field_for_sed")]
    assert dm.consumed_batches() == 5
    # a resumed run restores the consumed count: the turn goes on where it stopped
    dm._consumed = (0, 4, 12)
    assert dm.on_before_batch_transfer(_batch(3), 0)["task"] == "asr"
    dm.train_sampler = SimpleNamespace(epoch=1)  # a new epoch starts the turn again
    assert dm.on_before_batch_transfer(_batch(3), 0)["task"] == "sed"
    # validation: every task's targets on the same batch, no turn taken, nothing counted
    dm.trainer = SimpleNamespace(training=False, validating=True, sanity_checking=False)
    val = dm.on_before_batch_transfer(_batch(3), 0)
    assert list(val["targets"]) == ["sed", "asr"] and "task" not in val and dm.consumed_batches() == 1
