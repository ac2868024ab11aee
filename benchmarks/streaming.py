"""Streaming at scale: memory and rate of the training pipeline from 10,000 to 200,000 utterances.

    python benchmarks/streaming.py [--quick] [--out benchmarks/results/streaming.json]

What it does, in order:

1. **Audio**: a handful of real 20.5 s FLAC files, each the concatenation of SynthCraft clips
   (``data/synthcraft``, generated on first use), so decoding costs what speech costs.
2. **Manifests**: synthetic corpora of ``--sizes`` utterances (default 10,000 and 200,000), each
   cut a segment of one of those files, with SpeechCraft-like durations (log-normal, median
   3.5 s, clipped to 1 to 20 s). Written as a JSONL manifest and as Lhotse Shar *by reference*
   (``to_shar(fields={})``: the shards hold only ``cuts.*.jsonl.gz``, whose recordings point at
   the files; 200,000 utterances with the audio inside would be ~230 h, tens of GB of FLAC).
   Shar *with audio* (``fields={"recording": "flac"}``, as ``prepare --shar`` writes) is measured
   on a small corpus (``--shar-audio-size``), for its rate and the cost of audio held in buffers.
3. **Pipeline**: every (format, size) runs in a fresh subprocess so no two runs share memory:
   ``SpeechDataModule.train_dataloader()`` (bucketed, ``num_workers`` workers, audio decoded and
   collated) is iterated for a full epoch, while a thread samples the resident memory of the
   training process (RSS) and of the workers (USS, memory unique to each worker, so pages shared
   with the parent are not counted twice). Then ``train_batches_per_epoch()`` (the metadata-only
   counting pass) is timed.
4. **Training step**: the default model (``model.encoder.kind=fbank``), built by
   ``explainable_ser.training.assembly.build`` in a temporary run directory, runs forward + backward + AdamW on
   SynthCraft batches of the same data module (the last stage's trainable groups and task
   alternation); utterances/s and seconds of audio/s over ``--steps`` steps after 2 warm-up steps.

The rate ratio is pipeline / training step, in utterances/s and in audio seconds/s. The machine is
shared (2 cores; load average recorded): the pipeline and the step are measured in turn, not
concurrently, so neither competes with the other here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from explainable_ser.training import provenance  # noqa: E402

SR = 16000
SOURCE_SECONDS = 20.5
CORPUS = "stream"
MB = 1024 * 1024


# -- data ------------------------------------------------------------------------------------
def make_sources(out: Path, n_files: int, synthcraft_dir: Path) -> list[dict]:
    """``n_files`` FLAC files of ``SOURCE_SECONDS`` s: SynthCraft clips back to back."""
    import numpy as np
    import soundfile as sf

    from data_modules.synthcraft import ensure_synthcraft

    ensure_synthcraft(str(synthcraft_dir))
    clips = sorted((synthcraft_dir / "audio" / "train").glob("*.flac"))
    out.mkdir(parents=True, exist_ok=True)
    sources, k = [], 0
    for i in range(n_files):
        parts, n = [], 0
        while n < SOURCE_SECONDS * SR:
            audio, sr = sf.read(clips[k % len(clips)], dtype="float32")
            assert sr == SR
            parts.append(audio)
            n += audio.shape[0]
            k += 1
        audio = np.concatenate(parts)[: int(SOURCE_SECONDS * SR)]
        path = out / f"source{i}.flac"
        sf.write(path, audio, SR)
        sources.append({"path": str(path), "num_samples": int(audio.shape[0])})
    return sources


def speechcraft_duration(rng: random.Random) -> float:
    return round(min(20.0, max(1.0, rng.lognormvariate(1.25, 0.6))), 3)


def write_manifest(path: Path, n: int, sources: list[dict], seed: int = 0) -> dict:
    """Stream ``n`` cuts into a JSONL manifest (never all in memory)."""
    from lhotse import CutSet

    from data_modules.records import make_cut

    rng = random.Random(seed)
    total = 0.0
    path.parent.mkdir(parents=True, exist_ok=True)
    with CutSet.open_writer(path) as writer:
        for i in range(n):
            dur = speechcraft_duration(rng)
            k = rng.randrange(len(sources))
            src = sources[k]
            start = round(rng.uniform(0.0, SOURCE_SECONDS - dur - 0.01), 3)
            writer.write(
                make_cut(
                    f"{CORPUS}-{i:07d}",
                    src["path"],
                    sampling_rate=SR,
                    num_samples=src["num_samples"],
                    corpus=CORPUS,
                    split="train",
                    transcript="the boat sang",
                    emotion="neutral",
                    caption="A speaker talks.",
                    start=start,
                    duration=dur,
                    recording_id=f"source{k}",
                )
            )
            total += dur
    return {"utterances": n, "hours": total / 3600.0, "mean_seconds": total / n}


def write_shar(manifest: Path, out: Path, with_audio: bool, shard_size: int) -> dict:
    import warnings

    from lhotse import CutSet

    out.mkdir(parents=True, exist_ok=True)
    fields = {"recording": "flac"} if with_audio else {}
    with warnings.catch_warnings():  # "recording not specified for Shar writing": intended
        warnings.simplefilter("ignore", UserWarning)
        CutSet.from_file(manifest).to_shar(out, fields=fields, shard_size=shard_size)
    files = list(out.iterdir())
    return {
        "shards": len([f for f in files if f.name.startswith("cuts.")]),
        "bytes": sum(f.stat().st_size for f in files),
    }


# -- one measured pipeline run (child process) -------------------------------------------------
class MemorySampler(threading.Thread):
    """Peaks of the training process RSS and of the workers' USS, sampled every ``period`` s."""

    def __init__(self, period: float = 0.25):
        super().__init__(daemon=True)
        import psutil

        self.proc = psutil.Process()
        self.period = period
        self.stop_event = threading.Event()
        self.peak_main = self.peak_total = self.peak_workers = 0
        self.samples = 0

    def sample(self) -> None:
        import psutil

        main = self.proc.memory_info().rss
        workers = 0
        for child in self.proc.children(recursive=True):
            try:
                workers += child.memory_full_info().uss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        self.peak_main = max(self.peak_main, main)
        self.peak_workers = max(self.peak_workers, workers)
        self.peak_total = max(self.peak_total, main + workers)
        self.samples += 1

    def run(self) -> None:
        while not self.stop_event.wait(self.period):
            self.sample()

    def stop(self) -> None:
        self.stop_event.set()
        self.join()
        self.sample()


