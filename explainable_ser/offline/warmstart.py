"""Alignment warm start of the branches (demo-only, not in the paper).

The paper trains the branches and LoRA from scratch through the LLM's cross-entropy for
about 300 k steps. A CPU demo has a few hundred, and in that time a pretrained LLM learns the
targets' grammar and ignores the speech tokens. This warm start first puts each branch's
output into the LLM's own input-embedding space, cheaply (no LLM forward), so that the LLM
stages start from speech tokens the LLM can already half read (LegoSLM-style):

* **content**: CTC over the transcript's LLM tokens, at the adapter's token rate (k frames).
* **descriptor**: CTC over the words of the record's descriptor fields (e.g.
  ``female normal pitch high volume slow speed sang angry``), so the descriptor tokens spell
  the attributes the caption and emotion targets need.

The CTC output layer is the LLM's frozen input embedding matrix, restricted to the token ids
the targets use (the full 49k-way softmax per frame was the main cost in probes), plus one
learned blank vector: ``logits = scale * cos(token, [blank; E])``. A penalty keeps each
token's norm at the embeddings' mean norm, so the LLM receives vectors of the size it knows.
The frozen encoder runs once per clip; its layers are cached for all epochs.

Plain PyTorch: :func:`warm_start` takes the model and lists of ``(wave, record)`` pairs.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from pathlib import Path

import jiwer
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from data_modules.records import field_labels, field_value, record_field
from explainable_ser.config import ConfigError
from explainable_ser.model.ser import heads_cross_entropy, token_mean

# How a record's descriptor field is spelled in the warm-start target (by its last name part).
_SPELLING = {"pitch": "{} pitch", "volume": "{} volume", "speed": "{} speed", "range": "{} range"}


def descriptor_words(record: dict, fields: list[str], value_words: dict | None = None) -> str | None:
    """``female normal pitch high volume slow speed sang angry`` for ``fields`` in order; None
    when the record lacks one of them. ``value_words`` (field -> value -> word) spells a
    field's value as one word of its own instead (``loud`` for a high volume)."""
    words = []
    for name in fields:
        value = record_field(record, name)
        if value is None or not str(value).strip():
            return None
        value = str(value).strip()
        base = name.rsplit(".", 1)[-1]  # evidence.volume is spelled as volume is
        own = (value_words or {}).get(name) or (value_words or {}).get(base) or {}
        spelling = _SPELLING.get(base, "{}")
        words.append(own[value.lower()] if value.lower() in own else spelling.format(value))
    return " ".join(words)


def field_hits(record: dict, fields: list[str], hypothesis: str, value_words: dict | None = None) -> dict[str, bool]:
    """Per descriptor field: does the decoded text spell the record's value (``high pitch``,
    ``angry``) as a whole word sequence?"""
    words = hypothesis.lower().split()
    out = {}
    for name in fields:
        spelled = descriptor_words(record, [name], value_words)
        if spelled is None:
            continue
        want = spelled.lower().split()
        out[name] = any(words[i : i + len(want)] == want for i in range(len(words) - len(want) + 1))
    return out


def branch_targets(branch: str, record: dict, fields: list[str], value_words: dict | None = None) -> str | None:
    if branch == "content":
        text = record.get("transcript")
        return text.strip() if isinstance(text, str) and text.strip() else None
    return descriptor_words(record, fields, value_words)


@torch.no_grad()
def encode_all(model, waves: list[torch.Tensor], batch_size: int = 16, progress: bool = True) -> list:
    """The frozen encoder once per clip: a list of ``[L, F_i, D]`` bf16 tensors."""

    order = sorted(range(len(waves)), key=lambda i: waves[i].shape[0])
    out: list = [None] * len(waves)
    bar = tqdm(total=len(waves), desc="warm start: encoding", disable=not progress)
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        lens = torch.tensor([waves[i].shape[0] for i in idx])
        wave = torch.zeros(len(idx), int(lens.max()))
        for j, i in enumerate(idx):
            wave[j, : lens[j]] = waves[i]
        layers, frame_lens = model.encode(wave, lens)  # [L, B, F, D]
        for j, i in enumerate(idx):
            out[i] = layers[:, j, : int(frame_lens[j])].to(torch.bfloat16).clone()
        bar.update(len(idx))
    bar.close()
    return out


