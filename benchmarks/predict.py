"""``predict`` on a folder: utterances/s one file at a time vs duration-bucketed batches.

    python benchmarks/predict.py --model exported/demo data/synthcraft/audio/test \\
        [--n 200] [--batch-seconds 60] [--out benchmarks/results/predict.json]

The model is loaded once; then predict's own loop (``explainable_ser.batch.run``: header
probe, lhotse's duration-sorted batches, decoding, the per-class scores, one JSON line per
file) runs over the same files twice, ``--batch-seconds 0`` (batch 1) and bucketed, each
into its own output file. The JSON gives each mode's wall time, utterances/s and audio
seconds per second, the speed-up, and how far the two outputs agree (identical transcripts,
captions, emotions; the largest score difference: padding moves the last digits).
``--model`` takes an export (``python -m explainable_ser.export``); ``--ckpt`` a run's
checkpoint. Time it alone on the machine: the load average is recorded beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from explainable_ser.training import provenance


def agreement(a: list[dict], b: list[dict]) -> dict:
    """How far two predict outputs on the same files agree."""
    by_file = {r["file"]: r for r in b}
    pairs = [(r, by_file[r["file"]]) for r in a if r["file"] in by_file and "error" not in r]
    out = {"n_compared": len(pairs)}
    for k in ("transcript", "caption", "emotion"):
        out[f"identical_{k}"] = sum(x.get(k) == y.get(k) for x, y in pairs)
    diffs = [abs(x["emotion_scores"][lab] - y["emotion_scores"][lab]) for x, y in pairs for lab in x["emotion_scores"]]
    out["max_abs_score_diff"] = max(diffs, default=0.0)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    model = ap.add_mutually_exclusive_group(required=True)
    model.add_argument("--model", metavar="DIR")
    model.add_argument("--ckpt")
    ap.add_argument("inputs", nargs="+", help="audio files / folders (as predict takes them)")
    ap.add_argument("--n", type=int, default=200, help="the first N files found (default 200)")
    ap.add_argument("--batch-seconds", type=float, default=60.0, help="the bucketed mode's audio seconds per batch")
    ap.add_argument("--out", default="benchmarks/results/predict.json")
    ap.add_argument("--keep", metavar="DIR", help="keep both modes' JSON lines in DIR")
    args = ap.parse_args(argv)
    prov = provenance.start()
    import torch

    from explainable_ser.serving import batch
    from explainable_ser.serving.inference import probe_seconds

    files, missing = batch.collect(args.inputs)
    if missing or not files:
        raise SystemExit(f"error: {', '.join(missing) or ', '.join(args.inputs)}: not found or no audio")
    files = files[: args.n]
    seconds = {f: probe_seconds(f) for f in files}
    t0 = time.perf_counter()
    ser = batch.load(argparse.Namespace(model=args.model, ckpt=args.ckpt, device="cpu", overrides=[]))
    load_s = time.perf_counter() - t0
    ser.explain(ser.read(files[0]))  # warm-up: first-call allocations out of both timings
    res = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()},
        "args": vars(args),
        "n_files": len(files),
        "audio_seconds": round(sum(seconds.values()), 2),
        "load_seconds": round(load_s, 1),
        "modes": {},
    }
    outputs = {}
    keep = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_predict_"))
    keep.mkdir(parents=True, exist_ok=True)
    for name, bs in (("batch1", 0.0), ("bucketed", args.batch_seconds)):
        out = keep / f"{name}.jsonl"
        out.unlink(missing_ok=True)
        run_args = argparse.Namespace(out=str(out), no_progress=False, batch_seconds=bs)
        t0 = time.perf_counter()
        with open(out, "a", encoding="utf-8") as sink:
            rc = batch.run(ser, list(files), [], run_args, sink, None, None)
        wall = time.perf_counter() - t0
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        outputs[name] = rows
        n_ok = sum("error" not in r for r in rows)
        res["modes"][name] = {
            "batch_seconds": bs,
            "exit_status": rc,
            "n_explained": n_ok,
            "n_batches": len(list(batch.batches(files, seconds, bs))),
            "wall_seconds": round(wall, 1),
            "utt_per_s": round(n_ok / wall, 3),
            "audio_seconds_per_s": round(res["audio_seconds"] / wall, 3),
        }
    res["speedup_bucketed_vs_batch1"] = round(
        res["modes"]["bucketed"]["utt_per_s"] / res["modes"]["batch1"]["utt_per_s"], 2
    )
    res["agreement"] = agreement(outputs["batch1"], outputs["bucketed"])
    res["outputs"] = str(keep)
    res["provenance"] = provenance.finish(prov)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps({k: res[k] for k in ("modes", "speedup_bucketed_vs_batch1", "agreement")}, indent=2))
    print(f"-> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
