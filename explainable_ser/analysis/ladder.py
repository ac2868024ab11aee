"""The information ladder: where emotion and descriptor information is lost between the measured
acoustics, the descriptor tokens, the LLM read teacher-forced, and the generated answer (linear
probes on each rung)."""

from __future__ import annotations

import json
import math
import multiprocessing
import time
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, balanced_accuracy_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tqdm import tqdm

from data_modules.annotate.measure import _warm_up, measure_audio
from explainable_ser.evaluation.decoding import decode_precision
from explainable_ser.evaluation.grounding import parse_cues
from explainable_ser.model.prompts import _ATTR_PATTERNS, FIELD_PREFIX, caption_attributes, get_task, render_target
from explainable_ser.model.ser import SpeechTokens
from explainable_ser.training.assembly import load_trained

TARGETS = ("emotion", "gender", "pitch", "volume", "speed")
# The measured direction of each acoustic cue (``attributes.evidence`` of an evidence-rationale
# manifest, :mod:`data_modules.evidence`): what a rationale's cues are checked against.
CUE_TARGETS = ("cue.pitch", "cue.range", "cue.volume", "cue.speed")
MEASUREMENT_FEATURES = (
    "f0_median_hz",
    "f0_p5_hz",
    "f0_p95_hz",
    "f0_range_semitones",
    "voiced_fraction",
    "loudness_lufs",
    "level_db",
    "peak_level_db",
    "speaking_rate",
)


def target_labels(record: dict) -> dict[str, str | None]:
    """The emotion, the descriptor attributes and the measured cue directions of one record
    (None where it has none)."""
    attrs = record.get("attributes") or {}
    out = {"emotion": record.get("emotion")}
    for name in TARGETS[1:]:
        value = attrs.get(name)
        out[name] = str(value).lower() if value is not None else None
    evidence = attrs.get("evidence") or {}
    for name in CUE_TARGETS:
        out[name] = (evidence.get(name.split(".", 1)[1]) or {}).get("direction")
    return out


def present_targets(labels: list[dict]) -> list[str]:
    """The targets at least one record has a label for, in :data:`TARGETS` order, then the cues."""
    return [t for t in TARGETS + CUE_TARGETS if any(y.get(t) is not None for y in labels)]


def score(target: str, truth: list, pred: list) -> float:
    """UA for the emotion, accuracy for an attribute."""

    return float(balanced_accuracy_score(truth, pred) if target == "emotion" else accuracy_score(truth, pred))


def fit_probe(kind: str, train_x, train_y: list, test_x, test_y: list, target: str) -> dict:
    """Fit one probe on labelled training rows and score it on labelled test rows.

    ``kind``: ``linear`` (standardise + logistic regression, C=0.1) or ``trees`` (histogram
    gradient boosting, which takes missing measurements as they are). Rows whose label is
    None are left out and counted. Returns ``{"score", "n_train", "n_test"}`` or a reason."""

    tr = [i for i, y in enumerate(train_y) if y is not None]
    te = [i for i, y in enumerate(test_y) if y is not None]
    ys = [train_y[i] for i in tr]
    if len(set(ys)) < 2 or not te:
        return {
            "score": None,
            "n_train": len(tr),
            "n_test": len(te),
            "reason": "fewer than two classes in training" if len(set(ys)) < 2 else "no labelled test clip",
        }
    x_tr, x_te = np.asarray(train_x, dtype=np.float64)[tr], np.asarray(test_x, dtype=np.float64)[te]
    if kind == "trees":
        clf = HistGradientBoostingClassifier(random_state=0)
    else:
        x_tr, x_te = np.nan_to_num(x_tr), np.nan_to_num(x_te)
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    clf.fit(x_tr, ys)
    pred = clf.predict(x_te).tolist()
    return {"score": round(score(target, [test_y[i] for i in te], pred), 4), "n_train": len(tr), "n_test": len(te)}


# -- features of each rung ------------------------------------------------------------------
def _measure(item):

    wave, sr, transcript = item
    return measure_audio(wave, sr, transcript)


