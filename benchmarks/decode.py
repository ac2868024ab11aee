"""Decoding benchmark: utterances/s of batched generation vs batch-1, and SDPA vs eager attention.

    python benchmarks/decode.py [--ckpt runs/demo/stage2/final.ckpt] [--n 32] [--batch 16]

    python benchmarks/decode.py --size full [--cpu]   # the paper's shapes, random weights

With ``--ckpt`` the trained demo model decodes real SynthCraft test clips (its run directory
gives the config and tokenizer); without it, a random tiny model does (outputs are then
arbitrary but the timing is the same work). Greedy outputs of the batched run are compared
with batch-1 outputs: ``identical_outputs`` must be true. Writes JSON.

``--size full|tiny`` needs no data and no weights: the training-step benchmark's stack
(HuBERT-large + Llama-3.1-8B shapes, or tiny ones) with random weights, on CUDA in bf16 when
there is a GPU, decodes random 10 s clips, every utterance generating exactly
``--max-new-tokens`` tokens (no early stop), batched vs batch-1. Random bf16 weights may tip a
greedy choice between batch shapes, so ``n_mismatched`` is reported, not required to be 0.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
from lhotse import CutSet

from data_modules.batches import SpeechBatchDataset
from data_modules.config import DataConfig
from data_modules.records import manifest_path
from explainable_ser.config import load_config
from explainable_ser.model.prompts import get_task
from explainable_ser.training import provenance


def timed_decode(model, wave, lens, task, batch: int, max_new_tokens: int) -> tuple[list[str], float]:
    out, t0 = [], time.perf_counter()
    for i in range(0, wave.shape[0], batch):
        lb = lens[i : i + batch]
        out += model.generate(wave[i : i + batch, : int(lb.max())], lb, task, max_new_tokens=max_new_tokens)
    return out, time.perf_counter() - t0


def random_stack(args) -> dict:
    """Decoding speed of the paper-shaped stack with random weights (no data, no download)."""
    import sys
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import train_step as ts  # noqa: E402  (the same stack as the training-step benchmark)

    device = "cuda" if torch.cuda.is_available() and not args.cpu else "cpu"
    cfg, _, _ = ts.experiment_config(args.size, "project")
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        model, _ = ts.build(cfg, device, ts.LLAMA3_VOCAB, Path(tmp))
    model.eval()
    wave = torch.randn(args.n, int(ts.SR * args.seconds), device=device) * 0.1
    lens = torch.full((args.n,), wave.shape[1], device=device)
    task = get_task(args.task)
    k = args.max_new_tokens
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda")
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    @torch.no_grad()
    def decode(batch: int) -> tuple[list[list[int]], float]:
        out, t0 = [], time.perf_counter()
        for i in range(0, args.n, batch):
            with autocast:
                speech = model.speech_tokens(
                    wave[i : i + batch],
                    lens[i : i + batch],
                    sample_content=False,
                    sample_descriptor=False,
                    zero_descriptor=False,
                )
                embeds, mask, _ = model.build_inputs(speech, task, None, left_pad=True)
                ids = model.llm.generate(
                    inputs_embeds=embeds,
                    attention_mask=mask,
                    max_new_tokens=k,
                    min_new_tokens=k,
                    do_sample=False,
                    pad_token_id=model.pad_id,
                )
            out += ids.tolist()
        sync()
        return out, time.perf_counter() - t0

    decode(min(2, args.n))  # warm-up
    batched, t_b = decode(args.batch)
    single, t_1 = decode(1)
    return {
        "device": device,
        "gpu": torch.cuda.get_device_name() if device == "cuda" else None,
        "size": args.size,
        "n": args.n,
        "clip_seconds": args.seconds,
        "new_tokens_each": k,
        f"utt_per_s_batch{args.batch}": args.n / t_b,
        "utt_per_s_batch1": args.n / t_1,
        "new_tokens_per_s_batched": args.n * k / t_b,
        "batched_vs_batch1": t_1 / t_b,
        "identical_outputs": batched == single,
        "n_mismatched": sum(a != b for a, b in zip(batched, single)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--size",
        choices=["full", "tiny"],
        default=None,
        help="random-weight stack of these shapes instead of a checkpoint or the offline model",
    )
    ap.add_argument("--cpu", action="store_true", help="with --size: stay on CPU even with a GPU")
    ap.add_argument("--seconds", type=float, default=10.0, help="with --size: clip duration")
    ap.add_argument("--ckpt", default=None)
    ap.add_argument("--data-dir", default="data/synthcraft")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--task", default="ser_sed")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--out", default="benchmarks/results/decode.json")
    args = ap.parse_args()
    prov = provenance.start()
    if args.size:
        res = {
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__},
            "args": vars(args),
            **random_stack(args),
        }
        res["provenance"] = provenance.finish(prov)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=2))
        print(json.dumps(res, indent=2))
        return
    from explainable_ser.training.assembly import build
    from explainable_ser.training.checkpointing import load_adaptable

    res: dict = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()},
        "args": vars(args),
    }
    cuts = CutSet.from_file(manifest_path(args.data_dir, "synthcraft", "test")).subset(first=args.n)
    batch = SpeechBatchDataset(DataConfig())[cuts]
    if batch["skipped"] or not batch["ids"]:  # timing an empty batch would give absurd rates
        first = batch["skipped"][0] if batch["skipped"] else {"reason": "no cut in the manifest"}
        raise SystemExit(
            f"{len(batch['skipped'])} of {len(cuts)} test clips could not be loaded "
            f"(first: {first}); audio paths in the manifest are relative to where "
            f"it was generated: run from there or pass that --data-dir"
        )
    wave, lens = batch["wave"], batch["wave_lens"]
    task = get_task(args.task)
    for attn in ("sdpa", "eager"):
        if args.ckpt:
            run_dir = Path(args.ckpt).parent.parent
            cfg = load_config([str(run_dir / "config.yaml"), f"model.llm.attn_implementation={attn}"])
        else:
            run_dir = Path("runs/bench_decode")
            cfg = load_config(
                ["offline", f"data.corpora.0.dir={args.data_dir}", f"model.llm.attn_implementation={attn}"]
            )
        torch.manual_seed(0)
        _, module = build(cfg, run_dir)
        if args.ckpt:
            load_adaptable(module, Path(args.ckpt))
        model = module.model.eval()
        timed_decode(model, wave[:2], lens[:2], task, 2, 4)  # warm-up
        batched, t_b = timed_decode(model, wave, lens, task, args.batch, args.max_new_tokens)
        single, t_1 = timed_decode(model, wave, lens, task, 1, args.max_new_tokens)
        res[attn] = {
            f"utt_per_s_batch{args.batch}": args.n / t_b,
            "utt_per_s_batch1": args.n / t_1,
            "speedup": t_1 / t_b,
            "identical_outputs": batched == single,
            "n_mismatched": sum(a != b for a, b in zip(batched, single)),
        }
    res["sdpa_vs_eager_batched"] = (
        res["sdpa"][f"utt_per_s_batch{args.batch}"] / res["eager"][f"utt_per_s_batch{args.batch}"]
    )
    res["provenance"] = provenance.finish(prov)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
