"""Preparation: what an experiment's data side needs before its model is built, done once,
in the open, by the recipe (and by ``evaluate`` on a fresh machine):

* the built-in corpus (SynthCraft) generated where its manifests are absent;
* record fields no corpus reader writes (rationales) checked, with the command that makes them;
* an offline CTC encoder (``model.encoder.kind: ctc_fbank``) trained once into the run directory.
"""

from __future__ import annotations

from pathlib import Path

from data_modules.datamodule import SpeechDataModule
from data_modules.records import manifest_path, record_of
from explainable_ser.config import ConfigError, ExperimentConfig
from explainable_ser.model.prompts import get_task
from explainable_ser.offline import prepare_builtin_corpora
from explainable_ser.offline.fbank import ensure_ctc_encoder


def prepare(cfg: ExperimentConfig, run_dir: Path) -> SpeechDataModule:
    """The experiment's data module with its corpora ready (see the module's list)."""

    dm = SpeechDataModule(cfg.data)
    check_made_fields(cfg, dm, before_generation=True)
    prepare_builtin_corpora(cfg.data)
    check_made_fields(cfg, dm)
    ensure_ctc_encoder(cfg, dm, run_dir / "offline_models" / "encoder")
    return dm


MADE_FIELDS = {
    "rationale": "python -m data_modules.rationales --source evidence --manifest {dir}/{name}_cuts_{split}.jsonl.gz "
    "--out RATIONALE_DIR/{name}_cuts_{split}.jsonl.gz"
}
"""Record fields no corpus reader writes, and the command that adds them to a manifest."""


def check_made_fields(cfg: ExperimentConfig, dm, before_generation: bool = False, peek: int = 200) -> None:
    """A training task that needs a made field (a rationale) must find it in the training
    records: a run that would skip every such target is refused at once, with the command
    that writes the field (instead of a built-in corpus generated anew without it)."""
    needed = {f for st in cfg.training.stages for t in st.tasks for f in get_task(t).fields if f in MADE_FIELDS}
    train = [spec for spec in cfg.data.corpora if spec.train_split is not None]
    for field in sorted(needed):
        spec = train[0] if train else None
        if spec is None:
            return
        how = MADE_FIELDS[field].format(
            dir="data/synthcraft" if spec.name == "synthcraft" else spec.dir, name=spec.name, split=spec.train_split
        )
        if before_generation:
            for spec in train:
                if spec.name == "synthcraft" and not manifest_path(spec.dir, spec.name, spec.train_split).exists():
                    raise ConfigError(
                        f"corpus {spec.name} in {spec.dir}: no manifest, and the training "
                        f"tasks need the '{field}' field, which generation does not write: "
                        f"make it with `{how}` (RATIONALE_DIR = {spec.dir})"
                    )
            continue
        cuts = dm.split_cuts("train_split", metadata_only=True)
        if not any(record_of(c).get(field) for _, split in cuts for c in split.subset(first=peek)):
            raise ConfigError(
                f"training tasks need the record field '{field}', and none of the "
                f"first {peek} training records of each corpus has it: make it with `{how}`"
            )