def measurement_features(clips: list, sr: int, workers: int = 2, desc: str = "measuring") -> list[list[float]]:
    """The nine measurements of each ``(wave, record)`` clip; NaN where one is missing."""

    _warm_up()  # numba kernels compiled once, before the workers fork
    items = [(w.numpy(), sr, rec.get("transcript")) for w, rec in clips]
    bar = tqdm(total=len(items), desc=desc, unit="clip")
    if workers > 1:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            measured = []
            for m in pool.imap(_measure, items, chunksize=4):
                measured.append(m)
                bar.update()
    else:
        measured = []
        for item in items:
            measured.append(_measure(item))
            bar.update()
    bar.close()
    rows = []
    for m in measured:
        row = []
        for key in MEASUREMENT_FEATURES:
            v = m.get(key)
            if key.endswith("_hz") and v is not None:
                v = 12.0 * math.log2(v / 100.0)  # semitones re 100 Hz: pitch as heard
            row.append(float("nan") if v is None else float(v))
        rows.append(row)
    return rows


def _pool(x, lens):
    """[B, F, D] states, [B] valid frames -> [B, 2D] mean and std over each clip's frames."""

    mask = (torch.arange(x.shape[1], device=x.device)[None] < lens[:, None]).float()[..., None]  # [B, F, 1]
    n = mask.sum(1).clamp(min=1)
    mean = (x.float() * mask).sum(1) / n
    var = ((x.float() - mean[:, None]) ** 2 * mask).sum(1) / n
    return torch.cat([mean, var.sqrt()], dim=-1)


def clip_batches(clips: list, batch_size: int, desc: str):
    """``(clip indices, wave [B, T] zero-padded, lengths [B])`` over ``(wave, record)`` clips,
    shortest first (little padding), with a progress bar."""

    order = sorted(range(len(clips)), key=lambda i: clips[i][0].shape[0])
    for s in tqdm(range(0, len(order), batch_size), desc=desc, unit="batch"):
        idx = order[s : s + batch_size]
        lens = torch.tensor([clips[i][0].shape[0] for i in idx])
        wave = torch.zeros(len(idx), int(lens.max()))
        for j, i in enumerate(idx):
            wave[j, : lens[j]] = clips[i][0]
        yield idx, wave, lens


def model_states(model, clips: list, batch_size: int = 8, desc: str = "states") -> dict[str, list]:
    """Pooled states of each rung for ``(wave, record)`` clips: ``{rung: [N, dim] rows}``."""

    out: dict[str, list] = {}
    model.eval()
    rows: dict[str, list] = {}
    with torch.no_grad():
        for idx, wave, lens in clip_batches(clips, batch_size, desc):
            layers, frame_lens = model.encode(wave, lens)  # [L, B, F, D], [B]
            feats = {f"encoder/layer_{li:02d}": _pool(layers[li], frame_lens) for li in range(layers.shape[0])}
            d_layers = model.descriptor_layers(wave, lens, layers, frame_lens)
            for name, branch_layers in (("content", layers), ("descriptor", d_layers)):
                branch = getattr(model, name)
                feats[f"{name}/input"] = _pool(branch.block.mix(branch_layers), frame_lens)
                z, _ = branch.block(branch_layers, frame_lens, sample=False)  # [B, F, Z]
                feats[f"{name}/z"] = _pool(z, frame_lens)
                tokens, n_tok = branch.adapter(z, frame_lens)  # [B, N, H]
                feats[f"{name}/tokens"] = _pool(tokens, n_tok)
            for key, v in feats.items():
                arr = v.float().cpu().numpy()
                for j, i in enumerate(idx):
                    rows.setdefault(key, [None] * len(clips))[i] = arr[j]
    for key, v in rows.items():
        out[key] = v
    return out


# The values a descriptor attribute takes in SpeechCraft-style captions (read back by
# :func:`explainable_ser.model.prompts.caption_attributes`).
CANDIDATES = {
    "gender": ("male", "female"),
    "pitch": ("low", "normal", "high"),
    "volume": ("low", "normal", "high"),
    "speed": ("slow", "normal", "fast"),
}


