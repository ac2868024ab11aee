"""What the notebooks show, as functions: runs, predictions, curves and comparison tables.

The notebooks in ``notebooks/`` only call these (figures come from :mod:`explainable_ser.evaluation.plots`,
metrics and tests from :mod:`explainable_ser.evaluation` and :mod:`explainable_ser.compare`), so
everything they display is tested here. A *run* is a directory written by ``fit`` or
``evaluate`` (``metrics.json``, ``predictions.jsonl``, ``config.yaml``, ``tensorboard/``) or by
``crossval`` (the same files pooled over folds, plus ``crossval.json``).

Tables are lists of dicts; :func:`markdown_table` renders them (``IPython.display.Markdown``
shows them in a notebook).
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from data_modules.records import read_jsonl
from explainable_ser.analysis.ladder import TARGETS, rung_order
from explainable_ser.evaluation import plots
from explainable_ser.evaluation.significance import CAPTION_TESTS, compare
from explainable_ser.model.prompts import get_task

REPO_ROOT = Path(__file__).resolve().parents[2]

RUNS_ENV = "EXPLAINABLE_SER_RUNS"
"""Environment variable the notebooks read: run directories, comma-separated."""

PAPER_RESULTS_FILE = Path(__file__).with_name("paper_results.json")
"""The paper's systems, numbers (Tables 1-3) and significance marks: the one copy in the project."""
_PAPER = json.loads(PAPER_RESULTS_FILE.read_text())
PAPER_SYSTEMS: dict[str, tuple[str, str]] = {k: (v["id"], v["system"]) for k, v in _PAPER["systems"].items()}
"""Experiment name (``name`` in experiments/*.yaml) -> (paper ID, system), in table order."""
PAPER_RESULTS: dict[str, dict[str, dict[str, float]]] = _PAPER["results"]
"""The paper's numbers (percent / x100) by experiment name and test corpus."""
PAPER_MARKS: dict[str, str] = _PAPER["marks"]
"""Table 2's marks: significant improvement (paired one-tailed t-test, p < 0.05) over that system."""

SUMMARY_KEYS = (
    "ua",
    "wa",
    "macro_f1",
    "wer",
    "bleu4",
    "meteor",
    "rouge_l",
    "cider",
    "spice",
    "n_utterances",
    "n_unparsed",
)
UTTERANCE_ATTRIBUTES = ("gender", "pitch", "volume", "speed")
"""Descriptors of the whole utterance, which the emotion label is expected to agree with (the
emphasised word is a word-level choice, independent of the emotion)."""


# -- runs ------------------------------------------------------------------------------------
@dataclass
class Run:
    """One run directory, loaded."""

    path: Path
    name: str
    """Experiment name from config.yaml (the system), else the directory name."""
    corpus: str | None
    """Corpus of the test split that was evaluated."""
    seed: int | None
    metrics: dict[str, Any]
    rows: list[dict] = field(default_factory=list)
    """predictions.jsonl, one dict per utterance and task."""
    crossval: dict[str, Any] | None = None
    """crossval.json when the run is a cross-validation."""
    labels: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        seed = "" if self.seed is None else f" seed {self.seed}"
        return f"{self.name} ({self.corpus}){seed}"


def resolve(path: str | Path) -> Path:
    """A run path as given, or relative to the repository root (a notebook's kernel runs in
    ``notebooks/``, while ``runs/`` lives at the root)."""
    p = Path(path).expanduser()
    if p.exists() or p.is_absolute():
        return p
    return REPO_ROOT / p if (REPO_ROOT / p).exists() else p


def run_specs(value: str | None = None, default: str = "runs/demo") -> list[str]:
    """Run directories from a comma-separated string (default: the ``EXPLAINABLE_SER_RUNS``
    environment variable, else ``default``)."""
    value = value if value is not None else os.environ.get(RUNS_ENV, default)
    return [s.strip() for s in value.split(",") if s.strip()]