def child(spec: dict) -> dict:
    import psutil
    import torch

    from data_modules.datamodule import CorpusSpec, DataConfig, SpeechDataModule
    from data_modules.streaming import resolved_buffer_size

    torch.set_num_threads(1)
    proc = psutil.Process()
    cfg = DataConfig(
        corpora=[CorpusSpec(name=CORPUS, dir=spec["dir"], format=spec["format"], val_split=None, test_split=None)],
        num_workers=spec["num_workers"],
        max_duration=spec["max_duration"],
        max_clip_seconds=30.0,
    )
    rss_start = proc.memory_info().rss
    mem = MemorySampler()
    mem.sample()
    mem.start()
    dm = SpeechDataModule(cfg)
    t0 = time.perf_counter()
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(0)
    t_first = None
    batches = utts = skipped = 0
    audio = 0.0
    for batch in loader:
        if t_first is None:
            t_first = time.perf_counter() - t0
        batches += 1
        utts += len(batch["ids"])
        skipped += len(batch["skipped"])
        audio += float(batch["wave_lens"].sum()) / cfg.sampling_rate
        if spec.get("max_batches") and batches >= spec["max_batches"]:
            break
    wall = time.perf_counter() - t0
    del loader
    mem.stop()
    t1 = time.perf_counter()
    counted = dm.train_batches_per_epoch()
    count_s = time.perf_counter() - t1
    return {
        "format": spec["format"],
        "num_workers": spec["num_workers"],
        "buffer_size": resolved_buffer_size(cfg),
        "batches": batches,
        "utterances": utts,
        "skipped": skipped,
        "audio_seconds": audio,
        "wall_s": wall,
        "first_batch_s": t_first,
        "utterances_per_s": utts / wall,
        "audio_seconds_per_s": audio / wall,
        "rss_start_mb": rss_start / MB,
        "peak_main_rss_mb": mem.peak_main / MB,
        "peak_workers_uss_mb": mem.peak_workers / MB,
        "peak_total_mb": mem.peak_total / MB,
        "memory_samples": mem.samples,
        "count_pass": {
            "batches": counted,
            "seconds": count_s,
            "cuts_per_s": spec["n"] / count_s if count_s > 0 else None,
            "matches_epoch": counted == batches,
        },
    }