class CTCHead(nn.Module):
    """Cosine logits against frozen embedding rows, with a learned blank (index 0)."""

    def __init__(self, embeddings: torch.Tensor, scale: float):
        super().__init__()
        self.register_buffer("rows", F.normalize(embeddings.float(), dim=-1))  # [V, H]
        self.blank = nn.Parameter(embeddings.float().mean(0) + 0.01 * torch.randn(embeddings.shape[1]))
        self.log_scale = nn.Parameter(torch.tensor(math.log(scale)))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        rows = torch.cat([F.normalize(self.blank, dim=-1)[None], self.rows], dim=0)  # [1+V, H]
        return self.log_scale.exp() * F.normalize(tokens.float(), dim=-1) @ rows.T  # [B, N, 1+V]


class FieldHeads(nn.Module):
    """One linear classifier per categorical descriptor field on the utterance's mean token:
    an objective that carries utterance-level labels (CTC alone must place each label on
    some frames). Used during the warm start only, then discarded."""

    def __init__(self, dim: int, classes: dict[str, list[str]]):
        super().__init__()
        self.classes = classes
        # module names cannot hold a dot (evidence.pitch): the heads are kept in field order
        self.heads = nn.ModuleList([nn.Linear(dim, len(v)) for v in classes.values()])

    def forward(self, tokens: torch.Tensor, n_tok: torch.Tensor) -> dict[str, torch.Tensor]:
        pooled = token_mean(tokens.float(), n_tok)  # [B, H]
        return {f: head(pooled) for f, head in zip(self.classes, self.heads)}  # field -> [B, C]


def field_classes(records: list[dict], fields: list[str], most: int = 10) -> dict[str, list[str]]:
    """The categorical fields (at most ``most`` values in training; not the emphasised word)."""
    out = {}
    for name in fields:
        values = sorted({v for r in records if (v := field_value(r, name)) is not None})
        if 2 <= len(values) <= most:
            out[name] = values
    return out