def value_slots(target: str, labels: list[str]) -> dict[str, tuple[str, list[str], str]]:
    """Where each target's value sits in a reference target text: ``{target: (text before it,
    candidate spellings, the reference's own value)}``; targets the text does not state are left
    out. Candidates take the reference's capitalisation ("High pitch ..." -> "Low", "Normal")."""

    out = {}
    caption_end = target.find("\n" + FIELD_PREFIX["emotion"])
    caption = target if caption_end < 0 else target[:caption_end]
    for name, values in CANDIDATES.items():
        m = _ATTR_PATTERNS[name].search(caption)
        if m is None:
            continue
        said = m.group(1)
        cands = [v.capitalize() if said[:1].isupper() else v for v in values]
        out[name] = (target[: m.start(1)], cands, said.lower())
    k = target.find(FIELD_PREFIX["emotion"])
    if k >= 0:
        rest = target[k + len(FIELD_PREFIX["emotion"]) :]
        said = rest.strip().split()[0].lower() if rest.strip() else ""
        if said in labels:
            out["emotion"] = (target[: k + len(FIELD_PREFIX["emotion"])] + " ", list(labels), said)
    return out


def teacher_forced_choices(
    model, clips: list, task_name: str, labels: list[str], batch_size: int = 8, desc: str = "teacher-forced"
) -> list[dict[str, str]]:
    """Per ``(wave, record)`` clip: ``{target: the value the LLM ranks first}`` at each value's
    place in the clip's reference target, given the reference text before it (and the audio).

    Each candidate is scored by the summed log-probability of its own tokens (those after the
    candidates' common first tokens); every candidate sequence of a batch of clips goes through
    one forward pass together.
    """

    task = get_task(task_name)
    ids = model.prompts._ids
    out: list[dict[str, str]] = [{} for _ in clips]
    for idx, wave, lens in clip_batches(clips, batch_size, desc):
        speech = model.speech_tokens(wave, lens, sample_content=False, sample_descriptor=False, zero_descriptor=False)
        rows, seqs, skip, owner = [], [], [], []  # one sequence per (clip, target, candidate)
        for j, i in enumerate(idx):
            target = render_target(task, clips[i][1])
            if target is None:
                continue
            for name, (before, cands, _) in value_slots(target, labels).items():
                cand_ids = [ids(before + c) for c in cands]
                common = 0  # tokens every candidate shares: the same for all, so not scored
                while all(len(c) > common and c[common] == cand_ids[0][common] for c in cand_ids):
                    common += 1
                for c, c_ids in zip(cands, cand_ids):
                    rows.append(j)
                    seqs.append(c_ids)
                    skip.append(common)
                    owner.append((i, name, c))
        if not seqs:
            continue
        pick = torch.tensor(rows)
        sub = SpeechTokens(
            speech.content[pick],
            speech.descriptor[pick],
            speech.n_tokens[pick],
            {k: v[pick] for k, v in speech.kl.items()},
            speech.frame_lens[pick],
            None if speech.summary is None else speech.summary[pick],
        )
        embeds, mask, _, picks = model.splice(sub, task, seqs)
        hidden = model.decoder_hidden(embeds, mask)  # [S, L, H]
        logits = model.lm_head(hidden.reshape(-1, hidden.shape[-1]).index_select(0, picks["pos"]))  # [T, V]
        lp = torch.log_softmax(logits.float(), dim=-1).gather(1, picks["ids"][:, None])[:, 0]  # [T]
        # position of each token within its own sequence, to leave out the shared first tokens
        starts = torch.cumsum(picks["count"], 0) - picks["count"]  # [S]
        within = torch.arange(lp.shape[0]) - starts[picks["row"]]  # [T]
        keep = within >= torch.tensor(skip)[picks["row"]]
        total = torch.zeros(len(seqs)).index_add_(0, picks["row"], lp * keep)  # [S]
        best: dict[tuple[int, str], tuple[float, str]] = {}
        for (i, name, c), v in zip(owner, total.tolist()):
            if (i, name) not in best or v > best[(i, name)][0]:
                best[(i, name)] = (v, c.lower())
        for (i, name), (_, c) in best.items():
            out[i][name] = c
    return out


def teacher_forced_scores(choices: list[dict[str, str]], test_labels: list[dict], targets=TARGETS) -> dict:
    """The teacher-forced choices scored like the probes (UA for the emotion)."""
    out = {}
    for target in targets:
        pairs = [(y[target], c[target]) for c, y in zip(choices, test_labels) if y[target] is not None and target in c]
        out[target] = (
            {"score": round(score(target, [a for a, _ in pairs], [b for _, b in pairs]), 4), "n_test": len(pairs)}
            if pairs
            else {"score": None, "n_test": 0, "reason": "no reference target states it"}
        )
    return out