def run_child(spec: dict) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)], cwd=REPO, capture_output=True, text=True
    )
    if out.returncode != 0:
        raise RuntimeError(f"child failed for {spec}:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- training step ------------------------------------------------------------------------------
def train_step_rate(steps: int, run_dir: Path) -> dict:
    import torch

    from explainable_ser.config import load_config
    from explainable_ser.training.assembly import build
    from explainable_ser.training.preparation import prepare
    from explainable_ser.training.stages import apply_trainable

    cfg = load_config(["offline", "model.encoder.kind=fbank", "eval.run_after_fit=false"])
    cfg.run_dir = str(run_dir)
    torch.manual_seed(0)
    dm, module = build(cfg, run_dir, prepare(cfg, run_dir))
    stage = cfg.training.stages[-1]
    module.set_stage(stage, steps)
    apply_trainable(module.model, list(stage.trainable))
    module.train()
    opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-4)
    it = iter(dm.train_dataloader())
    batches = [next(it) for _ in range(steps + 2)]
    utts = 0
    audio = 0.0
    t0 = None
    for i, batch in enumerate(batches):
        if i == 2:  # two warm-up steps
            t0 = time.perf_counter()
        task = stage.tasks[i % len(stage.tasks)]  # the alternation the data module applies in training
        res = module._losses(dm.with_targets(batch, [task]), task, train=True)
        opt.zero_grad()
        res["loss"].backward()
        opt.step()
        if i >= 2:
            utts += len(batch["ids"])
            audio += float(batch["wave_lens"].sum()) / cfg.data.sampling_rate
    wall = time.perf_counter() - t0
    return {
        "steps": steps,
        "stage": stage.name,
        "tasks": list(stage.tasks),
        "utterances": utts,
        "audio_seconds": audio,
        "wall_s": wall,
        "utterances_per_s": utts / wall,
        "audio_seconds_per_s": audio / wall,
        "steps_per_s": steps / wall,
        "torch_threads": torch.get_num_threads(),
        "max_duration": cfg.data.max_duration,
    }


