"""Data pipeline benchmark: SynthCraft generation, decode + resample speed, padding efficiency.

    python benchmarks/data.py [--out benchmarks/results/data.json] [--n-train 2000]

Measured in one run, so the ratios compare like with like on this (shared, noisy) machine:

* ``generation``: SynthCraft clips/s and seconds for the requested size
* ``decode``: audio decode (+ soxr resample for non-16 kHz input) in x real time per core
* ``padding``: padding efficiency (real / padded samples) of bucketed vs random batches, on
  SynthCraft and on SpeechCraft-like durations (GigaSpeech segments, 1 to 20 s, long-tailed)
* ``loader``: collated batches/s and seconds of audio per second through the data module
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import tempfile
import time
from pathlib import Path

import soxr
from lhotse import CutSet

from data_modules.batches import SpeechBatchDataset
from data_modules.config import DataConfig
from data_modules.records import make_cut, manifest_path
from data_modules.streaming import build_sampler
from data_modules.synthcraft import generate
from explainable_ser.training import provenance


def padding(cuts: CutSet, cfg: DataConfig) -> dict:
    real = padded = 0.0
    batches = 0
    for batch in build_sampler(cuts, cfg, train=True):
        d = [c.duration for c in batch]
        real, padded, batches = real + sum(d), padded + max(d) * len(d), batches + 1
    return {"efficiency": real / padded, "batches": batches}


def speechcraft_like(n: int, seed: int = 0) -> CutSet:
    """Durations shaped like GigaSpeech segments (log-normal, median ~3.5 s, 1 to 20 s)."""
    rng = random.Random(seed)
    cuts = []
    for i in range(n):
        dur = min(20.0, max(1.0, rng.lognormvariate(1.25, 0.6)))
        cuts.append(
            make_cut(
                f"sc-{i}", "/none.flac", sampling_rate=16000, num_samples=int(dur * 16000), corpus="fake", split="train"
            )
        )
    return CutSet.from_cuts(cuts)


def decode_speed(cuts: CutSet, seconds_limit: float = 20.0) -> dict:
    """Single-process decode (+ resample from 24 kHz) speed, in x real time per core."""
    audio_s = wall = 0.0
    out = {}
    for label, rate in (("flac_16k", None), ("flac_24k_resampled", 24000)):
        audio_s = wall = 0.0
        for cut in cuts:
            t0 = time.perf_counter()
            a = cut.load_audio()[0]
            if rate is not None:  # simulate a 24 kHz corpus (EMOSEC) going to 16 kHz
                a = soxr.resample(soxr.resample(a, 16000, rate), rate, 16000)
            wall += time.perf_counter() - t0
            audio_s += cut.duration
            if wall > seconds_limit:
                break
        out[label] = {"x_real_time_per_core": audio_s / wall, "audio_seconds": audio_s}
    return out


def loader_speed(cuts: CutSet, cfg: DataConfig, max_batches: int = 60) -> dict:
    ds = SpeechBatchDataset(cfg)
    sampler = build_sampler(cuts, cfg, train=True)
    t0 = time.perf_counter()
    n = audio = 0.0
    for i, batch_cuts in enumerate(sampler):
        batch = ds[batch_cuts]
        audio += float(batch["wave_lens"].sum()) / cfg.sampling_rate
        n += 1
        if i + 1 >= max_batches:
            break
    wall = time.perf_counter() - t0
    return {"batches_per_s": n / wall, "audio_seconds_per_s": audio / wall, "batches": n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="benchmarks/results/data.json")
    ap.add_argument("--n-train", type=int, default=2000)
    ap.add_argument("--data-dir", default=None, help="reuse/generate SynthCraft here (default: temp dir)")
    args = ap.parse_args()
    prov = provenance.start()
    res: dict = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count()}}
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = Path(args.data_dir or tmp)
        t0 = time.perf_counter()
        generate(out_dir, n_train=args.n_train, n_dev=200, n_test=200, seed=0, progress=False)
        gen_s = time.perf_counter() - t0
        n = args.n_train + 400
        res["generation"] = {"clips": n, "seconds": gen_s, "clips_per_s": n / gen_s}
        train = CutSet.from_file(manifest_path(out_dir, "synthcraft", "train")).to_eager()
        res["decode"] = decode_speed(train)
        res["padding"] = {}
        for name, cuts, max_dur in (("synthcraft", train, 60.0), ("speechcraft_like", speechcraft_like(20000), 200.0)):
            bucketed = padding(cuts, DataConfig(max_duration=max_dur, bucketing=True, num_buckets=30))
            rand = padding(cuts, DataConfig(max_duration=max_dur, bucketing=False))
            res["padding"][name] = {
                "bucketed": bucketed,
                "random": rand,
                "ratio": bucketed["efficiency"] / rand["efficiency"],
            }
        res["loader"] = loader_speed(train, DataConfig(max_duration=60.0))
    res["provenance"] = provenance.finish(prov)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
