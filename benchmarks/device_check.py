"""The prepared check for a lent GPU: three parts, each on its own, JSON out (run by
``benchmarks/device_check.sh``, which first installs the carried wheels).

    python benchmarks/device_check.py --out $OUT            # on the GPU machine (within 8 min)
    python benchmarks/device_check.py --out /tmp/dc --dry-run   # tiny shapes on CPU

1. ``train_step.json``: ``benchmarks/train_step.py`` at full size (HuBERT-large +
   Llama-3.1-8B-Instruct shapes, random weights, bf16, batch 8 x 10 s, 2 warm-up + 5 timed
   steps): the project's configuration with and without gradient checkpointing, the library-
   defaults baseline, and the baseline plus one project feature at a time.
2. ``decode.json``: ``benchmarks/decode.py --size full`` on CUDA (random weights, every
   utterance generating the same number of new tokens), batched vs batch-1.
3. ``fit.json``: ``python -m explainable_ser.fit`` end to end through Lightning with
   ``bf16-mixed`` on one GPU (DDP off), the tiny offline stack on a small SynthCraft corpus made
   on the spot; its ``metrics.json`` and ``timings.json`` are copied in (the run directory
   itself stays outside ``--out``).

A part that fails writes its error into its JSON and the next part runs. ``summary.json`` holds
the headline of each and the seconds per part; ``log.txt`` all output. At most 6 files.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Time limits per part (s): 470 in all, so the whole check ends within 8 minutes, leaving a
# lent machine's 15 minutes room to read it, fix and run it again.
TRAIN_STEP_S, DECODE_S, PREP_S, FIT_S = 270, 80, 45, 75


def run_cmd(cmd: list[str], log, timeout: int) -> tuple[int | None, str]:
    """(exit code or None on timeout, stderr). The command runs in its own process group, and
    a timeout kills the whole group: a benchmark's child processes must not keep the GPU."""
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=timeout)
        return proc.returncode, err
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        return None, (err or "") + f"\ntimed out after {timeout} s"


def run_part(name: str, cmd: list[str], out_json: Path, log, timeout: int, writes_json: bool = True) -> dict:
    """Run one part; on failure (exit code, timeout, missing JSON) write the error into its JSON.
    ``writes_json=False``: a step that writes no JSON of its own (only failures are written)."""
    print(f"[device_check] {name}: {' '.join(cmd)}", file=log, flush=True)
    start = time.time()
    rc, err = run_cmd(cmd, log, timeout)
    log.write(err)
    log.flush()
    seconds = round(time.time() - start, 1)
    if rc == 0 and not writes_json:
        return {"part_seconds": seconds}
    if rc == 0 and out_json.exists():
        res = json.loads(out_json.read_text())
    else:  # what the part wrote before it failed (a partial JSON) is kept beside the error
        tail = [line for line in err.strip().splitlines() if line.strip()][-6:]
        res = json.loads(out_json.read_text()) if out_json.exists() and writes_json else {}
        res.update(failed=f"exit {rc}" if rc is not None else "timeout", error=tail)
    res["part_seconds"] = seconds
    out_json.write_text(json.dumps(res, indent=2))
    print(f"[device_check] {name}: {'failed' if 'failed' in res else 'ok'} in {seconds} s", flush=True)
    return res