# -- main -------------------------------------------------------------------------------------
def machine() -> dict:
    import lhotse
    import psutil
    import torch

    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "memory_gb": psutil.virtual_memory().total / 1024**3,
        "load_average_1_5_15": list(os.getloadavg()),
        "torch": torch.__version__,
        "lhotse": lhotse.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "streaming.json"))
    ap.add_argument(
        "--quick", action="store_true", help="small run: 1,000 and 10,000 utterances, 300 with Shar audio, 4 steps"
    )
    ap.add_argument("--sizes", type=int, nargs=2, default=None)
    ap.add_argument("--shar-audio-size", type=int, default=None)
    ap.add_argument("--num-workers", type=int, default=2)
    ap.add_argument("--max-duration", type=float, default=30.0)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--work-dir", default=None, help="keep generated data here (default: temp)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0

    sizes = args.sizes or ([1000, 10000] if args.quick else [10000, 200000])
    shar_audio_n = args.shar_audio_size or (300 if args.quick else 3000)
    steps = args.steps or (4 if args.quick else 10)
    prov = provenance.start(" ".join(["python", "benchmarks/streaming.py", *(argv or sys.argv[1:])]))
    result: dict = {"command": prov["command"], "machine": machine(), "quick": args.quick}
    tmp = tempfile.TemporaryDirectory(prefix="streaming-bench-") if args.work_dir is None else None
    work = Path(args.work_dir or tmp.name)
    try:
        t0 = time.perf_counter()
        sources = make_sources(work / "audio", 6, REPO / "data" / "synthcraft")
        corpora: dict[str, dict] = {}
        for n in sizes + [shar_audio_n]:
            d = work / f"n{n}"
            info = write_manifest(d / f"{CORPUS}_cuts_train.jsonl.gz", n, sources)
            if n in sizes:
                info["shar_reference"] = write_shar(
                    d / f"{CORPUS}_cuts_train.jsonl.gz", d / "shar" / "train", False, 5000
                )
            corpora[str(n)] = {"dir": str(d), **info}
        da = work / "shar_audio"
        (da / "shar").mkdir(parents=True, exist_ok=True)
        corpora["shar_audio"] = {
            "dir": str(da),
            "utterances": shar_audio_n,
            **write_shar(
                work / f"n{shar_audio_n}" / f"{CORPUS}_cuts_train.jsonl.gz", da / "shar" / "train", True, 1000
            ),
        }
        result["data"] = {
            "sources": len(sources),
            "source_seconds": SOURCE_SECONDS,
            "corpora": {k: {kk: vv for kk, vv in v.items() if kk != "dir"} for k, v in corpora.items()},
            "generation_s": time.perf_counter() - t0,
        }
        print(f"data ready in {result['data']['generation_s']:.0f} s", flush=True)

        runs: dict[str, dict] = {"jsonl": {}, "shar_reference": {}, "shar_audio": {}}
        common = {"num_workers": args.num_workers, "max_duration": args.max_duration}
        for n in sizes:
            for fmt, key in (("jsonl", "jsonl"), ("shar", "shar_reference")):
                r = run_child({"dir": corpora[str(n)]["dir"], "format": fmt, "n": n, **common})
                runs[key][str(n)] = r
                print(
                    f"{key:15s} {n:7d} utts: {r['utterances_per_s']:8.0f} utt/s "
                    f"{r['audio_seconds_per_s']:9.0f} audio s/s  peak RSS main "
                    f"{r['peak_main_rss_mb']:.0f} MB, +workers {r['peak_total_mb']:.0f} MB",
                    flush=True,
                )
        r = run_child({"dir": corpora["shar_audio"]["dir"], "format": "shar", "n": shar_audio_n, **common})
        runs["shar_audio"][str(shar_audio_n)] = r
        print(
            f"{'shar_audio':15s} {shar_audio_n:7d} utts: {r['utterances_per_s']:8.0f} utt/s "
            f"{r['audio_seconds_per_s']:9.0f} audio s/s  peak RSS main "
            f"{r['peak_main_rss_mb']:.0f} MB",
            flush=True,
        )
        result["pipeline"] = runs
        small, large = (str(s) for s in sizes)
        result["memory_growth_mb"] = {
            key: {
                "main_rss": runs[key][large]["peak_main_rss_mb"] - runs[key][small]["peak_main_rss_mb"],
                "main_plus_workers": runs[key][large]["peak_total_mb"] - runs[key][small]["peak_total_mb"],
                "from": int(small),
                "to": int(large),
            }
            for key in ("jsonl", "shar_reference")
        }
        shar_audio_bytes = corpora["shar_audio"]["bytes"] / shar_audio_n
        result["shar_audio_buffer_estimate_mb"] = {
            "mean_bytes_per_cut_in_shards": shar_audio_bytes,
            "buffer_size": runs["shar_audio"][str(shar_audio_n)]["buffer_size"],
            "bound_mb": shar_audio_bytes * runs["shar_audio"][str(shar_audio_n)]["buffer_size"] / MB,
        }

        with tempfile.TemporaryDirectory(prefix="streaming-step-") as run_dir:
            step = train_step_rate(steps, Path(run_dir))
        result["train_step"] = step
        print(
            f"training step: {step['utterances_per_s']:.2f} utt/s, {step['audio_seconds_per_s']:.2f} audio s/s",
            flush=True,
        )
        result["rate_ratio"] = {
            key: {
                "utterances": runs[key][large]["utterances_per_s"] / step["utterances_per_s"],
                "audio_seconds": runs[key][large]["audio_seconds_per_s"] / step["audio_seconds_per_s"],
            }
            for key in ("jsonl", "shar_reference")
        }
        result["rate_ratio"]["shar_audio"] = {
            "utterances": runs["shar_audio"][str(shar_audio_n)]["utterances_per_s"] / step["utterances_per_s"],
            "audio_seconds": runs["shar_audio"][str(shar_audio_n)]["audio_seconds_per_s"] / step["audio_seconds_per_s"],
        }
        growth = max(max(v["main_rss"], v["main_plus_workers"]) for v in result["memory_growth_mb"].values())
        ratio = min(min(v.values()) for v in result["rate_ratio"].values())
        result["targets"] = {
            "memory_growth_mb_lt": 200,
            "worst_memory_growth_mb": growth,
            "rate_ratio_gt": 20,
            "worst_rate_ratio": ratio,
            "met": growth < 200 and ratio > 20,
        }
    finally:
        if tmp is not None:
            tmp.cleanup()
    result["provenance"] = provenance.finish(prov)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    t = result["targets"]
    print(
        f"memory growth {sizes[0]} -> {sizes[1]} utterances: worst {t['worst_memory_growth_mb']:.0f} MB "
        f"(target < 200); pipeline / training step: worst {t['worst_rate_ratio']:.0f}x "
        f"(target > 20); met: {t['met']}"
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
