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
