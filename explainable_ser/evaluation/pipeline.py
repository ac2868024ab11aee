"""Evaluating a trained module on the test split: the decoding passes (counterfactuals included), the
metrics, the output files and the summary printed at the end."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from explainable_ser.config import ConfigError, ExperimentConfig
from explainable_ser.evaluation.decoding import Pass, decode_passes
from explainable_ser.evaluation.report import compute_metrics
from explainable_ser.model.prompts import get_task


def write_outputs(rows: list[dict], metrics: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "predictions.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False))


def _fmt(v, digits: int = 3) -> str:
    return f"{v:.{digits}f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else "n/a"


def _target(metrics_key: str, value, targets: dict) -> str:
    if metrics_key not in targets or not isinstance(value, (int, float)):
        return ""
    goal = targets[metrics_key]
    lower = metrics_key == "wer"  # the one headline figure where lower is better
    met = value <= goal if lower else value >= goal
    return f"; target {'<=' if lower else '>='} {goal:g}: {'met' if met else 'not met'}"


def layer_weight_report(model) -> dict:
    """Each branch's softmax layer weights and how far they moved from the uniform 1/L they
    start at (a claim about which layers a branch reads needs that distance to be large)."""
    out = {}
    for branch, w in model.layer_weights().items():
        w = [float(v) for v in w.detach().float().cpu()]
        out[branch] = {"weights": w, "uniform": 1 / len(w), "max_abs_deviation": max(abs(v - 1 / len(w)) for v in w)}
    return out


def counterfactual_lines(cf: dict) -> list[str]:
    """One plain sentence per zeroed stream: how often the answer broke, how often it changed."""
    lines = []
    for stream, c in (cf or {}).items():
        if not c.get("n"):
            continue
        line = f"  {stream} tokens zeroed ({c['n']} utterances): no parseable emotion in {c['unparseable_rate']:.0%}"
        if c["n_both_parsed"]:
            line += (
                f"; among the {c['n_both_parsed']} still parsed, the emotion changed for "
                f"{c['changed_among_parsed_rate']:.0%} (independent answers would change "
                f"{c['changed_if_independent']:.0%}), UA over them {_fmt(c['ua_parsed'])} -> "
                f"{_fmt(c['ua_zeroed_parsed'])} (chance {_fmt(c['chance_ua'], 2)})"
            )
        else:
            line += ": zeroing it breaks the output rather than changing the answer"
        lines.append(line)
    return lines


def summary_lines(metrics: dict, cfg: ExperimentConfig, out_dir: Path, run_dir: Path | None = None) -> list[str]:
    """The end-of-run summary: each headline figure beside what ignoring the audio would give
    (and the config's ``eval.targets``), the counterfactual in words, and where things are."""
    chance = metrics.get("chance") or {}
    targets = dict(cfg.eval.targets)
    n_labels = len(cfg.training.labels)
    lines = [f"== {cfg.name}: test split, {metrics['n_utterances']} utterances =="]
    if metrics.get("ua") is not None:
        lines.append(
            f"emotion   UA {_fmt(metrics['ua'])} (chance {_fmt(chance.get('ua'), 2)} with "
            f"{n_labels} classes{_target('ua', metrics['ua'], targets)}); WA {_fmt(metrics['wa'])} "
            f"(always the most frequent class: {_fmt(chance.get('wa'), 2)}), macro-F1 "
            f"{_fmt(metrics['macro_f1'])}; no parseable emotion in {metrics['n_unparsed']} of "
            f"{metrics['n_utterances']}"
        )
    if metrics.get("wer") is not None:
        wer = metrics["wer"]
        verdict = " - at or above 0.9 the model is not transcribing" if wer >= 0.9 else ""
        lines.append(
            f"ASR       WER {_fmt(wer)} (0 is perfect, an empty transcript gives 1.0"
            f"{_target('wer', wer, targets)}){verdict}"
        )
    aa = metrics.get("attribute_accuracy")
    if aa and aa.get("mean") is not None:
        ch = (chance.get("attribute_accuracy") or {}).get("accuracy", {})
        per = ", ".join(f"{k} {_fmt(v, 2)} ({_fmt(ch.get(k), 2)})" for k, v in aa["accuracy"].items() if v is not None)
        lines.append(
            f"captions  attribute accuracy {_fmt(aa['mean'])} (most frequent value: "
            f"{_fmt((chance.get('attribute_accuracy') or {}).get('mean'), 2)}"
            f"{_target('attribute_accuracy', aa['mean'], targets)}): {per}"
        )
        lines.append(
            "          "
            + ", ".join(f"{k} {_fmt(metrics.get(k))}" for k in ("bleu4", "meteor", "rouge_l", "cider", "spice"))
        )
    cg = (metrics.get("rationale") or {}).get("cue_grounding")
    if cg:
        lines.append(
            f"rationale cues checked against the measurements: accuracy {_fmt(cg['cue_accuracy'])}, "
            f"hallucinated {_fmt(cg['hallucinated_cue_rate'])} of {cg['n_checked_cues']} cues, "
            f"{_fmt(cg['cues_per_rationale'], 2)} cues per rationale, numbers within tolerance "
            f"{_fmt(cg['magnitude_accuracy'])}; rationale emotion = answer emotion {_fmt(cg['emotion_consistency'])}"
        )
        st = cg.get("stereotype")
        if st:
            lines.append(
                f"          {_fmt(st['share'])} of the stated cues are their emotion's stereotype (stating the "
                f"stereotype: accuracy {_fmt(st['baseline_accuracy'])}; off it: {_fmt(st['accuracy_off_stereotype'])} "
                f"of {st['n_off_stereotype']})"
            )
    for branch, lw in (metrics.get("layer_weights") or {}).items():
        top = max(range(len(lw["weights"])), key=lw["weights"].__getitem__)
        lines.append(
            f"layers    {branch}: weights {min(lw['weights']):.3f}-{max(lw['weights']):.3f} over "
            f"{len(lw['weights'])} encoder layers (uniform {lw['uniform']:.3f}, largest at layer "
            f"{top}; at most {lw['max_abs_deviation']:.3f} from uniform)"
        )
    if metrics.get("counterfactual"):
        lines.append("counterfactual (a speech stream zeroed, the emotion decoded again):")
        lines += counterfactual_lines(metrics["counterfactual"])
    lines += [f"warning: {w}" for w in metrics.get("warnings", [])]
    lines.append(f"results   {out_dir / 'metrics.json'}, {out_dir / 'predictions.jsonl'}")
    if run_dir is not None and (run_dir / "tensorboard").is_dir():
        lines.append(f"curves    tensorboard --logdir {run_dir / 'tensorboard'}")
    return lines


def eval_passes(cfg: ExperimentConfig, model) -> dict:
    """The decodes of an evaluation: ``rows`` (``eval.tasks``) and one counterfactual pass per
    stream of ``eval.counterfactual`` (the emotion tasks again, that stream zeroed)."""

    tasks = list(cfg.eval.tasks)
    # The counterfactual zeroes one speech stream: a model without them has none to zero.
    emo_tasks = [t for t in tasks if "emotion" in get_task(t).fields] if getattr(model, "has_descriptor", True) else []
    passes = {"rows": Pass(tasks)}
    for stream in cfg.eval.counterfactual if emo_tasks else []:
        passes[stream] = Pass(emo_tasks, zero_descriptor=stream == "descriptor", zero_content=stream == "content")
    return passes


def evaluate_module(
    module,
    dm,
    cfg: ExperimentConfig,
    out_dir: Path,
    world_size: int | None = None,
    rank: int | None = None,
    run_dir: Path | None = None,
) -> dict:
    """Decode the test split, write predictions.jsonl, metrics.json and summary.txt, print the
    summary (:func:`summary_lines`; ``run_dir`` is where it says the curves are).

    By default each DDP rank decodes its shard and the rows are gathered once; ``world_size=1``
    decodes everything in this process.
    """

    names = [c.name for c in cfg.data.corpora if c.test_split is not None]
    if not names:
        raise ConfigError("no corpus in data.corpora has a test_split to evaluate on")
    if len(names) > 1:
        print(f"note: corpora {names} have a test split; evaluating the first ({names[0]})")
    loader = dm.eval_dataloaders("test_split", world_size, rank)[0]
    sharded = world_size is None or world_size > 1
    n_test = sum(1 for _ in dm.split_cuts("test_split", metadata_only=True)[0][1])
    total = -(-n_test // (world_size or 1))  # this rank's share, for the bar's ETA
    passes = eval_passes(cfg, module.model)
    # One sweep: each test clip is loaded and encoded once for the decodes and the counterfactuals.
    desc = "decoding" + (f" (+ counterfactual: {', '.join(list(passes)[1:])} zeroed)" if len(passes) > 1 else "")
    out = decode_passes(module, loader, cfg, passes, limit=cfg.eval.limit, gather=sharded, total=total, desc=desc)
    rows = out.pop("rows")
    cf_rows = out or None
    metrics = compute_metrics(rows, list(cfg.training.labels), cf_rows, language=cfg.eval.caption_language)
    metrics["layer_weights"] = layer_weight_report(module.model)
    if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
        return metrics  # every rank holds the gathered rows; rank 0 writes them
    write_outputs(rows, metrics, out_dir)
    for warning in metrics["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    summary = summary_lines(metrics, cfg, out_dir, run_dir)
    (out_dir / "summary.txt").write_text("\n".join(summary) + "\n")
    print("\n".join(summary))
    return metrics
