"""Evaluate: ``python -m explainable_ser.evaluate --ckpt PATH [CONFIG.yaml] [key=value ...]``.

Decodes the test split of every corpus with a ``test_split`` (batched generation with the KV
cache), parses the outputs with the one parser of :mod:`explainable_ser.prompts`, and writes
next to the checkpoint's run directory (or ``--out``):

* ``predictions.jsonl``: one line per utterance and task: id, task, references, raw text, parsed fields
* ``metrics.json``: ua, wa, macro_f1, wer, bleu4, meteor, rouge_l, cider, spice (null with a
  reason where a metric could not run), n_utterances, n_unparsed, and beyond the paper:
  confusion matrix, annotator-aware accuracy, attribute accuracy, a counterfactual probe.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from explainable_ser import metrics as M
from explainable_ser.config import ConfigError, ExperimentConfig
from explainable_ser.prompts import caption_attributes, get_task, parse_output

DESCRIPTION = __doc__


def _gather(rows: list[dict]) -> list[dict]:
    """Each DDP rank decoded its shard; collect all rows once (no-op in one process)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        parts: list = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(parts, rows)
        return [r for part in parts for r in part]
    return rows


@torch.no_grad()
def decode(module, loader, cfg: ExperimentConfig, tasks: list[str], *, zero_descriptor=False,
           limit: int | None = None, desc: str = "decoding", gather: bool = True) -> list[dict]:
    """Generate for every utterance of ``loader`` and every task; returns prediction rows.

    ``gather``: the loader holds this rank's shard, so collect every rank's rows once.
    """
    model = module.model.eval()
    device = next(model.parameters()).device
    rows, seen = [], 0
    with decode_precision(cfg, device):
        for batch in tqdm(loader, desc=desc, leave=False):
            if limit is not None and seen >= limit:
                break
            if not batch["ids"]:
                continue
            n = len(batch["ids"]) if limit is None else min(len(batch["ids"]), limit - seen)
            wave, lens = batch["wave"][:n].to(device), batch["wave_lens"][:n].to(device)
            wave = wave[:, : int(lens.max())]
            seen += n
            rows += decode_batch(model, wave, lens, batch["records"][:n], tasks, cfg,
                                 zero_descriptor=zero_descriptor)
    return _gather(rows) if gather else rows


