"""Decoding: generated text for a batch or a loader, parsed into prediction rows.

Shared by evaluation, prediction on files and the validation curves, so every one of them
decodes and parses the same way. A row holds the references, the raw text and the fields
:func:`explainable_ser.model.prompts.parse_output` read back.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from tqdm import tqdm

from data_modules.evidence import CUES, PHRASES, rationale_opening, rng_for
from explainable_ser.config import ExperimentConfig
from explainable_ser.model.prompts import FIELD_PREFIX, caption_attributes, get_task, parse_output


def gather_objects(obj) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` under DDP (a collective: every rank must call
    it), ``[obj]`` in one process."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        parts: list = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(parts, obj)
        return parts
    return [obj]


def gather_rows(rows: list[dict]) -> list[dict]:
    """Each DDP rank decoded its shard; every rank gets all rows, in rank order."""
    return [r for part in gather_objects(rows) for r in part]


@torch.no_grad()
def decode(
    module,
    loader,
    cfg: ExperimentConfig,
    tasks: list[str],
    *,
    zero_descriptor=False,
    zero_content=False,
    limit: int | None = None,
    desc: str = "decoding",
    gather: bool = True,
    total: int | None = None,
) -> list[dict]:
    """Generate for every utterance of ``loader`` and every task; returns prediction rows.

    ``gather``: the loader holds this rank's shard, so collect every rank's rows once.
    ``total``: utterances expected (for the progress bar's ETA; a loader of dynamic batches
    has no length).
    """
    return decode_passes(
        module,
        loader,
        cfg,
        {"rows": Pass(tasks, zero_descriptor, zero_content)},
        limit=limit,
        desc=desc,
        gather=gather,
        total=total,
    )["rows"]


@dataclass(frozen=True)
class Pass:
    """One decode of the loader: its tasks, and the speech stream zeroed (a counterfactual)."""

    tasks: list[str]
    zero_descriptor: bool = False
    zero_content: bool = False


@torch.no_grad()
def decode_passes(
    module,
    loader,
    cfg: ExperimentConfig,
    passes: dict[str, Pass],
    *,
    limit: int | None = None,
    desc: str = "decoding",
    gather: bool = True,
    total: int | None = None,
) -> dict[str, list[dict]]:
    """Several decodes of ``loader`` in one sweep: each batch is loaded and encoded once, and
    every pass generates from the same speech tokens (the rows equal separate :func:`decode`
    calls'). Returns ``{pass name: rows}``."""
    model = module.model.eval()
    device = next(model.parameters()).device
    rows: dict[str, list[dict]] = {name: [] for name in passes}
    seen = 0
    if limit is not None and total is not None:
        total = min(total, limit)
    shared = hasattr(model, "generate_from")  # a discriminative baseline has no speech tokens
    with decode_precision(cfg, device, model), tqdm(total=total, desc=desc, unit="utt", leave=False) as bar:
        for batch in loader:
            if limit is not None and seen >= limit:
                break
            if not batch["ids"]:
                continue
            n = len(batch["ids"]) if limit is None else min(len(batch["ids"]), limit - seen)
            wave, lens = batch["wave"][:n].to(device), batch["wave_lens"][:n].to(device)
            wave = wave[:, : int(lens.max())]
            seen += n
            speech = (
                model.speech_tokens(wave, lens, sample_content=False, sample_descriptor=False, zero_descriptor=False)
                if shared
                else None
            )
            for name, p in passes.items():
                rows[name] += decode_batch(
                    model,
                    wave,
                    lens,
                    batch["records"][:n],
                    p.tasks,
                    cfg,
                    zero_descriptor=p.zero_descriptor,
                    zero_content=p.zero_content,
                    speech=speech,
                )
            bar.update(n)
    return {name: gather_rows(r) if gather else r for name, r in rows.items()}


@contextlib.contextmanager
def decode_precision(cfg: ExperimentConfig, device: torch.device, model: torch.nn.Module | None = None):
    """Decoding outside the Trainer computes as training did: ``bf16-mixed`` runs decode under
    bf16 autocast (on this CPU about 1.5x faster than fp32), other precisions as they are.
    ``model``: its frozen weights are cast once for the block (:func:`frozen_weights_cast`)."""
    if not cfg.trainer.precision.startswith("bf16-mixed"):
        yield
        return
    with (
        torch.autocast(device.type, dtype=torch.bfloat16),
        frozen_weights_cast(model, torch.bfloat16) if model is not None else contextlib.nullcontext(),
    ):
        yield


# The layers whose weights autocast casts to bf16 on every call (torch's lower-precision op list).
_AUTOCAST_CAST = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d)


@contextlib.contextmanager
def frozen_weights_cast(model: torch.nn.Module, dtype: torch.dtype):
    """Inside the block, every frozen linear or convolution layer of ``model`` holds its weight
    (and bias) already cast to ``dtype``; the original parameters are put back on exit.

    Why: autocast caches the casts of trainable leaf parameters only, so a frozen fp32 LLM under
    bf16 autocast converts all its weights again at every generated token. Cast once, the layers
    see the same bf16 values and compute the same numbers (the predictions are byte-identical),
    without the per-token copies. Each layer gets a new parameter object rather than new data,
    so a weight shared with another module (an LM head tied to the input embedding) stays as it
    was for that module.
    """
    swapped: list[tuple[torch.nn.Module, str, torch.nn.Parameter]] = []
    try:
        for module in model.modules():
            if not isinstance(module, _AUTOCAST_CAST):
                continue
            for name in ("weight", "bias"):
                p = getattr(module, name, None)
                if p is None or p.requires_grad or not p.is_floating_point() or p.dtype == dtype:
                    continue
                swapped.append((module, name, p))
                setattr(module, name, torch.nn.Parameter(p.detach().to(dtype), requires_grad=False))
        yield
    finally:
        for module, name, p in reversed(swapped):
            setattr(module, name, p)