def find_runs(specs: str | Iterable[str]) -> list[Path]:
    """Run directories under each spec: the directory itself when it holds ``metrics.json``,
    else every run below it. Folds of a cross-validation are represented by the
    cross-validation directory (its pooled ``metrics.json``), not listed one by one."""
    if isinstance(specs, str):
        specs = run_specs(specs)
    found: list[Path] = []
    for spec in specs:
        root = resolve(spec)
        if (root / "metrics.json").is_file():
            found.append(root)
            continue
        if not root.is_dir():
            raise FileNotFoundError(f"no run directory at {spec!r} (looked in {root})")
        for m in sorted(root.rglob("metrics.json")):
            # A fold's directory sits below its cross-validation's crossval.json.
            folds_of = [p for p in m.parent.parents if p == root or root in p.parents]
            if not any((p / "crossval.json").is_file() for p in folds_of):
                found.append(m.parent)
    return list(dict.fromkeys(found))


def load_run(run_dir: str | Path) -> Run:
    """Metrics, predictions and the identifying bits of the config of one run directory."""
    path = resolve(run_dir)
    metrics_file = path / "metrics.json"
    if not metrics_file.is_file():
        raise FileNotFoundError(f"{metrics_file} not found: is {run_dir!r} an evaluated run directory?")
    metrics = json.loads(metrics_file.read_text())
    rows = read_jsonl(path / "predictions.jsonl") if (path / "predictions.jsonl").is_file() else []
    name, corpus, seed = path.name, None, None
    if (path / "config.yaml").is_file():
        # Plain OmegaConf, not the typed schema: old runs stay readable when the schema grows.
        cfg = OmegaConf.load(path / "config.yaml")
        name = cfg.get("name", name)
        seed = cfg.get("seed")
        tested = [c for c in cfg.get("data", {}).get("corpora", []) if c.get("test_split")]
        corpus = tested[0]["name"] if tested else None
    cv = path / "crossval.json"
    return Run(
        path=path,
        name=name,
        corpus=corpus,
        seed=seed,
        metrics=metrics,
        rows=rows,
        crossval=json.loads(cv.read_text()) if cv.is_file() else None,
        labels=list(metrics.get("labels") or []),
    )


# -- one run: predictions and metrics ---------------------------------------------------------
def summary(run: Run, keys: Sequence[str] = SUMMARY_KEYS) -> list[dict]:
    """The headline metrics, what a model ignoring the audio would score (``chance``, where
    ``metrics.json`` has it), and the reason where a metric is null."""
    reasons = run.metrics.get("reasons") or {}
    chance = run.metrics.get("chance") or {}
    return [
        {"metric": k, "value": run.metrics.get(k), "chance": chance.get(k), "note": reasons.get(k, "")} for k in keys
    ]


#: What each counterfactual figure means, for the table below and the notebook.
COUNTERFACTUAL_COLUMNS = {
    "unparseable": "zeroed outputs with no emotion the labels know (the model broke)",
    "changed among parsed": "of the utterances whose both outputs name an emotion, the share that differ",
    "changed if independent": "what that share would be if the zeroed answers ignored the normal ones",
    "UA over parsed": "UA of the normal decode -> the zeroed one, on the utterances both parsed",
    "chance UA": "1 / classes: what a constant or random answer gets",
}


def counterfactual_table(run: Run) -> list[dict]:
    """One row per zeroed speech stream (``metrics.json["counterfactual"]``): whether zeroing it
    broke the output or changed the answer. An older run (one combined figure) gives no rows."""
    out = []
    for stream, c in (run.metrics.get("counterfactual") or {}).items():
        if not isinstance(c, dict) or "unparseable_rate" not in c:
            continue
        out.append(
            {
                "stream zeroed": stream,
                "n": c["n"],
                "unparseable": c["unparseable_rate"],
                "changed among parsed": c["changed_among_parsed_rate"],
                "changed if independent": c["changed_if_independent"],
                "UA over parsed": f"{_num(c['ua_parsed'])} -> {_num(c['ua_zeroed_parsed'])}",
                "chance UA": c["chance_ua"],
            }
        )
    return out