def fit_part(out: Path, dry: bool, log) -> dict:
    """A small corpus and a short run through Lightning; the run directory is a temporary one."""
    target = out / "fit.json"
    with tempfile.TemporaryDirectory() as tmp:
        data, run_dir = Path(tmp) / "synthcraft", Path(tmp) / "run"
        n = (
            ["--n-train", "8", "--n-dev", "2", "--n-test", "2"]
            if dry
            else ["--n-train", "64", "--n-dev", "8", "--n-test", "16"]
        )
        prep = run_part(
            "fit/prepare",
            [sys.executable, "-m", "data_modules.prepare", "synthcraft", "--out", str(data), *n, "--no-progress"],
            target,
            log,
            PREP_S,
            writes_json=False,
        )
        if "failed" in prep:
            prep["failed"] = "corpus preparation: " + prep["failed"]
            target.write_text(json.dumps(prep, indent=2))
            return prep
        args = [
            "offline",
            f"data.corpora.0.dir={data}",
            "data.num_buckets=2",
            f"run_dir={run_dir}",
            "trainer.precision=" + ("32-true" if dry else "bf16-mixed"),
            "trainer.devices=1",
            "trainer.enable_progress_bar=false",
            "eval.max_new_tokens=" + ("4" if dry else "32"),
        ]
        if dry:
            args += [
                "trainer.accelerator=cpu",
                "training.stages.0.max_steps=1",
                "training.stages.1.max_steps=1",
                "training.stages.0.epochs=1",
                "training.stages.1.epochs=1",
                "eval.limit=2",
                "model.llm.hf_config.num_hidden_layers=1",
                "model.llm.hf_config.hidden_size=32",
                "model.llm.hf_config.intermediate_size=32",
                "model.llm.hf_config.num_attention_heads=2",
                "model.llm.hf_config.num_key_value_heads=1",
            ]
        else:
            args += ["trainer.accelerator=gpu", "training.stages.0.max_steps=40", "training.stages.1.max_steps=40"]
        start = time.time()
        rc, err = run_cmd([sys.executable, "-m", "explainable_ser.fit", *args], log, FIT_S)
        log.write(err)
        res: dict = {
            "command": "python -m explainable_ser.fit " + " ".join(args),
            "seconds": round(time.time() - start, 1),
        }
        if rc != 0 or not (run_dir / "metrics.json").exists():
            res.update(failed=f"exit {rc}" if rc is not None else "timeout", error=err.strip().splitlines()[-6:])
        else:
            res["metrics"] = json.loads((run_dir / "metrics.json").read_text())
            res["timings"] = json.loads((run_dir / "timings.json").read_text())
    target.write_text(json.dumps(res, indent=2))
    print(f"[device_check] fit: {'failed' if 'failed' in res else 'ok'} in {res['seconds']} s", flush=True)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="results folder ($OUT on the GPU machine)")
    ap.add_argument(
        "--dry-run", action="store_true", help="tiny shapes on CPU: every part runs, nothing is timed seriously"
    )
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    if args.dry_run:  # a shared 2-core CPU is slower than the GPU machine at tiny shapes too
        global TRAIN_STEP_S, DECODE_S, PREP_S, FIT_S
        TRAIN_STEP_S, DECODE_S, PREP_S, FIT_S = (4 * t for t in (TRAIN_STEP_S, DECODE_S, PREP_S, FIT_S))
    if args.dry_run:
        ts = [
            "--size",
            "tiny",
            "--cpu",
            "--steps",
            "1",
            "--warmup",
            "0",
            "--matmul-n",
            "256",
            "--configs",
            "project,baseline,baseline+bucketing",
        ]
        dec = ["--size", "tiny", "--cpu", "--n", "2", "--batch", "2", "--max-new-tokens", "4"]
    else:
        # the most telling first: a part stopped by its time limit keeps what it measured
        ts = [
            "--size",
            "full",
            "--steps",
            "5",
            "--warmup",
            "2",
            "--configs",
            "project,baseline,project_ckpt,baseline+target_logits,baseline+bucketing,"
            "baseline+bf16_encoder,baseline+fused_adamw",
        ]
        dec = ["--size", "full", "--n", "16", "--batch", "16", "--max-new-tokens", "32"]
    start = time.time()
    parts: dict = {}
    with open(out / "log.txt", "w", encoding="utf-8") as log:
        parts["train_step"] = run_part(
            "train_step",
            [py, "benchmarks/train_step.py", *ts, "--out", str(out / "train_step.json")],
            out / "train_step.json",
            log,
            TRAIN_STEP_S,
        )
        parts["decode"] = run_part(
            "decode",
            [py, "benchmarks/decode.py", *dec, "--out", str(out / "decode.json")],
            out / "decode.json",
            log,
            DECODE_S,
        )
        parts["fit"] = fit_part(out, args.dry_run, log)
    summary = {
        "dry_run": args.dry_run,
        "seconds": round(time.time() - start, 1),
        "parts": {
            k: ("failed: " + str(v.get("error", v["failed"])) if "failed" in v else "ok") for k, v in parts.items()
        },
        "part_seconds": {k: v.get("part_seconds", v.get("seconds")) for k, v in parts.items()},
        "train_step": {
            k: {m: v.get(m) for m in ("step_s", "samples_per_s", "mfu", "mfu_datasheet", "peak_memory_gb", "failed")}
            for k, v in parts["train_step"].get("configs", {}).items()
        },
        "speedup_vs_baseline": parts["train_step"].get("speedup_vs_baseline"),
        "decode": parts["decode"].get("batched_vs_batch1"),
        "fit": {k: parts["fit"].get("metrics", {}).get(k) for k in ("ua", "wer", "n_utterances")},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    print(f"[device_check] wrote {out}/summary.json", file=sys.stderr)
    return 0 if all(v == "ok" for v in summary["parts"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