def concept_cues(
    probs: dict[str, torch.Tensor], classes: dict[str, list[str]], min_confidence: float, max_cues: int
) -> list[list[dict]]:
    """Per utterance, the cues a concept-led rationale states (``eval.concept_rationale``):
    each measured cue's head (``evidence.CUE``) at its most probable value, kept at
    ``min_confidence`` or above; deviations before ``normal`` ones, each group surest first, at
    most ``max_cues``; the surest cue alone when none is sure enough. ``[{cue, direction,
    confidence}]``."""
    heads = {f: p for f, p in probs.items() if f.startswith("evidence.") and f.split(".", 1)[1] in CUES}
    if not heads:
        raise ValueError(
            f"eval.concept_rationale: no concept head is on a measured cue (heads: {', '.join(probs) or 'none'}; "
            f"measured cues: {', '.join('evidence.' + c for c in CUES)})"
        )
    n = next(iter(heads.values())).shape[0]
    out = []
    for i in range(n):
        cues = []
        for f, p in heads.items():
            conf, k = p[i].max(0)
            cue, direction = f.split(".", 1)[1], classes[f][int(k)]
            if (cue, direction) in PHRASES:  # a value the rationale wording has no phrase for is not stated
                cues.append({"cue": cue, "direction": direction, "confidence": round(float(conf), 4)})
        sure = [c for c in cues if c["confidence"] >= min_confidence]
        sure = sure or sorted(cues, key=lambda c: -c["confidence"])[:1]
        sure.sort(key=lambda c: (c["direction"] == "normal", -c["confidence"]))
        out.append(sure[:max_cues])
    return out


def concept_openings(model, speech, ids: list[str], cfg: ExperimentConfig, zero_descriptor: bool = False):
    """``(answer openings, stated cues)`` per utterance of a concept-led rationale
    (``eval.concept_rationale``): ``Rationale:`` and the cues of :func:`concept_cues` in the
    describe-first wording, its template and phrases drawn by the utterance id."""
    probs = model.concept_probs(speech, zero_descriptor=zero_descriptor)
    stated = concept_cues(
        probs, model.descriptor.concepts.classes, cfg.eval.concept_rationale, cfg.eval.concept_rationale_max_cues
    )
    field = FIELD_PREFIX["rationale"]
    return [f"{field} {rationale_opening(c, rng_for(str(i)))}" for c, i in zip(stated, ids)], stated


def decode_batch(
    model,
    wave,
    lens,
    records: list[dict],
    tasks: list[str],
    cfg: ExperimentConfig,
    zero_descriptor: bool = False,
    zero_content: bool = False,
    speech=None,
) -> list[dict]:
    """Prediction rows for one batch: references, raw generated text and parsed fields.
    ``speech``: the batch's speech tokens, already computed (the encoder then does not run)."""
    labels = tuple(cfg.training.labels)
    rows = []
    for task_name in tasks:
        task = get_task(task_name)
        kw = dict(num_beams=cfg.eval.num_beams, max_new_tokens=cfg.eval.max_new_tokens, zero_descriptor=zero_descriptor)
        if zero_content:
            kw["zero_content"] = True  # a baseline has no content stream
        stated = None
        if cfg.eval.concept_rationale is not None and task.fields[0] == "rationale":
            # concept-led: the heads' cues open the answer, the model writes on
            if speech is None:
                speech = model.speech_tokens(
                    wave, lens, sample_content=False, sample_descriptor=False, zero_descriptor=False
                )
            kw["prefixes"], stated = concept_openings(model, speech, [r["id"] for r in records], cfg, zero_descriptor)
        if speech is not None:
            texts = model.generate_from(speech, task, **kw)
        else:
            texts = model.generate(wave, lens, task, **kw)
        for i, (rec, raw) in enumerate(zip(records, texts)):
            parsed = parse_output(raw, labels)
            rows.append(
                {
                    "id": rec["id"],
                    "task": task_name,
                    "corpus": rec.get("corpus"),
                    "language": rec.get("language"),
                    "transcript_ref": rec.get("transcript"),
                    "caption_ref": rec.get("caption"),
                    "emotion_ref": rec.get("emotion"),
                    "attributes_ref": rec.get("attributes"),
                    "annotator_emotions": rec.get("annotator_emotions"),
                    "raw": raw,
                    "transcript": parsed["transcript"],
                    "caption": parsed["caption"],
                    "emotion": parsed["emotion"],
                    "parsed": parsed["parsed"],
                    "rationale_ref": rec.get("rationale"),
                    "rationale": parsed["rationale"],
                    "caption_attributes": caption_attributes(parsed["caption"]),
                    **({"concept_cues": stated[i]} if stated is not None else {}),
                }
            )
    return rows