def probe_ladder(run: Run) -> list[dict]:
    """The information ladder of ``python -m explainable_ser.probe`` (``probe.json`` in the run
    directory): one row per rung, a probe's test score per target; empty when not probed."""
    path = run.path / "probe.json"
    if not path.is_file():
        return []

    report = json.loads(path.read_text())
    return [
        {"rung": rung, **{t: report["rungs"][rung].get(t, {}).get("score") for t in TARGETS}}
        for rung in rung_order(report["rungs"])
    ]


def _num(v: Any) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def comparison_note(runs: Sequence[Run]) -> str:
    """What the system tables need, when ``runs`` holds fewer than two systems."""
    systems = sorted({r.name for r in runs})
    if len(systems) >= 2:
        return f"{len(systems)} systems: {', '.join(systems)}"
    return (
        f"Only {len(systems)} system here ({', '.join(systems) or 'none'}): the tables below need "
        "two or more to compare. The SynthCraft-scale systems take minutes each on a CPU:\n\n"
        "```bash\nfor s in sys4 sys5 sys6 sys7; do python -m explainable_ser.fit "
        "experiments/synthcraft/$s.yaml; done\n"
        "EXPLAINABLE_SER_RUNS=runs/synthcraft jupyter lab notebooks/compare_systems.ipynb\n```"
    )


def confusion_figure(run: Run):
    """Reference x predicted emotion counts (plus an 'unparsed' column)."""
    if run.metrics.get("ua") is None:
        raise ValueError(f"{run.label}: no emotion was decoded, no confusion matrix")
    return plots.confusion_figure(run.metrics["confusion"], run.labels, title=run.label)


def per_class_recall(run: Run) -> list[dict]:
    """Recall and reference count per emotion class."""
    recall = run.metrics.get("per_class_recall") or {}
    confusion = run.metrics.get("confusion") or []
    return [
        {"emotion": label, "recall": recall.get(label), "n": sum(confusion[i]) if i < len(confusion) else 0}
        for i, label in enumerate(run.labels)
    ]


def attribute_accuracy(run: Run) -> list[dict]:
    """Accuracy of each descriptor read back from the generated captions, beside always
    answering the most frequent value (emphasis: a random word of the transcript)."""
    aa = run.metrics.get("attribute_accuracy") or {}
    acc, n = aa.get("accuracy") or {}, aa.get("n") or {}
    chance = (run.metrics.get("chance") or {}).get("attribute_accuracy") or {}
    out = [
        {"attribute": k, "accuracy": v, "chance": (chance.get("accuracy") or {}).get(k), "n": n.get(k)}
        for k, v in acc.items()
    ]
    if out:
        out.append({"attribute": "mean", "accuracy": aa.get("mean"), "chance": chance.get("mean"), "n": None})
    return out


def _joint_rows(rows: Iterable[dict]) -> list[dict]:
    """Rows of tasks that produce both a caption and an emotion (``ser_sed``, ``asr_ser_sed``)."""
    return [r for r in rows if {"caption", "emotion"} <= set(get_task(r["task"]).fields)]


def caption_label_disagreements(rows: Iterable[dict], keys: Sequence[str] = UTTERANCE_ATTRIBUTES) -> list[dict]:
    """Utterances where the explanation and the decision disagree in correctness.

    For each utterance decoded with a caption and an emotion: the *label* is right when the
    emotion equals the reference; the *caption* is right when every utterance-level descriptor
    the reference knows (``keys``) is read back from it unchanged. Listed: label right but
    caption wrong, or caption right but label wrong, with the descriptors that differ.
    """
    out = []
    for r in _joint_rows(rows):
        ref = r.get("attributes_ref") or {}
        hyp = r.get("caption_attributes") or {}
        known = [k for k in keys if ref.get(k) is not None]
        if r.get("emotion_ref") is None or not known:
            continue
        wrong = [
            f"{k}: {hyp.get(k)} (ref {ref[k]})"
            for k in known
            if str(hyp.get(k) or "").casefold() != str(ref[k]).casefold()
        ]
        label_ok = r.get("emotion") == r["emotion_ref"]
        if label_ok == (not wrong):
            continue
        out.append(
            {
                "id": r["id"],
                "kind": "label right, caption wrong" if label_ok else "caption right, label wrong",
                "emotion_ref": r["emotion_ref"],
                "emotion": r.get("emotion"),
                "caption": r.get("caption"),
                "caption_ref": r.get("caption_ref"),
                "descriptors_wrong": "; ".join(wrong),
            }
        )
    return out