def decode_precision(cfg: ExperimentConfig, device: torch.device):
    """Decoding outside the Trainer computes as training did: ``bf16-mixed`` runs decode under
    bf16 autocast (on this CPU about 1.5x faster than fp32), other precisions as they are."""
    import contextlib

    if cfg.trainer.precision.startswith("bf16-mixed"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def decode_batch(model, wave, lens, records: list[dict], tasks: list[str], cfg: ExperimentConfig,
                 zero_descriptor: bool = False) -> list[dict]:
    """Prediction rows for one batch: references, raw generated text and parsed fields."""
    labels = tuple(cfg.training.labels)
    rows = []
    for task_name in tasks:
        texts = model.generate(wave, lens, get_task(task_name), num_beams=cfg.eval.num_beams,
                               max_new_tokens=cfg.eval.max_new_tokens, zero_descriptor=zero_descriptor)
        for rec, raw in zip(records, texts):
            parsed = parse_output(raw, labels)
            rows.append({
                "id": rec["id"], "task": task_name, "corpus": rec.get("corpus"),
                "language": rec.get("language"), "transcript_ref": rec.get("transcript"), "caption_ref": rec.get("caption"),
                "emotion_ref": rec.get("emotion"), "attributes_ref": rec.get("attributes"),
                "annotator_emotions": rec.get("annotator_emotions"),
                "raw": raw, "transcript": parsed["transcript"], "caption": parsed["caption"],
                "emotion": parsed["emotion"], "parsed": parsed["parsed"],
                "caption_attributes": caption_attributes(parsed["caption"]),
            })
    return rows


def _emotion_rows(rows):
    return [r for r in rows if "emotion" in get_task(r["task"]).fields]


def compute_metrics(rows: list[dict], labels: list[str], counterfactual_rows: list[dict] | None = None,
                    language: str = "auto", caption_metrics: tuple[str, ...] = M.CAPTION_METRICS) -> dict:
    """``metrics.json`` from prediction rows (keys of the design notes, plus extras).

    ``language`` of the captions: ``en`` (PTB tokens), ``zh`` (characters) or ``auto``: ``zh``
    when most caption rows' records say ``language: zh`` (EMOSEC), else ``en``.
    """
    out: dict = {"n_utterances": len({r["id"] for r in rows}), "reasons": {}}
    emo = _emotion_rows(rows)
    em = M.emotion_metrics([r["emotion_ref"] for r in emo], [r["emotion"] for r in emo], labels)
    out.update(ua=em["ua"], wa=em["wa"], macro_f1=em["macro_f1"], n_unparsed=em["n_unparsed"],
               confusion=em["confusion"], per_class_recall=em["per_class_recall"], labels=labels)
    if not emo:
        out["reasons"]["ua"] = "no emotion task was decoded"
    ann = [r for r in emo if r.get("annotator_emotions")]
    out["annotator_aware_accuracy"] = M.annotator_aware_accuracy(
        [r["annotator_emotions"] for r in ann], [r["emotion"] for r in ann]) if ann else None
    asr = [r for r in rows if "transcript" in get_task(r["task"]).fields and r["transcript_ref"]]
    out["wer"] = M.wer([r["transcript_ref"] for r in asr], [r["transcript"] for r in asr])["wer"] if asr else None
    if not asr:
        out["reasons"]["wer"] = "no transcript task with references was decoded"
    cap = [r for r in rows if "caption" in get_task(r["task"]).fields and r["caption_ref"]]
    if cap:
        if language == "auto":
            zh = sum(str(r.get("language") or "").lower().startswith("zh") for r in cap)
            language = "zh" if zh * 2 > len(cap) else "en"
        out["caption_language"] = language
        cm = M.caption_metrics([r["caption_ref"] for r in cap], [r["caption"] for r in cap], language,
                               metrics=caption_metrics)
        for k in ("bleu4", "meteor", "rouge_l", "cider", "spice"):
            out[k] = cm[k]
        out["reasons"].update(cm.get("reasons", {}))
        aa = M.attribute_accuracy([r["attributes_ref"] or {} for r in cap],
                                  [r["caption_attributes"] for r in cap])
        out["attribute_accuracy"] = aa
    else:
        for k in ("bleu4", "meteor", "rouge_l", "cider", "spice"):
            out[k] = None
            out["reasons"][k] = "no caption task with references was decoded"
        out["attribute_accuracy"] = None
    if counterfactual_rows is not None:
        out["counterfactual"] = counterfactual(emo, _emotion_rows(counterfactual_rows), labels)
    return out


def counterfactual(rows: list[dict], zeroed: list[dict], labels: list[str]) -> dict:
    """Decode again with descriptor tokens zeroed: how often the emotion changes, how UA moves."""
    by_key = {(r["id"], r["task"]): r for r in zeroed}
    pairs = [(r, by_key[(r["id"], r["task"])]) for r in rows if (r["id"], r["task"]) in by_key]
    if not pairs:
        return {"n": 0}
    changed = sum(a["emotion"] != b["emotion"] for a, b in pairs) / len(pairs)
    ua_zero = M.emotion_metrics([b["emotion_ref"] for _, b in pairs], [b["emotion"] for _, b in pairs],
                                labels)["ua"]
    ua = M.emotion_metrics([a["emotion_ref"] for a, _ in pairs], [a["emotion"] for a, _ in pairs],
                           labels)["ua"]
    return {"n": len(pairs), "emotion_changed_rate": changed, "ua": ua,
            "ua_descriptor_zeroed": ua_zero,
            "ua_delta": None if ua is None or ua_zero is None else ua_zero - ua}


def write_outputs(rows: list[dict], metrics: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "predictions.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False))


def print_table(metrics: dict) -> None:
    keys = ["ua", "wa", "macro_f1", "wer", "bleu4", "meteor", "rouge_l", "cider", "spice"]
    print(" ".join(f"{k:>9}" for k in keys))
    print(" ".join(f"{metrics.get(k):>9.4f}" if isinstance(metrics.get(k), float) else f"{'null':>9}"
                   for k in keys))
    aa = metrics.get("attribute_accuracy")
    if aa:
        print("attribute accuracy: " + ", ".join(
            f"{k}={v:.3f}" for k, v in aa.items() if isinstance(v, float)))
    cf = metrics.get("counterfactual")
    if cf and cf.get("n"):
        print(f"counterfactual (descriptor zeroed): emotion changed {cf['emotion_changed_rate']:.3f}, "
              f"UA {cf['ua']:.3f} -> {cf['ua_descriptor_zeroed']:.3f}")
    print(f"utterances: {metrics['n_utterances']}, unparsed emotions: {metrics['n_unparsed']}")


def evaluate_module(module, dm, cfg: ExperimentConfig, out_dir: Path, world_size: int | None = None,
                    rank: int | None = None) -> dict:
    """Decode the test split, write predictions.jsonl and metrics.json, print a table.

    By default each DDP rank decodes its shard and the rows are gathered once; ``world_size=1``
    decodes everything in this process.
    """
    names = [c.name for c in cfg.data.corpora if c.test_split is not None]
    if not names:
        raise ConfigError("no corpus in data.corpora has a test_split to evaluate on")
    if len(names) > 1:
        print(f"note: corpora {names} have a test split; evaluating the first ({names[0]})")
    loader = dm.eval_dataloaders("test_split", world_size, rank)[0]
    tasks = list(cfg.eval.tasks)
    sharded = world_size is None or world_size > 1
    rows = decode(module, loader, cfg, tasks, limit=cfg.eval.limit, gather=sharded)
    emo_tasks = [t for t in tasks if "emotion" in get_task(t).fields]
    cf_rows = decode(module, loader, cfg, emo_tasks, zero_descriptor=True, limit=cfg.eval.limit,
                     desc="counterfactual", gather=sharded) if emo_tasks else None
    metrics = compute_metrics(rows, list(cfg.training.labels), cf_rows, language=cfg.eval.caption_language)
    if torch.distributed.is_available() and torch.distributed.is_initialized() \
            and torch.distributed.get_rank() != 0:
        return metrics  # every rank holds the gathered rows; rank 0 writes them
    write_outputs(rows, metrics, out_dir)
    print_table(metrics)
    print(f"wrote {out_dir / 'predictions.jsonl'} and {out_dir / 'metrics.json'}")
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m explainable_ser.evaluate", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="exit status: 0 done; 2 a bad argument, config or checkpoint, "
                                            "or a missing file (one line on stderr)")
    parser.add_argument("--ckpt", required=True, help="checkpoint (e.g. runs/demo/stage2/final.ckpt)")
    parser.add_argument("--out", default=None, help="output directory (default: the run directory)")
    parser.add_argument("overrides", nargs="*", help="YAML files and key=value overrides")
    args = parser.parse_args(argv)
    from explainable_ser.fit import load_run

    try:
        cfg, dm, module, run_dir = load_run(args.ckpt, list(args.overrides))
        evaluate_module(module, dm, cfg, Path(args.out) if args.out else run_dir)
    except (ConfigError, FileNotFoundError) as err:  # e.g. a test manifest not prepared yet
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
