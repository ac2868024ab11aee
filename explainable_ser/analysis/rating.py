"""Human evaluation of explanations: the rating sheet (blind, shuffled systems, audio links, the
rubric), reading raters' sheets back, agreement and means with intervals, and the LLM judge."""

from __future__ import annotations

import csv
import json
import random
import shutil
import sys
from pathlib import Path

import krippendorff
import numpy as np
from scipy import stats
from tqdm import tqdm

from data_modules.streaming import read_split
from explainable_ser.config import load_config
from explainable_ser.evaluation.grounding import check_rationale
from explainable_ser.evaluation.report import read_predictions
from explainable_ser.model.prompts import get_task
from explainable_ser.model.teacher import InstructLM

CRITERIA = ("plausibility", "grounding", "faithfulness")
LIKERT = (1, 2, 3, 4, 5)
SHEET_COLUMNS = ("item", "audio", "emotion", "explanation", "measurements", *CRITERIA, "comment")
AUTOMATIC = "automatic:"

RUBRIC_VERSION = 2
RUBRIC = {
    "plausibility": "Would a listener accept this explanation as a reason for the emotion given? "
    "1 = not at all, 5 = fully.",
    "grounding": "Are the acoustic cues the explanation states (pitch, pitch range, volume, speed, "
    "gender, emphasised word) consistent with the measurements of the clip? 1 = they contradict "
    "them, 5 = every stated cue agrees.",
    "faithfulness": "Does the explanation support the emotion it comes with (rather than another "
    "emotion)? 1 = it contradicts it, 5 = it clearly supports it.",
}
"""The judge's rubric, one question per criterion (the human sheet's README says the same)."""


class SheetError(ValueError):
    """A sheet, key or predictions file that cannot be used: the message names file and row."""


# -- export -----------------------------------------------------------------------------------
def emotion_rows(path: Path) -> dict[str, dict]:
    """The emotion-task rows of a predictions.jsonl, by utterance id (rows of other tasks, or of
    tasks this version does not know, are not rated)."""

    try:
        rows = read_predictions(path)
    except ValueError as err:
        raise SheetError(str(err)) from None
    out = {}
    for (utt, task), row in rows.items():
        try:
            fields = get_task(task).fields
        except (KeyError, ValueError):
            continue
        if "emotion" in fields:
            out[utt] = row
    if not out:
        raise SheetError(f"{path}: no row of an emotion task (an evaluate/fit predictions.jsonl is needed)")
    return out


def explanation_of(row: dict, which: str) -> str | None:
    if which == "rationale":
        return row.get("rationale")
    if which == "caption":
        return row.get("caption")
    return row.get("rationale") or row.get("caption")


def describe_measurements(evidence: dict | None) -> str:
    """The clip's measured cues in words a rater can check an explanation against, e.g.
    ``pitch 239 Hz (usual 180 Hz: high); volume -15.3 LUFS (+5.2 dB from usual: high)``."""
    parts = []
    for cue, ev in (evidence or {}).items():
        usual = f"usual {ev['reference']:g} {ev['unit']}"
        if ev["unit"] != ev["delta_unit"] and cue == "volume":
            usual = f"{ev['deviation']:+.1f} dB from usual"
        parts.append(f"{cue} {ev['value']:g} {ev['unit']} ({usual}: {ev['direction']})")
    return "; ".join(parts)


def audio_paths(predictions: Path) -> dict[str, str]:
    """Utterance id -> audio file, from the test manifests of the run beside the predictions
    (its ``config.yaml``); empty when there is none."""
    config = predictions.parent / "config.yaml"
    if not config.is_file():
        return {}

    cfg = load_config([str(config)])
    out = {}
    for spec in cfg.data.corpora:
        if spec.test_split is None:
            continue
        try:
            cuts = read_split(spec, spec.test_split, metadata_only=True)
            for cut in cuts:
                src = cut.recording.sources[0]
                if src.type == "file":
                    out[cut.id] = str(Path(src.source).resolve())
        except FileNotFoundError:
            continue
    return out