def warm_start(
    model,
    branch: str,
    train: list,
    dev: list,
    tokenizer,
    *,
    fields: list[str],
    epochs: int,
    lr: float,
    batch_size: int,
    scale: float,
    norm_weight: float,
    seed: int,
    progress: bool = True,
    cache: dict | None = None,
    field_weight: float = 0.0,
    value_words: dict | None = None,
) -> dict:
    """Train ``model.<branch>`` (block + adapter, layer weights included) with the CTC above
    (plus, for the descriptor branch with ``field_weight`` > 0, :class:`FieldHeads`' cross-entropy).

    ``train``/``dev``: lists of ``(wave [T], record)``. ``cache`` (optional, shared between the
    two branches) maps ``"train"``/``"dev"`` to encoder outputs, computed on first use.
    Returns a report: dev error rate of the greedy CTC decode (token-level WER for content,
    word error rate of the descriptor words), steps, seconds.
    """

    start = time.time()
    module = getattr(model, branch)
    cache = {} if cache is None else cache

    def usable(items):
        return [
            (i, t)
            for i, (_, rec) in enumerate(items)
            if (t := branch_targets(branch, rec, fields, value_words)) is not None
        ]

    train_t, dev_t = usable(train), usable(dev)
    if not train_t:
        raise ValueError(f"warm start of the {branch} branch: no training record has its target fields")
    for split, items in (("train", train), ("dev", dev)):
        if split not in cache:
            cache[split] = encode_all(model, [w for w, _ in items], progress=progress)
    ids = {i: tokenizer(text, add_special_tokens=False)["input_ids"] for i, text in train_t}
    dev_ids = {i: tokenizer(text, add_special_tokens=False)["input_ids"] for i, text in dev_t}
    vocab = sorted({t for seq in ids.values() for t in seq})
    index = {t: j + 1 for j, t in enumerate(vocab)}  # 0 = blank
    emb = model.llm.get_input_embeddings().weight.detach()
    target_norm = float(emb[vocab].float().norm(dim=-1).mean())
    torch.manual_seed(seed)
    head = CTCHead(emb[vocab], scale)
    fheads = None
    if branch == "descriptor" and field_weight > 0:
        fheads = FieldHeads(emb.shape[1], field_classes([train[i][1] for i, _ in train_t], fields))
    # the model's own concept heads (model.branch.concepts) learn their fields here too
    concepts = getattr(module, "concepts", None) if branch == "descriptor" and field_weight > 0 else None
    params = [p for p in module.parameters()] + list(head.parameters())
    params += list(fheads.parameters()) if fheads is not None else []
    for p in module.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr)
    steps = epochs * math.ceil(len(train_t) / batch_size)
    # 10 % warm-up; at least two steps of it (OneCycleLR divides by the warm-up length minus one)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=steps, pct_start=min(0.5, max(0.1, 2.0 / steps))
    )
    ctc = nn.CTCLoss(blank=0, zero_infinity=True)
    rng = random.Random(seed)

    def batch(items, split):
        feats = [cache[split][i] for i, _ in items]
        lens = torch.tensor([f.shape[1] for f in feats])
        x = torch.zeros(feats[0].shape[0], len(feats), int(lens.max()), feats[0].shape[2])
        for j, f in enumerate(feats):
            x[:, j, : f.shape[1]] = f.float()
        return x, lens

    module.train()
    bar = tqdm(total=steps, desc=f"warm start: {branch} branch (CTC onto LLM embeddings)", disable=not progress)
    order = list(train_t)
    epoch_loss = []
    for _ in range(epochs):
        rng.shuffle(order)
        epoch_loss.append(0.0)
        for s in range(0, len(order), batch_size):
            items = order[s : s + batch_size]
            x, lens = batch(items, "train")
            tokens, n_tok, _ = module(x, lens, sample=False)  # [B, N, H], [B]
            log_probs = head(tokens).log_softmax(-1)  # [B, N, 1+V]
            targets = [torch.tensor([index[t] for t in ids[i]]) for i, _ in items]
            loss = ctc(log_probs.transpose(0, 1), torch.cat(targets), n_tok, torch.tensor([len(t) for t in targets]))
            valid = torch.arange(tokens.shape[1])[None] < n_tok[:, None]
            norms = tokens.float().norm(dim=-1)[valid]
            loss = loss + norm_weight * ((norms / target_norm - 1.0) ** 2).mean()
            if fheads is not None:
                loss = loss + field_weight * field_loss(fheads, tokens, n_tok, [train[i][1] for i, _ in items])
            if concepts is not None:
                loss = loss + field_weight * field_loss(concepts, tokens, n_tok, [train[i][1] for i, _ in items])
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}")
            epoch_loss[-1] += loss.item() * len(items) / len(order)
    bar.close()
    module.eval()
    refs, hyps, hits, head_hits, concept_hits = [], [], {}, {}, {}
    with torch.no_grad():
        for s in range(0, len(dev_t), batch_size):
            items = dev_t[s : s + batch_size]
            x, lens = batch(items, "dev")
            tokens, n_tok, _ = module(x, lens, sample=False)
            best = head(tokens).argmax(-1)  # [B, N]
            for heads, tally in ((fheads, head_hits), (concepts, concept_hits)):
                for f, logits in (heads(tokens, n_tok) if heads is not None else {}).items():
                    for (i, _), c in zip(items, logits.argmax(-1).tolist()):
                        if (v := field_value(dev[i][1], f)) is not None:
                            tally.setdefault(f, []).append(heads.classes[f][c] == v)
            for (i, _text), row, n in zip(items, best, n_tok.tolist()):
                seq = [vocab[j - 1] for j in torch.unique_consecutive(row[:n]).tolist() if j > 0]
                hyps.append(tokenizer.decode(seq).strip().lower())
                refs.append(tokenizer.decode(dev_ids[i]).strip().lower())
                if branch == "descriptor":
                    for name, hit in field_hits(dev[i][1], fields, hyps[-1], value_words).items():
                        hits.setdefault(name, []).append(hit)
    err = jiwer.wer(refs, hyps) if refs else None
    return {
        "branch": branch,
        "dev_error_rate": err,
        "dev_utterances": len(refs),
        "train_utterances": len(train_t),
        "vocab": len(vocab),
        "steps": steps,
        "loss_first_epoch": round(epoch_loss[0], 4),
        "loss_last_epoch": round(epoch_loss[-1], 4),
        "seconds": round(time.time() - start, 1),
        "example": (refs[:1] + hyps[:1]) if refs else None,
        # descriptor branch: share of dev clips whose decode spells each field's value
        "dev_field_accuracy": {k: round(sum(v) / len(v), 4) for k, v in hits.items()},
        "dev_field_head_accuracy": {k: round(sum(v) / len(v), 4) for k, v in head_hits.items()},
        # the model's concept heads (model.branch.concepts): the value each hands the LLM
        "dev_concept_accuracy": {k: round(sum(v) / len(v), 4) for k, v in concept_hits.items()},
    }