def caption_samples(rows: Iterable[dict], n: int = 10) -> list[dict]:
    """Generated captions beside the references (and the emotions), first ``n`` utterances by id."""
    cap = [r for r in rows if "caption" in get_task(r["task"]).fields]
    cap.sort(key=lambda r: (r["id"], r["task"]))
    return [
        {
            "id": r["id"],
            "task": r["task"],
            "caption_ref": r.get("caption_ref"),
            "caption": r.get("caption"),
            "emotion_ref": r.get("emotion_ref"),
            "emotion": r.get("emotion"),
        }
        for r in cap[:n]
    ]


# -- comparison across systems --------------------------------------------------------------------
def paper_table(metrics: Sequence[str] = ("ua", "wer"), corpora: Sequence[str] = ("iemocap", "meld")) -> list[dict]:
    """The paper's own numbers in the layout of :func:`system_table` (to read beside it)."""
    table = []
    for name, results in PAPER_RESULTS.items():
        pid, desc = PAPER_SYSTEMS[name]
        row: dict[str, Any] = {"ID": pid, "System": desc, "name": name}
        for corpus in corpora:
            for m in metrics:
                value = results.get(corpus, {}).get(m)
                row[f"{corpus} {m}"] = "/" if value is None else f"{value:.1f}"
        table.append(row)
    return table


def runs_overview(runs: Iterable[Run]) -> list[dict]:
    """Which directory is which system, corpus and seed."""
    return [
        {
            "system": r.name,
            "corpus": r.corpus,
            "seed": r.seed,
            "folds": ",".join(map(str, r.crossval["folds"])) if r.crossval else "",
            "ua": r.metrics.get("ua"),
            "wer": r.metrics.get("wer"),
            "path": str(r.path),
        }
        for r in runs
    ]


def significance_table(runs: Iterable[Run], system: str = "sys7", captions: bool = True) -> list[dict]:
    """``system`` against every other system on each shared test corpus: per metric of
    ``compare.compare`` (UA, accuracy, WER, captions) both values, the delta, what the test's
    per-utterance scores are and the one-tailed p-value that ``system`` is better (seeds pooled)."""
    groups: dict[tuple[str, str | None], list[Run]] = {}
    for run in runs:
        groups.setdefault(_group_key(run), []).append(run)
    out = []
    for (name, corpus), group in groups.items():
        if name == system or (system, corpus) not in groups:
            continue
        res = significance(groups[(system, corpus)], group, group[0].labels or None, captions)
        for metric, m in res["metrics"].items():
            out.append(
                {
                    "corpus": corpus,
                    "A": system,
                    "B": name,
                    "metric": metric,
                    "test on": m["test"],
                    "A value": m["a"],
                    "B value": m["b"],
                    "delta": m["delta"],
                    "p (A better)": m["p"],
                    "significant": "yes" if m["significant"] else "no",
                    "pairs": res["n_shared"],
                }
            )
    return out


def _group_key(run: Run) -> tuple[str, str | None]:
    return run.name, run.corpus


def _paired_rows(runs: list[Run], seeds: list[Any]) -> dict[tuple[str, str], dict]:
    """Rows of several seeds as one paired sample: keys ``(f"{seed}/{id}", task)``."""
    by_seed = {r.seed: r for r in runs}
    out = {}
    for seed in seeds:
        for r in by_seed[seed].rows:
            out[(f"{seed}/{r['id']}", r["task"])] = r
    return out