def parse_systems(items: list[str]) -> dict[str, Path]:
    systems = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:  # a bare path: the run directory's name
            path, name = item, Path(item).resolve().parent.name
        if name in systems:
            raise SheetError(f"system {name!r} named twice (give NAME=PATH)")
        if not Path(path).is_file():
            raise SheetError(f"predictions file not found: {path}")
        systems[name] = Path(path)
    return systems


def export(
    systems: dict[str, Path], out: Path, n: int, seed: int = 0, explanation: str = "auto", audio: str = "copy"
) -> dict:
    """Write ``out/sheet.csv`` (+ ``out/audio/``, ``out/README.txt``) and ``out.key.json``."""
    preds = {name: emotion_rows(p) for name, p in systems.items()}
    common = sorted(set.intersection(*(set(r) for r in preds.values())))
    usable = [u for u in common if all(explanation_of(preds[s][u], explanation) for s in preds)]
    if not usable:
        raise SheetError(
            f"no utterance has an {explanation} explanation in every system ({len(common)} decoded by all)"
        )
    if n > len(usable):
        print(f"note: {n} utterances asked for, {len(usable)} usable in every system: taking all", file=sys.stderr)
    rng = random.Random(seed)
    chosen = rng.sample(usable, min(n, len(usable)))
    paths: dict[str, str] = {}
    for p in systems.values():
        paths.update(audio_paths(p))
    missing = [u for u in chosen if u not in paths]
    if missing:
        raise SheetError(
            f"{len(missing)} of {len(chosen)} utterances have no audio file found (first: "
            f"{missing[0]}); the predictions need their run's config.yaml beside them"
        )
    if out.exists():
        raise SheetError(f"{out} exists: pick a new folder for a new sheet")
    key_path = out.with_name(out.name + ".key.json")
    clip_names = {u: f"clip{i:04d}{Path(paths[u]).suffix}" for i, u in enumerate(rng.sample(chosen, len(chosen)))}
    pairs = [(u, s) for u in chosen for s in systems]
    rng.shuffle(pairs)
    out.mkdir(parents=True)
    if audio == "copy":
        (out / "audio").mkdir()
        for u in chosen:
            shutil.copy(paths[u], out / "audio" / clip_names[u])
    key = {
        "version": 1,
        "seed": seed,
        "n_utterances": len(chosen),
        "explanation": explanation,
        "systems": {s: str(p) for s, p in systems.items()},
        "rubric_version": RUBRIC_VERSION,
        "items": {},
    }
    with open(out / "sheet.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=SHEET_COLUMNS)
        w.writeheader()
        for i, (u, s) in enumerate(pairs):
            item = f"item{i:04d}"
            row = preds[s][u]
            w.writerow(
                {
                    "item": item,
                    "audio": f"audio/{clip_names[u]}" if audio == "copy" else paths[u],
                    "emotion": row.get("emotion") or "",
                    "explanation": explanation_of(row, explanation),
                    "measurements": describe_measurements((row.get("attributes_ref") or {}).get("evidence")),
                }
            )
            evidence = (row.get("attributes_ref") or {}).get("evidence")
            key["items"][item] = {
                "system": s,
                "id": u,
                "transcript_ref": row.get("transcript_ref"),
                "attributes_ref": {
                    k: v
                    for k, v in (row.get("attributes_ref") or {}).items()
                    if k in ("gender", "pitch", "volume", "speed", "emphasis")
                },
                "evidence": evidence,
                # every stated cue checked against the measurements: what a rater's grounding
                # score is compared with (measurement_agreement)
                "cue_check": None if not evidence else check_rationale(explanation_of(row, explanation), evidence),
            }
    (out / "README.txt").write_text(
        "Rate each row of sheet.csv after listening to its clip (audio column).\n"
        "Write an integer 1-5 in each criterion column (leave it blank if you cannot judge), and\n"
        "put your name in a 'rater' column or in the file name. Do not reorder or rename items.\n\n"
        + "".join(f"{c}: {q}\n" for c, q in RUBRIC.items()),
        encoding="utf-8",
    )
    key_path.write_text(json.dumps(key, indent=2) + "\n", encoding="utf-8")
    return {"sheet": str(out / "sheet.csv"), "key": str(key_path), "n_items": len(pairs), "n_utterances": len(chosen)}


# -- aggregate --------------------------------------------------------------------------------
def read_sheet(path: Path, key: dict) -> tuple[str, dict[str, dict[str, int | None]]]:
    """``(rater, {item: {criterion: rating or None}})``; :class:`SheetError` names a bad cell."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        lacking = [c for c in ("item", *CRITERIA) if c not in (reader.fieldnames or [])]
        if lacking:
            raise SheetError(f"{path}: no column {', '.join(lacking)}")
        raters, ratings = set(), {}
        for line, row in enumerate(reader, 2):
            item = (row.get("item") or "").strip()
            if item not in key["items"]:
                raise SheetError(f"{path} line {line}: item {item!r} is not in the key")
            if item in ratings:
                raise SheetError(f"{path} line {line}: item {item} rated twice")
            cells = {}
            for c in CRITERIA:
                v = (row.get(c) or "").strip()
                if not v:
                    cells[c] = None
                    continue
                try:
                    x = float(v)
                except ValueError:
                    x = None
                if x is None or x not in LIKERT:
                    raise SheetError(f"{path} line {line}: {c} is {v!r}, not an integer from 1 to 5 (or blank)")
                cells[c] = int(x)
            ratings[item] = cells
            if (row.get("rater") or "").strip():
                raters.add(row["rater"].strip())
    if len(raters) > 1:
        raise SheetError(f"{path}: several raters in one sheet ({sorted(raters)}): one file per rater")
    return (raters.pop() if raters else path.stem), ratings


def mean_ci(values: list[float]) -> dict:
    """Mean and 95 % t-interval (over items)."""

    n = len(values)
    if n == 0:
        return {"mean": None, "ci95": None, "n_items": 0}
    m = float(np.mean(values))
    if n == 1:
        return {"mean": m, "ci95": None, "n_items": 1}
    half = float(stats.t.ppf(0.975, n - 1) * np.std(values, ddof=1) / np.sqrt(n))
    return {"mean": m, "ci95": [m - half, m + half], "n_items": n}


def summarise(sheets: dict[str, dict], key: dict) -> dict:
    """Per system and criterion: mean, 95 % CI over items, ratings and blanks; Krippendorff's
    alpha (ordinal) per criterion over all items when two or more raters rated."""

    items = sorted(key["items"])
    out: dict = {"raters": sorted(sheets), "systems": {}, "alpha": {}}
    for system in key["systems"]:
        out["systems"][system] = {}
        mine = [i for i in items if key["items"][i]["system"] == system]
        for c in CRITERIA:
            per_item, n_ratings, n_blank = [], 0, 0
            for i in mine:
                got = [s[i][c] for s in sheets.values() if i in s and s[i][c] is not None]
                n_blank += sum(1 for s in sheets.values() if i in s and s[i][c] is None)
                n_ratings += len(got)
                if got:
                    per_item.append(float(np.mean(got)))
            out["systems"][system][c] = {**mean_ci(per_item), "n_ratings": n_ratings, "n_blank": n_blank}
    for c in CRITERIA:
        if len(sheets) < 2:
            out["alpha"][c] = None
            out.setdefault("reasons", {})["alpha"] = "one rater: no agreement to measure"
            continue

        data = np.array(
            [
                [s.get(i, {}).get(c) if s.get(i, {}).get(c) is not None else np.nan for i in items]
                for s in sheets.values()
            ],
            dtype=float,
        )
        pairable = (np.sum(~np.isnan(data), axis=0) >= 2).sum()
        out["alpha"][c] = (
            float(krippendorff.alpha(reliability_data=data, level_of_measurement="ordinal", value_domain=list(LIKERT)))
            if pairable
            else None
        )
    return out


def aggregate(paths: list[Path], key_path: Path) -> dict:
    key = json.loads(key_path.read_text(encoding="utf-8"))
    human, automatic = {}, {}
    for p in paths:
        rater, ratings = read_sheet(p, key)
        target = automatic if rater.startswith(AUTOMATIC) else human
        if rater in target:
            raise SheetError(f"{p}: rater {rater!r} already read from another sheet")
        target[rater] = ratings
    result = {"key": str(key_path), "n_items": len(key["items"])}
    result["human"] = summarise(human, key) if human else None
    result["automatic"] = {r: summarise({r: s}, key) for r, s in automatic.items()} or None
    result["agreement_with_measurements"] = {
        r: measurement_agreement(s, key) for r, s in {**human, **automatic}.items()
    } or None
    return result


def measurement_agreement(ratings: dict[str, dict], key: dict) -> dict:
    """How a rater's grounding scores agree with the measurement check of the same items: the
    items whose explanation states at least one checkable cue, Spearman's rho between the
    rating and the share of cues the measurements confirm, and the agreement of "grounded"
    (a rating of 4 or 5) with "every stated cue confirmed"."""
    pairs = []
    for item, cells in ratings.items():
        checks = [c for c in key["items"][item].get("cue_check") or [] if c["verdict"] != "unchecked"]
        if checks and cells.get("grounding") is not None:
            pairs.append((cells["grounding"], sum(c["verdict"] == "right" for c in checks) / len(checks)))
    if not pairs:
        return {"n_items": 0, "reason": "no rated item states a cue the measurements can check"}
    rated, share = np.array(pairs, dtype=float).T
    rho = stats.spearmanr(rated, share).statistic if len(pairs) > 2 and rated.std() and share.std() else None
    return {
        "n_items": len(pairs),
        "spearman_rho": None if rho is None or np.isnan(rho) else float(rho),
        "binary_agreement": float(np.mean((rated >= 4) == (share == 1.0))),
        "measured_all_confirmed": float(np.mean(share == 1.0)),
        "rated_grounded": float(np.mean(rated >= 4)),
    }


# -- judge ------------------------------------------------------------------------------------
def judge_prompt(lm, criterion: str, row: dict, context: dict) -> str:
    attrs = ", ".join(f"{k}: {v}" for k, v in (context.get("attributes_ref") or {}).items() if v) or "unknown"
    measured = describe_measurements(context.get("evidence"))
    user = (
        f"Emotion given: {row['emotion'] or 'none'}\n"
        f"Explanation: {row['explanation']}\n"
        f"Transcript: {context.get('transcript_ref') or 'unknown'}\n"
        f"Measured attributes of the speech: {attrs}\n"
        + (f"Measurements against the speaker's usual voice: {measured}\n" if measured else "")
        + "\n"
        f"{RUBRIC[criterion]}\nAnswer with one digit from 1 to 5."
    )
    system = "You rate explanations of emotions recognised in speech. You answer with one digit."
    return lm.render(system, user, answer_prefix="Score: ")


def judge(
    sheet: Path,
    key_path: Path,
    out: Path,
    judge_model: str,
    batch_size: int = 8,
    device: str | None = None,
    progress: bool = True,
) -> dict:

    key = json.loads(key_path.read_text(encoding="utf-8"))
    with open(sheet, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    lm = InstructLM.load(judge_model, device=device)
    jobs = [(r, c) for r in rows for c in CRITERIA]
    choices = [str(v) for v in LIKERT]
    for start in tqdm(
        range(0, len(jobs), batch_size),
        desc=f"judging ({judge_model})",
        unit="batch",
        disable=not progress,
        file=sys.stderr,
    ):
        chunk = jobs[start : start + batch_size]
        prompts = [judge_prompt(lm, c, r, key["items"][r["item"]]) for r, c in chunk]
        for (r, c), probs in zip(chunk, lm.choose(prompts, choices)):
            r[c] = max(probs, key=probs.get)
    rater = f"{AUTOMATIC} llm-judge {judge_model} (rubric v{RUBRIC_VERSION})"
    with open(out, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=[*SHEET_COLUMNS, "rater"], extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({**r, "rater": rater})
    return {"sheet": str(out), "rater": rater, "n_rows": len(rows)}
