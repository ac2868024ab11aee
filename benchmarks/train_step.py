"""Training-step benchmark of the full stack: step time, samples/s, tokens/s, peak memory, MFU.

    python benchmarks/train_step.py                      # full size on a GPU, tiny on CPU
    python benchmarks/train_step.py --size full --configs project,baseline,baseline+bucketing

The model is the paper's Sys.7 (``experiments/base.yaml``: LoRA r 8 on q/k/v/o, the branch
widths of the paper config) trained as in stage 2 (descriptor branch + LoRA, task ``ser_sed``),
with random weights at full size (HuBERT-large + Llama-3.1-8B shapes, since no weights can be
downloaded here) or at a tiny size on CPU. One batch is 8 clips of about 10 s, the prompt, the
speech tokens and a target of ``--target-tokens`` tokens. Each configuration runs in its own
process (so its peak memory is its own); all of them in one invocation, so ratios compare like
with like on a shared machine:

* ``project``: encoder weights in bf16 on GPU, run under ``inference_mode``; SDPA attention;
  duration bucketing (the 8 clips within 10 s +- 5 %); logits only at the target positions;
  fused AdamW; bf16 autocast.
* ``project_ckpt``: the same with gradient checkpointing of the LLM (what fits a 48 GB card).
* ``baseline``: what the libraries' defaults give: SDPA attention and bf16 autocast too, but the
  frozen encoder in fp32 under ``no_grad``, random batching padded to the longest (8 clips of
  2 to 18 s, the same 80 s of audio in total), full-vocabulary logits through the LLM's
  ``labels=`` loss, AdamW's default (foreach) implementation.
* ``baseline+FEATURE``: the baseline with one of the project's features (``bf16_encoder``,
  ``bucketing``, ``target_logits``, ``fused_adamw``), so each speed-up is attributed:
  ``feature_share`` is log(speed-up of the feature) / log(speed-up of the project).
* ``qlora`` (GPU with bitsandbytes only): the LLM loaded in 4 bit (NF4) + gradient checkpointing.

MFU = model FLOPs per step / step time / a peak: ``mfu`` against the bf16 matmul peak measured
in the same run (an ``N^3`` matmul, N = 8192 on GPU; fp32 and N = 2048 on CPU), ``mfu_datasheet``
against the device's dense bf16 datasheet peak (989 TFLOP/s for H100 SXM and H200; none on
CPU), the figure published anchors use. Model FLOPs are counted by
:func:`step_flops` below on the real (unpadded) lengths, with no recomputation (gradient
checkpointing) counted: padding and recomputation are waste, not model work.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from param_counts import HUBERT_LARGE, LLAMA3_VOCAB, LLAMA_31_8B  # noqa: E402

from explainable_ser.training import provenance  # noqa: E402

SR = 16000
FEATURES = ("bf16_encoder", "bucketing", "target_logits", "fused_adamw")
CONFIGS = ("project", "project_ckpt", "baseline", *(f"baseline+{f}" for f in FEATURES), "qlora")
# Dense bf16 tensor-core peaks from the datasheets (TFLOP/s, no sparsity), by device name.
DATASHEET_BF16 = {"H100 PCIe": 756.0, "H100 NVL": 835.0, "H100": 989.0, "H200": 989.0, "A100": 312.0}


def features(config: str) -> set[str]:
    """The project's features a configuration has (all but ``baseline*``)."""
    if config.startswith("baseline"):
        return set(config.split("+")[1:])
    return set(FEATURES)


def datasheet_peak(gpu_name: str | None) -> float | None:
    for key, peak in DATASHEET_BF16.items():  # the more specific names come first
        if gpu_name and key in gpu_name:
            return peak
    return None


# Tiny shapes for CPU: the same architectures, small enough for a 2-core machine.
HUBERT_TINY = dict(
    model_type="hubert",
    hidden_size=128,
    num_hidden_layers=4,
    num_attention_heads=4,
    intermediate_size=256,
    feat_extract_norm="layer",
    do_stable_layer_norm=True,
    conv_dim=[64] * 7,
    conv_bias=True,
    num_conv_pos_embeddings=32,
    num_conv_pos_embedding_groups=4,
)
LLAMA_TINY = dict(
    model_type="llama",
    hidden_size=256,
    intermediate_size=512,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=2048,
    tie_word_embeddings=False,
)
BRANCH_TINY = dict(hidden_dim=128, latent_dim=64, adapter_dim=256)


