"""The end-of-run summary: figures beside their chance levels and targets, in plain words."""

from __future__ import annotations

from pathlib import Path

from explainable_ser.config import load_config
from explainable_ser.evaluation.pipeline import summary_lines


def metrics(**overrides):
    m = {
        "n_utterances": 200,
        "ua": 0.52,
        "wa": 0.5,
        "macro_f1": 0.49,
        "n_unparsed": 3,
        "wer": 0.98,
        "attribute_accuracy": {"accuracy": {"gender": 0.98, "pitch": 0.5}, "mean": 0.74},
        "chance": {
            "ua": 0.25,
            "wa": 0.26,
            "wer": 1.0,
            "attribute_accuracy": {"accuracy": {"gender": 0.5, "pitch": 0.34}, "mean": 0.42},
        },
        "bleu4": 0.3,
        "meteor": 0.3,
        "rouge_l": 0.5,
        "cider": 1.2,
        "spice": None,
        "warnings": [],
        "counterfactual": {"descriptor": {"n": 200, "unparseable_rate": 1.0, "n_both_parsed": 0, "chance_ua": 0.25}},
    }
    m.update(overrides)
    return m


def test_summary_puts_chance_and_targets_beside_each_figure(tmp_path):
    cfg = load_config(["offline", "eval.targets={ua: 0.85, wer: 0.2}"])
    text = "\n".join(summary_lines(metrics(), cfg, tmp_path))
    assert "UA 0.520 (chance 0.25 with 4 classes; target >= 0.85: not met)" in text
    assert "WER 0.980" in text and "target <= 0.2: not met" in text and "not transcribing" in text
    assert "gender 0.98 (0.50), pitch 0.50 (0.34)" in text
    assert "breaks the output rather than changing the answer" in text
    assert str(Path(tmp_path) / "metrics.json") in text
    good = "\n".join(summary_lines(metrics(wer=0.1), cfg, tmp_path))
    assert "WER 0.100" in good and "target <= 0.2: met" in good and "not transcribing" not in good


def test_summary_without_targets_names_none():
    text = "\n".join(summary_lines(metrics(), load_config(["offline"]), Path("out")))
    assert "target" not in text


def test_one_sweep_decodes_like_separate_passes_and_encodes_each_batch_once(trained_run):
    import torch

    from explainable_ser.evaluation.decoding import (
        Pass,
        decode_batch,
        decode_passes,
        decode_precision,
    )
    from explainable_ser.training.assembly import load_trained

    run_dir, _ = trained_run
    cfg, dm, module, _ = load_trained(run_dir / "stage2" / "final.ckpt", [])
    loader = dm.eval_dataloaders("test_split", 1, 0)[0]
    passes = {
        "rows": Pass(["asr", "ser_sed"]),
        "descriptor": Pass(["ser_sed"], zero_descriptor=True),
        "content": Pass(["ser_sed"], zero_content=True),
    }
    model = module.model
    calls = []
    encode = model.encode
    model.encode = lambda *a, **k: calls.append(1) or encode(*a, **k)
    try:
        got = decode_passes(module, loader, cfg, passes, gather=False)
        n_batches = sum(1 for b in loader if b["ids"])
        assert len(calls) == n_batches  # one encoder call per batch for all three passes
        # the old way: every pass its own sweep, each generate() encoding the batch again
        for name, p in passes.items():
            want = []
            with torch.no_grad(), decode_precision(cfg, torch.device("cpu")):
                for batch in loader:
                    lens = batch["wave_lens"]
                    want += decode_batch(
                        model,
                        batch["wave"][:, : int(lens.max())],
                        lens,
                        batch["records"],
                        p.tasks,
                        cfg,
                        zero_descriptor=p.zero_descriptor,
                        zero_content=p.zero_content,
                    )
            assert got[name] == want
        assert len(calls) > 2 * n_batches  # the old way did encode again
    finally:
        model.encode = encode
