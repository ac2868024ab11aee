"""Evaluation's decoding with and without the frozen weights cast once, on a trained run.

    python benchmarks/eval_cost.py --ckpt runs/demo/stage2/final.ckpt [--limit 48] [--repeats 2]
        [--out benchmarks/results/eval_cost.json] [key=value ...]

Decodes the first ``--limit`` test clips exactly as evaluation does (``decode_passes``: the
run's ``eval.tasks`` plus its counterfactual passes), alternately as before (bf16 autocast
casting every frozen fp32 weight at each call) and as now (those weights cast once for the
sweep, :func:`explainable_ser.evaluation.decoding.frozen_weights_cast`), ``--repeats`` times each, in one
process so both see the same machine load. Writes seconds per variant, the speed-up of the
medians, and whether every decoded row is identical. For the whole test set's bytes, compare
``predictions.jsonl`` of a run with that of ``python -m explainable_ser.evaluate --ckpt ...``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from pathlib import Path

from explainable_ser.training import provenance


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", required=True, help="a trained run's checkpoint (bf16-mixed runs gain)")
    ap.add_argument("--limit", type=int, default=48, help="test clips decoded per timing (default 48)")
    ap.add_argument("--repeats", type=int, default=2, help="timings per variant, alternating (default 2)")
    ap.add_argument("--out", default="benchmarks/results/eval_cost.json")
    ap.add_argument("overrides", nargs="*", help="key=value overrides of the run's config")
    args = ap.parse_args(argv)

    from explainable_ser.evaluation import decoding
    from explainable_ser.evaluation.decoding import decode_passes
    from explainable_ser.evaluation.pipeline import eval_passes
    from explainable_ser.training.assembly import load_trained

    prov = provenance.start()
    cfg, dm, module, _ = load_trained(args.ckpt, list(args.overrides))
    loader = dm.eval_dataloaders("test_split", 1, 0)[0]
    passes = eval_passes(cfg, module.model)
    cast_once = decoding.frozen_weights_cast

    def sweep(variant: str):
        # "before": the cast is switched off, so autocast converts the weights at every call.
        decoding.frozen_weights_cast = cast_once if variant == "cast_once" else (lambda *a: contextlib.nullcontext())
        try:
            t0 = time.perf_counter()
            rows = decode_passes(module, loader, cfg, passes, limit=args.limit, gather=False, total=args.limit)
            return time.perf_counter() - t0, rows
        finally:
            decoding.frozen_weights_cast = cast_once

    seconds: dict[str, list[float]] = {"autocast_each_call": [], "cast_once": []}
    outputs: dict[str, dict] = {}
    for _ in range(args.repeats):
        for variant in seconds:
            dt, rows = sweep(variant)
            seconds[variant].append(round(dt, 2))
            outputs.setdefault(variant, rows)
            print(f"{variant}: {dt:.1f} s", flush=True)
    med = {k: statistics.median(v) for k, v in seconds.items()}
    res = {
        "checkpoint": args.ckpt,
        "precision": cfg.trainer.precision,
        "clips": args.limit,
        "passes": {k: p.tasks for k, p in passes.items()},
        "seconds": seconds,
        "median_seconds": med,
        "speedup": round(med["autocast_each_call"] / med["cast_once"], 3),
        "rows_identical": outputs["autocast_each_call"] == outputs["cast_once"],
        "n_rows": sum(len(r) for r in outputs["cast_once"].values()),
        "provenance": provenance.finish(prov),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))
    print(json.dumps({k: res[k] for k in ("median_seconds", "speedup", "rows_identical", "n_rows")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