def field_loss(fheads: FieldHeads, tokens, n_tok, records: list[dict]) -> torch.Tensor:
    """Mean cross-entropy of the field heads over the fields and the records that have them
    (``fheads``: these or the model's own concept heads, which have the same interface)."""
    got = heads_cross_entropy(fheads(tokens, n_tok), field_labels(fheads.classes, records))
    return got if got is not None else tokens.sum() * 0.0


def ensure_warm_start(cfg, dm, model, run_dir: Path) -> list[str]:
    """Demo-only alignment warm start (``training.warm_start``), once per run: the warmed
    branches are saved to ``{run_dir}/warm_start/`` and loaded from there on a restart.
    Returns the branches trained now (none when loaded or not asked for)."""

    ws = cfg.training.warm_start
    if not ws.branches:
        return []
    first = cfg.training.stages[0].name if cfg.training.stages else None
    if first and ((run_dir / first / "final.ckpt").exists() or (run_dir / first / "last.ckpt").exists()):
        return []  # the stages' checkpoints already hold the (warmed, then trained) branches
    out = run_dir / "warm_start"
    todo = [b for b in ws.branches if not (out / f"{b}.safetensors").exists()]
    if todo:
        if int(os.environ.get("RANK", "0")) != 0:
            raise ConfigError(
                f"training.warm_start runs in one process: run it first on one "
                f"device (it writes {out}/), then launch DDP"
            )
        train, skipped = dm.usable_clips("train_split")
        dev, _ = dm.usable_clips("val_split")
        print(
            f"[warm start] {len(train)} training clips ({skipped} skipped by the data checks), "
            f"{len(dev)} dev clips; branches {todo}"
        )
        out.mkdir(parents=True, exist_ok=True)
        cache: dict = {}
        for branch in todo:
            epochs = ws.descriptor_epochs if branch == "descriptor" and ws.descriptor_epochs else ws.epochs
            report = warm_start(
                model,
                branch,
                train,
                dev,
                model.tokenizer,
                fields=list(ws.descriptor_fields),
                epochs=epochs,
                lr=ws.lr,
                batch_size=ws.batch_size,
                scale=ws.scale,
                norm_weight=ws.norm_weight,
                seed=cfg.seed,
                progress=cfg.trainer.enable_progress_bar,
                cache=cache,
                field_weight=ws.field_weight,
                value_words=dict(ws.value_words),
            )
            state = {k: v.detach().contiguous() for k, v in getattr(model, branch).state_dict().items()}
            save_file(state, out / f"{branch}.tmp.safetensors")
            os.replace(out / f"{branch}.tmp.safetensors", out / f"{branch}.safetensors")
            (out / f"{branch}.json").write_text(json.dumps(report, indent=2))
            fields = "".join(f"; {name} {acc:.2f}" for name, acc in report["dev_field_accuracy"].items())
            fields += "".join(f"; concept {name} {acc:.2f}" for name, acc in report["dev_concept_accuracy"].items())
            print(
                f"[warm start] {branch}: dev error rate of the CTC decode "
                f"{report['dev_error_rate']:.3f}{fields} after {report['steps']} steps "
                f"({report['seconds']:.0f} s); saved to {out / (branch + '.safetensors')}"
            )
        del cache
    for branch in ws.branches:
        getattr(model, branch).load_state_dict(load_file(out / f"{branch}.safetensors"))
    return todo