def answer_scores(predictions: Path, test_ids: list[str], test_labels: list[dict], targets=TARGETS) -> dict:
    """The model's own answer on the same test clips (the first task that states the emotion
    or a caption, per clip), scored like the probes. A cue (``cue.*``) is scored on the clips
    whose rationale states it (as the grounding's cue accuracy; ``n_test`` counts them)."""

    best: dict[str, dict] = {}
    with open(predictions) as f:
        for line in f:
            row = json.loads(line)
            if row.get("id") in best:
                continue
            if row.get("emotion") is None and row.get("caption") is None and "emotion" not in row.get("raw", ""):
                continue
            best[row["id"]] = row
    out = {}
    for target in targets:
        truth, pred = [], []
        for utt, labels in zip(test_ids, test_labels):
            if labels[target] is None or utt not in best:
                continue
            row = best[utt]
            if target == "emotion":
                guess = row.get("emotion")
            elif target in CUE_TARGETS:
                stated = {c["cue"]: c["direction"] for c in reversed(parse_cues(row.get("rationale")))}
                guess = stated.get(target.split(".", 1)[1])
                if guess is None:
                    continue  # not stated: the grounding scores only what a rationale says
            elif row.get("caption") is None and not row.get("caption_attributes"):
                continue  # no caption at all (a rationale task): nothing to score, not a miss
            else:
                guess = (row.get("caption_attributes") or caption_attributes(row.get("caption"))).get(target)
            truth.append(labels[target])
            pred.append(guess if guess is not None else "<none>")
        out[target] = (
            {"score": round(score(target, truth, pred), 4), "n_test": len(truth)}
            if truth
            else {"score": None, "n_test": 0, "reason": "no prediction with this field"}
        )
    return out


def ladder(report: dict) -> dict:
    """Per target: the best encoder rung, the answer, and what is lost between them."""
    out = {}
    for target in report.get("targets", TARGETS):
        enc = {
            k: v[target]["score"]
            for k, v in report["rungs"].items()
            if k.startswith("encoder/") and v[target]["score"] is not None
        }
        ans = report["rungs"].get("answer", {}).get(target, {}).get("score")
        if not enc:
            continue
        best = max(enc, key=enc.get)
        out[target] = {
            "best_encoder_rung": best,
            "best_encoder": enc[best],
            "answer": ans,
            "lost": None if ans is None else round(enc[best] - ans, 4),
        }
    return out


def rung_order(keys) -> list[str]:
    """Rungs in the order the signal travels."""
    keys = list(keys)
    order = [k for k in ("measurements",) if k in keys]
    order += sorted(k for k in keys if k.startswith("encoder/"))
    for branch in ("content", "descriptor"):
        order += [f"{branch}/{r}" for r in ("input", "z", "tokens") if f"{branch}/{r}" in keys]
    order += [k for k in ("llm/teacher_forced", "answer") if k in keys]
    return order