# -- FLOPs ------------------------------------------------------------------------------------
# A matmul [m, k] x [k, n] is 2 m k n FLOPs. Attention scores are counted over the full square
# (the PaLM / Megatron convention), LayerNorm, softmax and activations not at all.
def conv_out_len(n: int, kernels, strides) -> int:
    for k, s in zip(kernels, strides):
        n = (n - k) // s + 1
    return n


def encoder_flops(hf: dict, n_samples: int) -> float:
    """Forward FLOPs of a HuBERT/wav2vec2-style encoder on one clip of ``n_samples``."""
    kernels = hf.get("conv_kernel", [10, 3, 3, 3, 3, 2, 2])
    strides = hf.get("conv_stride", [5, 2, 2, 2, 2, 2, 2])
    dims = hf.get("conv_dim", [512] * 7)
    d, ff, n_layers = hf["hidden_size"], hf["intermediate_size"], hf["num_hidden_layers"]
    flops, n, c_in = 0.0, n_samples, 1
    for k, s, c_out in zip(kernels, strides, dims):  # feature extractor (no groups)
        n = (n - k) // s + 1
        flops += 2 * n * c_out * c_in * k
        c_in = c_out
    frames = n
    flops += 2 * frames * c_in * d  # feature projection
    k_pos, groups = hf["num_conv_pos_embeddings"], hf["num_conv_pos_embedding_groups"]
    # Positional conv, padding k//2: an even kernel gives one extra frame, cut afterwards.
    pos_len = frames + 2 * (k_pos // 2) - k_pos + 1
    flops += 2 * pos_len * d * (d // groups) * k_pos
    per_layer = 2 * frames * (4 * d * d + 2 * d * ff) + 4 * frames * frames * d
    return flops + n_layers * per_layer


def llm_flops(
    hf: dict, vocab: int, seq_len: int, n_target: int, lora_r: int, lora_targets, head_trainable: bool
) -> dict:
    """Forward and backward FLOPs of one sequence through a Llama decoder with LoRA.

    Frozen weights need only the gradient of their input in backward (as much as the forward);
    attention needs dQ, dK, dV and dP (twice its forward); LoRA's A and B get weight gradients.
    The LM head runs only where a target token is predicted.
    """
    d, ff, n_layers = hf["hidden_size"], hf["intermediate_size"], hf["num_hidden_layers"]
    heads, kv = hf["num_attention_heads"], hf.get("num_key_value_heads", hf["num_attention_heads"])
    hd = hf.get("head_dim") or d // heads
    shapes = {
        "q_proj": (d, heads * hd),
        "k_proj": (d, kv * hd),
        "v_proj": (d, kv * hd),
        "o_proj": (heads * hd, d),
        "gate_proj": (d, ff),
        "up_proj": (d, ff),
        "down_proj": (ff, d),
    }
    t = seq_len
    linear = 2 * t * sum(i * o for i, o in shapes.values())
    attn = 4 * t * t * heads * hd
    lora = 2 * t * lora_r * sum(i + o for name, (i, o) in shapes.items() if name in lora_targets)
    head = 2 * n_target * d * vocab
    fwd = n_layers * (linear + attn + lora) + head
    bwd = n_layers * (linear + 2 * attn + 2 * lora) + head * (2 if head_trainable else 1)
    return {"forward": float(fwd), "backward": float(bwd)}


def branch_flops(
    n_layers: int,
    enc_dim: int,
    hidden: int,
    latent: int,
    k: int,
    adapter: int,
    llm_dim: int,
    frames: int,
    trained: bool,
    variational: bool = True,
) -> float:
    """One branch (weighted layer sum, VIB MLP, adapter) on one clip; x3 when trained. Without
    the VIB (Sys.4) the layer sum feeds the adapter directly."""
    tokens = frames // k
    layer_sum = 2 * n_layers * frames * enc_dim
    if variational:
        mlp = 2 * frames * (enc_dim * hidden + hidden * hidden + 2 * hidden * latent)
    else:
        mlp, latent = 0, enc_dim
    adapt = 2 * tokens * (latent * k * adapter + adapter * llm_dim)
    fwd = layer_sum + mlp + adapt
    # Backward: input and weight gradients of every matmul; the layer sum only its weights'.
    return float(fwd + (layer_sum + 2 * (mlp + adapt) if trained else 0))


def step_flops(
    cfg, enc_hf: dict, llm_hf: dict, vocab: int, clip_samples: list[int], prompt_len: int, n_target: int
) -> dict:
    """Model FLOPs of one stage-2 training step (descriptor branch + LoRA trained)."""
    b, lora = cfg.model.branch, cfg.model.llm.lora
    enc = sum(encoder_flops(enc_hf, n) for n in clip_samples)
    frames = [
        conv_out_len(
            n, enc_hf.get("conv_kernel", [10, 3, 3, 3, 3, 2, 2]), enc_hf.get("conv_stride", [5, 2, 2, 2, 2, 2, 2])
        )
        for n in clip_samples
    ]
    n_layers, d = enc_hf["num_hidden_layers"] + 1, enc_hf["hidden_size"]
    common = (n_layers, d, b.hidden_dim, b.latent_dim, b.downsample, b.adapter_dim, llm_hf["hidden_size"])
    branches = sum(
        branch_flops(*common, f, trained=False, variational=b.variational)
        + branch_flops(*common, f, trained=True, variational=b.variational)
        for f in frames
    )
    llm = {"forward": 0.0, "backward": 0.0}
    for f in frames:
        seq = prompt_len + 2 * (f // b.downsample) + n_target
        one = llm_flops(
            llm_hf, vocab, seq, n_target, lora.r, lora.target_modules, head_trainable="lm_head" in lora.modules_to_save
        )
        llm = {k: llm[k] + one[k] for k in llm}
    return {
        "encoder_forward": enc,
        "branches": branches,
        "llm_forward": llm["forward"],
        "llm_backward": llm["backward"],
        "total": enc + branches + llm["forward"] + llm["backward"],
    }


# -- the stack --------------------------------------------------------------------------------
def experiment_config(size: str, config: str):
    from explainable_ser.config import load_config

    cfg = load_config([str(REPO / "experiments" / "base.yaml")])
    m = cfg.model
    enc_hf, llm_hf = (
        (dict(HUBERT_LARGE), dict(LLAMA_31_8B)) if size == "full" else (dict(HUBERT_TINY), dict(LLAMA_TINY))
    )
    m.encoder.name_or_path, m.encoder.hf_config = None, enc_hf
    m.llm.name_or_path, m.llm.hf_config = None, llm_hf
    if size == "tiny":
        for key, value in BRANCH_TINY.items():
            setattr(m.branch, key, value)
    m.encoder.dtype = m.llm.dtype = "auto"
    m.llm.gradient_checkpointing = config in ("project_ckpt", "qlora")
    m.llm.load_in_4bit = config == "qlora"
    if "bf16_encoder" not in features(config):
        m.encoder.dtype = "float32"
    return cfg, enc_hf, llm_hf


def clip_lengths(config: str, batch: int, seconds: float, seed: int = 0) -> list[int]:
    """Bucketed: every clip within +-5 % of ``seconds``; random batching: 0.2x to 1.8x of it.
    Both are scaled to exactly ``batch * seconds`` of audio, so every configuration does the
    same work."""
    rng = random.Random(seed)
    lo, hi = (0.95, 1.05) if "bucketing" in features(config) else (0.2, 1.8)
    draws = [rng.uniform(lo, hi) for _ in range(batch)]
    scale = batch / sum(draws)
    return [int(SR * seconds * d * scale) for d in draws]


def build(cfg, device: str, vocab: int, work_dir: Path):
    from explainable_ser.model.build import build_model
    from explainable_ser.offline.tokenizer import build_word_tokenizer
    from explainable_ser.training.stages import apply_trainable

    tokenizer = build_word_tokenizer([" ".join(f"w{i}" for i in range(512))])
    if cfg.model.llm.load_in_4bit:
        # bitsandbytes quantises while loading: save the random LLM once, then load it in 4 bit.
        # (A first build draws the weights and saves them; the second loads them like a download.)
        init_dir = work_dir / "random_init"
        with torch.device(device):
            build_model(cfg.model, tokenizer, device=device, vocab_size=vocab, random_init_dir=init_dir)
        gc.collect()
        torch.cuda.empty_cache()
        model = build_model(cfg.model, tokenizer, device=device, vocab_size=vocab, random_init_dir=init_dir)
        for name in ("encoder", "content", "descriptor"):
            getattr(model, name).to(device)
    else:
        with torch.device(device):
            model = build_model(cfg.model, tokenizer, device=device, vocab_size=vocab)
    apply_trainable(model, ["descriptor", "lora"])
    return model.train(), tokenizer


def run_one(args) -> dict:
    """One configuration, in this process: warm-up, then timed steps."""
    from explainable_ser.model.prompts import get_task

    device = "cuda" if torch.cuda.is_available() and not args.cpu else "cpu"
    cfg, enc_hf, llm_hf = experiment_config(args.size, args.one)
    vocab = LLAMA3_VOCAB
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        model, tokenizer = build(cfg, device, vocab, Path(tmp))
    feats = features(args.one)
    if "bf16_encoder" not in feats:  # the library default: fp32 weights, no_grad

        def encode(wave, lens, encoder=None):
            with torch.no_grad():
                layers, frame_lens = (encoder or model.encoder)(wave, lens)
            return layers.to(model.content.block.layer_logits.dtype), frame_lens

        model.encode = encode
    params = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("encoder.")]
    opt = torch.optim.AdamW(params, lr=1e-5, fused=True if "fused_adamw" in feats else None)
    lengths = clip_lengths(args.one, args.batch, args.seconds)
    wave = torch.randn(len(lengths), max(lengths), device=device) * 0.1
    lens = torch.tensor(lengths, device=device)
    task = get_task("ser_sed")
    words = [f"w{i}" for i in range(args.target_tokens)]
    target = " ".join(words)  # one word = one token with the offline tokenizer
    targets = [target] * len(lengths)
    head, mid, tail = model.prompts.pieces(task)
    prompt_len = len(head) + len(mid) + len(tail)
    n_target = len(model.prompts.target_ids(target))
    beta = cfg.training.beta
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda")

    def full_vocab_loss():
        """The library path: the LLM's own loss from ``labels=`` (logits at every position)."""
        speech = model.speech_tokens(wave, lens, sample_content=False, sample_descriptor=True, zero_descriptor=False)
        embeds, mask, labels = model.build_inputs(speech, task, [model.prompts.target_ids(t) for t in targets])
        out = model.llm(inputs_embeds=embeds, attention_mask=mask, labels=labels)
        return out.loss * n_target + beta * speech.kl["descriptor"].mean(), speech.n_tokens

    def step():
        with autocast:
            if "target_logits" in feats:
                out = model(wave, lens, task, targets)
                loss, n_tok = (out["ce"] + beta * out["kl_descriptor"]).mean(), out["n_tokens"]
            else:
                loss, n_tok = full_vocab_loss()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return n_tok

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(args.warmup):
        step()
    sync()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        n_tok = step()
    sync()
    step_s = (time.perf_counter() - t0) / args.steps
    flops = step_flops(cfg, enc_hf, llm_hf, vocab, lengths, prompt_len, n_target)
    seq_lens = [prompt_len + 2 * int(n) + n_target for n in n_tok]
    res = {
        "config": args.one,
        "size": args.size,
        "device": device,
        "batch": len(lengths),
        "clip_seconds": [round(n / SR, 2) for n in lengths],
        "prompt_tokens": prompt_len,
        "target_tokens": n_target,
        "sequence_tokens": seq_lens,
        "step_s": step_s,
        "samples_per_s": len(lengths) / step_s,
        "audio_seconds_per_s": sum(lengths) / SR / step_s,
        "llm_tokens_per_s": sum(seq_lens) / step_s,
        "flops_per_step": flops,
        "achieved_tflops": flops["total"] / step_s / 1e12,
        "trainable_params": sum(p.numel() for p in params),
        "llm": {
            "attn": cfg.model.llm.attn_implementation,
            "dtype": str(next(model.llm.parameters()).dtype),
            "gradient_checkpointing": cfg.model.llm.gradient_checkpointing,
            "load_in_4bit": cfg.model.llm.load_in_4bit,
        },
        "encoder_dtype": str(next(model.encoder.parameters()).dtype),
    }
    if device == "cuda":
        res["peak_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
        res["peak_reserved_gb"] = torch.cuda.max_memory_reserved() / 2**30
    else:
        res["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return res


def matmul_peak(device: str, n: int, repeats: int | None = None) -> dict:
    """Measured matmul throughput: bf16 on GPU, fp32 on CPU (no fast bf16 path there). On a GPU
    100 products (seconds of work) let the clocks settle; fewer would understate the peak."""
    repeats = repeats or (100 if device == "cuda" else 10)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(max(2, repeats // 10)):
        a @ b
    sync()
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync()
    seconds = (time.perf_counter() - t0) / repeats
    del a, b
    gc.collect()
    return {"n": n, "dtype": str(dtype), "seconds": seconds, "tflops": 2 * n**3 / seconds / 1e12}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--size", choices=["full", "tiny"], default=None, help="model shapes (default: full on a GPU, tiny on CPU)"
    )
    ap.add_argument(
        "--configs", default=None, help=f"comma-separated, from {', '.join(CONFIGS)} (default: all that can run here)"
    )
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10.0, help="mean clip duration")
    ap.add_argument("--target-tokens", type=int, default=64, help="tokens of the caption + emotion target")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per configuration (>= 1)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--matmul-n", type=int, default=None, help="peak matmul size (8192 GPU, 2048 CPU)")
    ap.add_argument("--cpu", action="store_true", help="stay on CPU even with a GPU")
    ap.add_argument("--out", default="benchmarks/results/train_step.json")
    ap.add_argument("--one", choices=CONFIGS, help=argparse.SUPPRESS)  # child process
    args = ap.parse_args()
    gpu = torch.cuda.is_available() and not args.cpu
    args.size = args.size or ("full" if gpu else "tiny")
    if args.one:
        print(json.dumps(run_one(args)))
        return

    device = "cuda" if gpu else "cpu"
    prov = provenance.start()
    res: dict = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name() if gpu else None,
            "datasheet_bf16_tflops": datasheet_peak(torch.cuda.get_device_name()) if gpu else None,
        },
        "args": vars(args),
    }
    res["matmul_peak"] = matmul_peak(device, args.matmul_n or (8192 if gpu else 2048))
    wanted = args.configs.split(",") if args.configs else list(CONFIGS)
    res["configs"] = {}
    for name in wanted:
        if name not in CONFIGS:
            ap.error(f"unknown configuration {name!r}; choose from {', '.join(CONFIGS)}")
        if name == "qlora" and not (gpu and _has_bitsandbytes()):
            res["configs"][name] = {"skipped": "needs a CUDA GPU and bitsandbytes"}
            continue
        child = [
            sys.executable,
            __file__,
            "--one",
            name,
            "--size",
            args.size,
            "--batch",
            str(args.batch),
            "--seconds",
            str(args.seconds),
            "--target-tokens",
            str(args.target_tokens),
            "--steps",
            str(args.steps),
            "--warmup",
            str(args.warmup),
        ] + (["--cpu"] if args.cpu else [])
        print(f"[train_step] {name} ({args.size}) ...", file=sys.stderr, flush=True)
        proc = subprocess.run(child, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = proc.stderr.strip().splitlines()[-3:]
            res["configs"][name] = {"failed": " | ".join(tail) or f"exit {proc.returncode}"}
            continue
        one = json.loads(proc.stdout.strip().splitlines()[-1])
        one["mfu"] = one["achieved_tflops"] / res["matmul_peak"]["tflops"]
        peak = datasheet_peak(res["machine"]["gpu"])
        one["mfu_datasheet"] = one["achieved_tflops"] / peak if peak else None
        res["configs"][name] = one
        # written after every configuration: a run stopped by a time limit keeps what it measured
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=2))
    ok = {k: v for k, v in res["configs"].items() if "samples_per_s" in v}
    if "baseline" in ok:
        base = ok["baseline"]["samples_per_s"]
        res["speedup_vs_baseline"] = {k: v["samples_per_s"] / base for k, v in ok.items() if k != "baseline"}
        if "project" in ok and res["speedup_vs_baseline"]["project"] > 1:
            total = math.log(res["speedup_vs_baseline"]["project"])
            res["feature_share"] = {
                k.split("+", 1)[1]: math.log(v) / total
                for k, v in res["speedup_vs_baseline"].items()
                if k.startswith("baseline+")
            }
    res["provenance"] = provenance.finish(prov)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))
    print(json.dumps({k: res[k] for k in res if k != "args"}, indent=2))
    print(f"[train_step] wrote {args.out}", file=sys.stderr)


def _has_bitsandbytes() -> bool:
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
