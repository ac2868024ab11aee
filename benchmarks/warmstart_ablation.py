"""The descriptor warm start's levers, one at a time: what its speech tokens spell.

    python benchmarks/warmstart_ablation.py [CONFIG ...] [--out benchmarks/results/warmstart_ablation.json]

Builds the demo's model (``demo`` unless configs are given), encodes the training and dev
clips once, then warm-starts the descriptor branch under each variant (statistics pooling
``model.branch.utterance_context``, the field heads ``training.warm_start.field_weight``, the
number of passes, a word of its own per value ``training.warm_start.value_words``) from the same
initial weights, and reports for each the dev accuracy of
every field in the greedy CTC decode (``dev_field_accuracy``; the rung just before the LLM)
and of the field heads where they exist. Seconds are each variant's training time with the
encoder outputs cached.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from explainable_ser.config import load_config
from explainable_ser.offline.warmstart import warm_start
from explainable_ser.training import provenance
from explainable_ser.training.assembly import build
from explainable_ser.training.preparation import prepare

V = dict(context=False, field_weight=0.0, epochs=5, value_words=False)
VARIANTS = {
    "paper block, 5 passes (the earlier demo)": V,
    "+ utterance context": {**V, "context": True},
    "+ utterance context, 15 passes": {**V, "context": True, "epochs": 15},
    "+ field heads, 15 passes (no context)": {**V, "field_weight": 1.0, "epochs": 15},
    "+ utterance context + field heads, 5 passes": {**V, "context": True, "field_weight": 1.0},
    "+ utterance context + field heads, 15 passes": {**V, "context": True, "field_weight": 1.0, "epochs": 15},
    "+ utterance context + field heads, 25 passes": {**V, "context": True, "field_weight": 1.0, "epochs": 25},
    "+ utterance context + field heads, 25 passes + value words (the demo)": {
        **V,
        "context": True,
        "field_weight": 1.0,
        "epochs": 25,
        "value_words": True,
    },
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="*", default=["demo"], help="config and overrides (default: demo)")
    parser.add_argument("--out", default="benchmarks/results/warmstart_ablation.json")
    parser.add_argument("--only", nargs="*", default=None, help="variant names to run (default: all)")
    args = parser.parse_args(argv)
    info = provenance.start(" ".join(["python", "benchmarks/warmstart_ablation.py", *(argv or sys.argv[1:])]))
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        cache: dict = {}
        train = dev = None
        for name, v in VARIANTS.items():
            if args.only and name not in args.only:
                continue
            ctx = (
                ["model.branch.utterance_context=[descriptor]"]
                if v["context"]
                else ["model.branch.utterance_context=[]"]
            )
            cfg = load_config([*args.configs, f"run_dir={tmp}/run", *ctx])
            dm, module = build(
                cfg, Path(tmp) / "run", prepare(cfg, Path(tmp) / "run")
            )  # the same seed: the same initial weights
            if train is None:
                train, _ = dm.usable_clips("train_split")
                dev, _ = dm.usable_clips("val_split")
            ws = cfg.training.warm_start
            start = time.perf_counter()
            rep = warm_start(
                module.model,
                "descriptor",
                train,
                dev,
                module.model.tokenizer,
                fields=list(ws.descriptor_fields),
                epochs=v["epochs"],
                lr=ws.lr,
                batch_size=ws.batch_size,
                scale=ws.scale,
                norm_weight=ws.norm_weight,
                seed=cfg.seed,
                progress=True,
                cache=cache,
                field_weight=v["field_weight"],
                value_words=dict(ws.value_words) if v["value_words"] else None,
            )
            results[name] = {
                **v,
                "dev_error_rate": rep["dev_error_rate"],
                "dev_field_accuracy": rep["dev_field_accuracy"],
                "dev_field_head_accuracy": rep["dev_field_head_accuracy"],
                "seconds": round(time.perf_counter() - start, 1),
            }
            print(name, json.dumps(results[name]), flush=True)
            del module, dm  # the cached encoder outputs stay for the next variant
    out = {
        **provenance.finish(info),
        "configs": args.configs,
        "n_train": len(train or []),
        "n_dev": len(dev or []),
        "variants": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out} (load average now {os.getloadavg()[0]:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