def plot(report: dict, path: Path) -> None:
    """Accuracy per rung (the encoder's layers as their best), one line per target."""

    matplotlib.use("Agg")

    rungs = report["rungs"]
    names = [k for k in rung_order(rungs) if not k.startswith("encoder/")]
    enc = [k for k in rungs if k.startswith("encoder/")]
    if enc:
        names.insert(1 if "measurements" in names else 0, "encoder (best layer)")
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for target in report.get("targets", TARGETS):
        ys = []
        for n in names:
            if n == "encoder (best layer)":
                vals = [rungs[k][target]["score"] for k in enc if rungs[k][target]["score"] is not None]
                ys.append(max(vals) if vals else float("nan"))
            else:
                v = rungs[n].get(target, {}).get("score")
                ys.append(float("nan") if v is None else v)
        if all(math.isnan(y) for y in ys):
            continue
        ax.plot(range(len(names)), ys, marker="o", label=target + (" (UA)" if target == "emotion" else ""))
    ax.set_xticks(range(len(names)), names, rotation=25, ha="right")
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("test accuracy of a probe")
    ax.set_title(f"information ladder: {report['run_dir']}")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_probe(
    run_dir: Path,
    ckpt: Path | None,
    n_train: int,
    n_test: int | None,
    measurements: bool,
    workers: int,
    overrides: list[str],
    teacher_forced: bool = True,
) -> dict:
    """Load the run, collect each rung's features on train/test clips, fit and score the probes."""

    start = time.time()
    ckpt = ckpt or final_checkpoint(run_dir)
    cfg, dm, module, run_dir = load_trained(ckpt, overrides)
    model = module.model.cpu()
    model.eval()
    train, _ = dm.usable_clips("train_split")
    test, _ = dm.usable_clips("test_split")
    train, test = train[:n_train], (test[:n_test] if n_test else test)
    if not train or not test:
        raise ValueError(f"{run_dir}: {len(train)} training and {len(test)} test clips; the probe needs both")
    train_y = [target_labels(r) for _, r in train]
    test_y = [target_labels(r) for _, r in test]
    targets = present_targets(train_y) or list(TARGETS)
    report: dict = {
        "run_dir": str(run_dir),
        "checkpoint": str(ckpt),
        "n_train": len(train),
        "n_test": len(test),
        "probe": {
            "measurements": "HistGradientBoostingClassifier on nine measurements",
            "states": "StandardScaler + LogisticRegression(C=0.1) on mean+std over frames",
        },
        "score": {"emotion": "UA (mean per-class recall)", "attributes": "accuracy"},
        "targets": targets,
        "rungs": {},
    }
    if measurements:
        sr = dm.cfg.sampling_rate
        f_tr = measurement_features(train, sr, workers, "measuring (train)")
        f_te = measurement_features(test, sr, workers, "measuring (test)")
        report["rungs"]["measurements"] = {
            t: fit_probe("trees", f_tr, [y[t] for y in train_y], f_te, [y[t] for y in test_y], t) for t in targets
        }
    with torch.no_grad(), decode_precision(cfg, torch.device("cpu"), model):
        s_tr = model_states(model, train, desc="states (train)")
        s_te = model_states(model, test, desc="states (test)")
    for rung in rung_order(s_tr):
        report["rungs"][rung] = {
            t: fit_probe("linear", s_tr[rung], [y[t] for y in train_y], s_te[rung], [y[t] for y in test_y], t)
            for t in targets
        }

    tasks = [t for t in cfg.eval.tasks if {"caption", "emotion"} & set(get_task(t).fields)]
    if teacher_forced and tasks:
        with torch.no_grad(), decode_precision(cfg, torch.device("cpu"), model):
            choices = teacher_forced_choices(model, test, tasks[0], list(cfg.training.labels))
        report["rungs"]["llm/teacher_forced"] = teacher_forced_scores(choices, test_y, targets)
        report["teacher_forced_task"] = tasks[0]
    preds = run_dir / "predictions.jsonl"
    if preds.exists():
        report["rungs"]["answer"] = answer_scores(preds, [r["id"] for _, r in test], test_y, targets)
    else:
        report["answer_missing"] = f"{preds} not found (evaluate the run first)"
    report["ladder"] = ladder(report)
    report["seconds"] = round(time.time() - start, 1)
    return report


def final_checkpoint(run_dir: Path) -> Path:
    """The last stage's final checkpoint of a run directory."""
    finals = sorted(run_dir.glob("*/final.ckpt"), key=lambda p: p.stat().st_mtime)
    if not finals:
        raise FileNotFoundError(f"{run_dir}: no */final.ckpt (a finished run directory is needed, or --ckpt)")
    return finals[-1]


def table(report: dict) -> str:
    targets = report.get("targets", TARGETS)
    width = max(9, *(len(t) + 1 for t in targets))
    lines = [f"{'rung':<22}" + "".join(f"{t:>{width}}" for t in targets)]
    for rung in rung_order(report["rungs"]):
        cells = []
        for t in targets:
            v = report["rungs"][rung].get(t, {}).get("score")
            cells.append(f"{v:>{width}.3f}" if v is not None else f"{'-':>{width}}")
        lines.append(f"{rung:<22}" + "".join(cells))
    lines.append(
        "lost between the best encoder layer and the answer: "
        + ", ".join(f"{t} {v['lost']:+.3f}" for t, v in report["ladder"].items() if v["lost"] is not None)
    )
    return "\n".join(lines)
