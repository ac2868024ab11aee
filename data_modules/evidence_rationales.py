"""``python -m data_modules.rationales --source evidence``: rationales written from each clip's
measurements (:mod:`data_modules.evidence`), with no LLM, and optionally paraphrased by one.

Steps, each counted in ``OUT.report.json``:

1. **Measure** every record (``attributes.measured`` of an annotated manifest is used as it is;
   otherwise :mod:`data_modules.annotate`'s measurements, in ``--workers`` processes). Each
   measurement is appended to ``OUT.progress.jsonl`` as it comes, so a re-run resumes.
2. **References**: the speakers' usual values and the emotions' profiles, from this manifest
   (saved as ``OUT.references.json``) or from ``--references`` (the training split's, for dev and
   test).
3. **Rationales**: the cues supporting each label, strongest first (``--describe-first``: the
   clip's clearest cues whatever its label, stated before it), in one of a few templates
   with their numbers; every rationale is read back by the grounding parser and checked against
   its own measurements (a mismatch is counted as a contradiction and the rationale dropped).
4. **Paraphrase** (``--paraphrase MODEL``): an instruct LLM rewrites each rationale; the rewrite
   is kept only when the parser finds the same cues, in the same directions, all true to the
   measurements, and the same emotion and no other; else the template stands (so does it for a
   copy of the template, ``unchanged``, and a reply echoing the prompt, ``prompt_echo``). Rewrites are
   appended to ``OUT.paraphrase.jsonl`` (resumable).

Each record gets ``rationale``, ``rationale_cues`` (``{cue, direction, value, unit, reference,
deviation, delta_unit, supports}``), ``rationale_source`` and ``attributes.evidence`` (every
cue's measurement, reference and direction, what grounding checks a generated rationale
against) plus ``attributes.measured``.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import sys
import time
from collections import Counter
from pathlib import Path

from lhotse import CutSet
from tqdm import tqdm

from data_modules import evidence as E
from data_modules.records import EMOTIONS, read_progress, record_of

EVIDENCE_VERSION = 1
"""Version of the cues, dead zones, cue choice and templates (``rationale_source``)."""

PARAPHRASE_PROMPT = (
    "You rewrite sentences about a voice. Keep every number with its unit, keep each description "
    "of pitch, pitch range, volume and pace, keep the emotion word, add nothing. Answer with the "
    "rewritten sentence only.",
    "Rewrite in other words: {rationale}",
)


def measure_all(cuts: list, records: list[dict], path: Path, workers: int, progress: bool) -> dict[str, dict]:
    """Measurements per id: the record's own, the progress file's, else measured now."""
    from data_modules.annotate.measure import measure_cuts

    done = {k: v["measured"] for k, v in read_progress(path).items()}
    for rec in records:
        own = (rec.get("attributes") or {}).get("measured")
        if rec["id"] not in done and isinstance(own, dict) and own.get("null_reasons") is not None:
            done[rec["id"]] = own
    todo = [c for c in cuts if c.id not in done]
    if todo:
        if len(done):
            print(f"resuming: {len(done)} clips already measured", file=sys.stderr)
        with open(path, "a", encoding="utf-8") as sink:
            for cut_id, measured, _ in measure_cuts(todo, workers=workers, progress=progress, total=len(todo)):
                sink.write(json.dumps({"id": cut_id, "measured": measured}) + "\n")
                sink.flush()
                done[cut_id] = measured
    return done


def paraphrase_ok(text: str, cues: list[dict], emotion: str, evidence: dict, numbers: bool = True) -> str | None:
    """Why a paraphrase is rejected (None: kept)."""
    from explainable_ser.evaluation.grounding import check_rationale, emotion_words

    checked = check_rationale(text, evidence)
    if {(c["cue"], c["direction"]) for c in checked} != {(c["cue"], c["direction"]) for c in cues}:
        return "cues_changed"
    if any(c["verdict"] != "right" for c in checked):
        return "cue_contradicted"
    if numbers and any(c["value"] is None for c in checked):  # every cue keeps its number
        return "number_dropped"
    if emotion_words(text, EMOTIONS) != {emotion}:
        return "emotion_changed"
    return None


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9.+-]+", text.lower())


def paraphrase_all(rows: dict[str, dict], evidences: dict, args, path: Path) -> tuple[dict, Counter, float]:
    """``{id: kept paraphrase}``, the reasons of rejection, and the seconds it took."""
    from explainable_ser.model.teacher import InstructLM

    done = read_progress(path)
    todo = [i for i in rows if i not in done]
    t0 = time.perf_counter()
    if todo:
        lm = InstructLM.load(args.paraphrase, device=args.device)
        with (
            open(path, "a", encoding="utf-8") as sink,
            tqdm(total=len(todo), unit="utt", desc="paraphrase", file=sys.stderr, disable=args.no_progress) as bar,
        ):
            for start in range(0, len(todo), args.batch_size):
                ids = todo[start : start + args.batch_size]
                prompts = [
                    lm.render(PARAPHRASE_PROMPT[0], PARAPHRASE_PROMPT[1].format(rationale=rows[i]["rationale"]))
                    for i in ids
                ]
                replies = lm.generate(prompts, max_new_tokens=args.max_new_tokens, seed=args.seed + start)
                for i, text in zip(ids, replies):
                    done[i] = {"id": i, "text": " ".join(text.split())}
                    sink.write(json.dumps(done[i], ensure_ascii=False) + "\n")
                bar.update(len(ids))
    kept, reasons = {}, Counter()
    for i, row in rows.items():
        text = done[i]["text"]
        if not text:
            why = "empty"
        elif _words(text) == _words(row["rationale"]):  # a copy (a small model often echoes)
            why = "unchanged"
        elif "rewrite" in text.lower():
            why = "prompt_echo"
        else:
            why = paraphrase_ok(text, row["rationale_cues"], row["emotion"], evidences[i], args.numbers)
        if why is None:
            kept[i] = text
        else:
            reasons[why] += 1
    return kept, reasons, time.perf_counter() - t0


def run_evidence(args) -> dict:
    from explainable_ser.evaluation.grounding import check_rationale, emotion_words

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cuts = list(CutSet.from_file(args.manifest))
    records = [record_of(c) for c in cuts]
    t0 = time.perf_counter()
    measured = measure_all(
        cuts, records, out.with_name(out.name + ".progress.jsonl"), args.workers, not args.no_progress
    )
    measure_s = time.perf_counter() - t0

    if args.references:
        refs = E.load_references(args.references)
    else:
        refs = E.build_references((r.get("speaker"), r.get("emotion"), measured[r["id"]]) for r in records)
        refs["profiles"] = E.build_profiles(
            (r.get("emotion"), E.clip_evidence(measured[r["id"]], r.get("speaker"), refs)) for r in records
        )
        refs["source"] = str(args.manifest)
    E.save_references(refs, out.with_name(out.name + ".references.json"))

    rows: dict[str, dict] = {}
    evidences: dict[str, dict] = {}
    failures: list[dict] = []
    contradictions: list[dict] = []
    bases: Counter = Counter()
    for rec in records:
        ev = E.clip_evidence(measured[rec["id"]], rec.get("speaker"), refs)
        evidences[rec["id"]] = ev
        bases.update(e["basis"] for e in ev.values())
        if rec.get("emotion") is None:
            failures.append({"id": rec["id"], "reason": "no_emotion"})
            continue
        if not ev:
            reasons = (measured[rec["id"]].get("null_reasons") or {}).values()
            failures.append({"id": rec["id"], "reason": "no_measured_cue: " + "; ".join(sorted(set(reasons)))})
            continue
        by = "strength" if args.describe_first else "profile"
        cues = E.choose_cues(
            rec["emotion"], ev, refs.get("profiles", {}), args.max_cues, args.min_cues, args.min_strength, by
        )
        rng = E.rng_for(rec["id"], args.seed)
        text = E.render_rationale(rec["emotion"], cues, rng, numbers=args.numbers, describe_first=args.describe_first)
        checked = check_rationale(text, ev)
        if (
            [(c["cue"], c["direction"]) for c in checked] != [(c["cue"], c["direction"]) for c in cues]
            or any(c["verdict"] != "right" for c in checked)
            or emotion_words(text, EMOTIONS) != {rec["emotion"]}
        ):
            contradictions.append({"id": rec["id"], "rationale": text, "checked": checked})
            continue
        rows[rec["id"]] = {"rationale": text, "rationale_cues": cues, "emotion": rec["emotion"]}

    source = f"evidence-v{EVIDENCE_VERSION}"
    paraphrased, rejected, para_s = {}, Counter(), 0.0
    if args.paraphrase:
        paraphrased, rejected, para_s = paraphrase_all(
            rows, evidences, args, out.with_name(out.name + ".paraphrase.jsonl")
        )

    with CutSet.open_writer(out) as writer:
        for cut in cuts:
            custom = dict(cut.supervisions[0].custom or {})
            attributes = dict(custom.get("attributes") or {})
            attributes["measured"] = measured[cut.id]
            attributes["evidence"] = evidences[cut.id]
            custom["attributes"] = attributes
            row = rows.get(cut.id)
            custom["rationale"] = None if row is None else paraphrased.get(cut.id, row["rationale"])
            custom["rationale_cues"] = None if row is None else row["rationale_cues"]
            custom["rationale_source"] = (
                None if row is None else (f"{source}+paraphrase:{args.paraphrase}" if cut.id in paraphrased else source)
            )
            cut.supervisions[0].custom = custom
            writer.write(cut)
    with open(out.with_name(out.name + ".failures.jsonl"), "w", encoding="utf-8") as f:
        for row in failures + [{"id": c["id"], "reason": "contradiction"} for c in contradictions]:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")

    texts = [paraphrased.get(i, r["rationale"]) for i, r in rows.items()]
    n_cues = [len(r["rationale_cues"]) for r in rows.values()]
    pick = random.Random(args.seed).sample(sorted(rows), min(5, len(rows)))
    report = {
        "manifest": str(args.manifest),
        "out": str(out),
        "source": source,
        "numbers": args.numbers,
        "min_strength": args.min_strength,
        "max_cues": args.max_cues,
        "min_cues": args.min_cues,
        "describe_first": args.describe_first,
        "references": args.references or str(out.with_name(out.name + ".references.json")),
        "reference_basis": dict(bases),
        "n_records": len(records),
        "n_with_rationale": len(rows),
        "distinct_rate": len(set(texts)) / len(texts) if texts else None,
        "cues_per_rationale": sum(n_cues) / len(n_cues) if n_cues else None,
        "cue_counts": dict(sorted(Counter(n_cues).items())),
        "supporting_cue_share": (
            sum(c["supports"] for r in rows.values() for c in r["rationale_cues"]) / sum(n_cues) if n_cues else None
        ),
        "contradictions": len(contradictions),
        "contradiction_examples": contradictions[:5],
        "paraphrase": None
        if not args.paraphrase
        else {
            "model": args.paraphrase,
            "prompt_sha256": hashlib.sha256("\n".join(PARAPHRASE_PROMPT).encode()).hexdigest(),
            "kept": len(paraphrased),
            "template_kept": len(rows) - len(paraphrased),
            "rejected": dict(rejected),
            "seconds": round(para_s, 1),
        },
        "failures": dict(Counter(r["reason"].split(":")[0] for r in failures)),
        "measure_seconds": round(measure_s, 1),
        "examples": [
            {"id": i, "rationale": paraphrased.get(i, rows[i]["rationale"]), "cues": rows[i]["rationale_cues"]}
            for i in pick
        ],
    }
    out.with_name(out.name + ".report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def summary_line(report: dict) -> str:
    para = report["paraphrase"]
    para_text = "" if para is None else f"; paraphrased {para['kept']}, template kept {para['template_kept']}"
    return (
        f"{report['n_with_rationale']} of {report['n_records']} records with an evidence rationale "
        f"({report['cues_per_rationale'] or 0:.2f} cues each, {100 * (report['distinct_rate'] or 0):.1f} % distinct, "
        f"{report['contradictions']} contradictions{para_text}); failures {report['failures'] or 'none'} "
        f"-> {report['out']} (report: {report['out']}.report.json)"
    )