def _metric_value(run: Run, key: str) -> float | None:
    # A cross-validation reports the mean over folds (the usual IEMOCAP figure), not the pooled one.
    if run.crossval and key in run.crossval.get("mean", {}):
        return run.crossval["mean"][key]
    value = run.metrics.get(key)
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def significance(a: list[Run], b: list[Run], labels: list[str] | None = None, captions: bool = True) -> dict[str, Any]:
    """Paired one-tailed t-tests that system A beats system B (``compare.compare``), pooling the
    seeds both have (utterance i of seed s paired with utterance i of seed s). The UA test's
    class weights come from the pooled references."""
    seeds = sorted({r.seed for r in a} & {r.seed for r in b}, key=str)
    if not seeds:
        return {"n_shared": 0, "metrics": {}, "reasons": {}}
    return compare(_paired_rows(a, seeds), _paired_rows(b, seeds), labels, captions=captions)


def system_table(
    runs: Iterable[Run],
    metrics: Sequence[str] = ("ua", "wer"),
    marks: dict[str, str] | None = None,
    systems: dict[str, tuple[str, str]] | None = None,
    scale: float = 100.0,
) -> list[dict]:
    """The paper's layout: one row per system, per test corpus the columns ``metrics`` (x100,
    as the paper prints them), averaged over the system's runs (seeds; a cross-validation is
    one run reporting its mean over folds), ``± std`` over seeds when there are several.

    ``marks`` (default Table 2's, :data:`PAPER_MARKS`): symbol -> baseline system; the symbol
    follows a UA (or WER) value when the row's system is significantly better than that
    baseline on the same utterances (paired one-tailed t-test, p < 0.05, pooled over seeds):
    ``ua`` on class-weighted correctness, ``wer`` on utterance WERs, a caption metric on its
    per-caption scores (see ``compare``).
    """
    marks = PAPER_MARKS if marks is None else marks
    systems = PAPER_SYSTEMS if systems is None else systems
    groups: dict[tuple[str, str | None], list[Run]] = {}
    for run in runs:
        groups.setdefault(_group_key(run), []).append(run)
    corpora = list(dict.fromkeys(c for _, c in groups))
    order = list(systems) + sorted({n for n, _ in groups} - set(systems))
    table = []
    for name in order:
        if not any(n == name for n, _ in groups):
            continue
        pid, desc = systems.get(name, ("", name))
        row: dict[str, Any] = {"ID": pid, "System": desc, "name": name}
        for corpus in corpora:
            group = groups.get((name, corpus), [])
            row[f"{corpus} runs"] = len(group)
            if not group:
                row.update({f"{corpus} {m}": "/" for m in metrics})
                continue
            tests = {
                sym: significance(
                    group,
                    groups[(base, corpus)],
                    group[0].labels or None,
                    captions=any(m in CAPTION_TESTS for m in metrics),
                )
                for sym, base in marks.items()
                if base != name and (base, corpus) in groups
            }
            for m in metrics:
                row[f"{corpus} {m}"] = _cell([_metric_value(r, m) for r in group], scale) + "".join(
                    sym for sym, t in tests.items() if t["metrics"].get(m, {}).get("significant")
                )
        table.append(row)
    return table


def _cell(values: list[float | None], scale: float) -> str:
    present = [v * scale for v in values if v is not None]
    if not present:
        return "/"
    text = f"{statistics.fmean(present):.1f}"
    return text + (f" ± {statistics.stdev(present):.1f}" if len(present) > 1 else "")


# -- rendering ------------------------------------------------------------------------------------
def markdown_table(records: Sequence[dict], columns: Sequence[str] | None = None, digits: int = 3) -> str:
    """A list of dicts as a markdown table (floats rounded, ``None`` as an empty cell)."""
    if not records:
        return "_(nothing to show)_"
    columns = list(columns or dict.fromkeys(k for r in records for k in r))

    def fmt(v: Any) -> str:
        if v is None:
            return ""
        text = f"{v:.{digits}f}" if isinstance(v, float) else str(v)
        return text.replace("|", "\\|").replace("\n", " / ")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in records]
    return "\n".join(lines)
