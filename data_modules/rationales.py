"""Rationales as data: each utterance's emotion label explained in a sentence or two.

    python -m data_modules.rationales --manifest IN.jsonl.gz --out OUT.jsonl.gz --source evidence \\
        [--references TRAIN_OUT.jsonl.gz.references.json] [--paraphrase MODEL] [--workers 2]
    python -m data_modules.rationales --manifest IN.jsonl.gz --out OUT.jsonl.gz --source teacher \\
        [--teacher pkg:smollm2-135m-instruct | meta-llama/Llama-3.1-8B-Instruct | DIR] \\
        [--prompt-file F] [--batch-size 16] [--max-new-tokens 64] [--seed 0] [--flagged drop|keep]

``--source evidence`` (recommended) writes each rationale from the clip's own measurements,
every cue with its number, with no LLM unless ``--paraphrase`` asks for one
(:mod:`data_modules.evidence_rationales` says how). Make the training split first, then dev
and test with ``--references`` pointing at the training split's references file, so every
split is judged against the same usual voices. The rest of this text is ``--source teacher``
(the default):

For every record with an emotion, the teacher (any HF instruct model; the default is the
packaged SmolLM2-135M-Instruct, which runs offline; Llama-3.1-8B-Instruct is the one to use
on a GPU) reads the transcript, the descriptor caption, the measured or known attributes and
the label, and writes why the speaker sounds that way (arXiv 2509.24187's recipe). OUT is the
manifest with each record's ``rationale`` field filled.

* The prompt is fixed and versioned (:data:`PROMPT`); ``--prompt-file`` replaces it (a text
  file: the first line is the system message, the rest the user message, with the
  placeholders ``{transcript}``, ``{caption}``, ``{attributes}``, ``{emotion}``). The prompt
  used is saved next to the output (``OUT.prompt.txt``), its hash in the report.
* Batched greedy decoding (``--temperature`` > 0 samples, seeded by ``--seed``): the same
  inputs give the same rationales.
* Resumable: each finished rationale is appended to ``OUT.progress.jsonl`` as it comes; a
  re-run with the same arguments skips the ids already there and writes OUT at the end.
* Checked: a rationale that states a cue contradicting the record's attributes ("high
  pitch" for a low-pitched clip, :mod:`explainable_ser.evaluation.grounding`), or whose emotion words
  name another emotion than the label, is **flagged**. ``--flagged drop`` (default) leaves
  its ``rationale`` empty (the text and the reasons stay in ``rationale_rejected``);
  ``--flagged keep`` keeps it with ``rationale_flags``. Either way the report counts them.
* Nothing is lost silently: records without an emotion, empty replies and teacher errors are
  counted by reason in ``OUT.report.json`` and listed in ``OUT.failures.jsonl``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections import Counter
from pathlib import Path

PROMPT_VERSION = 1
PROMPT = (
    "You explain why a speech recording was labelled with an emotion. Answer with one or two "
    "plain sentences and nothing else.",
    "Transcript: {transcript}\n"
    "Description of the voice: {caption}\n"
    "Measured attributes: {attributes}\n"
    "Emotion label: {emotion}\n\n"
    "In one or two sentences, explain why the speaker sounds {emotion}, using only the cues above.",
)
"""(system message, user template) of prompt version :data:`PROMPT_VERSION`."""

_ATTRIBUTES = ("gender", "pitch", "volume", "speed", "emphasis")


def load_prompt(path: str | None) -> tuple[str, str, str]:
    """``(system, user template, version tag)``."""
    if path is None:
        return PROMPT[0], PROMPT[1], f"builtin-v{PROMPT_VERSION}"
    text = Path(path).read_text(encoding="utf-8")
    system, _, user = text.partition("\n")
    if not user.strip():
        raise ValueError(
            f"{path}: the first line is the system message, the rest the user message; the user message is empty"
        )
    if "{emotion}" not in user:
        raise ValueError(f"{path}: the user message must contain {{emotion}}")
    return system.strip(), user.strip(), f"file:{Path(path).name}"


def describe_attributes(attributes: dict) -> str:
    parts = [f"{k} {attributes[k]}" for k in _ATTRIBUTES if attributes.get(k) not in (None, "")]
    return ", ".join(parts) or "none measured"


def user_message(template: str, rec: dict) -> str:
    return template.format(
        transcript=rec.get("transcript") or "(none)",
        caption=rec.get("caption") or "(none)",
        attributes=describe_attributes(rec.get("attributes") or {}),
        emotion=rec["emotion"],
    )


def check(rationale: str, rec: dict, labels) -> list[str]:
    """Why a rationale cannot be trusted: stated cues that contradict the record's attributes,
    emotion words naming another label. Empty when it is fine."""
    from explainable_ser.evaluation.grounding import emotion_words, stated_cues

    attrs = rec.get("attributes") or {}
    flags = []
    for cue, value in stated_cues(rationale).items():
        truth = attrs.get(cue)
        if value is None or truth in (None, ""):
            continue
        if cue == "emphasis":
            if str(truth).strip().lower() != value.strip().lower():
                flags.append(f"emphasis: says '{value}', the record says '{truth}'")
        elif str(truth).lower() != value:
            flags.append(f"{cue}: says {value}, the record says {truth}")
    named = emotion_words(rationale, labels)
    if named and rec["emotion"] not in named:
        flags.append(f"emotion: names {', '.join(sorted(named))}, the label is {rec['emotion']}")
    return flags


def run(args) -> dict:
    from lhotse import CutSet
    from tqdm import tqdm

    from data_modules.records import EMOTIONS, read_progress, record_of
    from explainable_ser.model.teacher import InstructLM

    out = Path(args.out)
    progress_path = out.with_name(out.name + ".progress.jsonl")
    system, template, version = load_prompt(args.prompt_file)
    prompt_text = system + "\n" + template
    out.parent.mkdir(parents=True, exist_ok=True)
    (out.with_name(out.name + ".prompt.txt")).write_text(prompt_text + "\n", encoding="utf-8")
    cuts = CutSet.from_file(args.manifest)
    records = [record_of(c) for c in cuts]
    done = read_progress(progress_path)
    failures: list[dict] = []
    todo = []
    for rec in records:
        if rec["id"] in done:
            continue
        if rec.get("emotion") is None:
            failures.append({"id": rec["id"], "reason": "no_emotion"})
            continue
        todo.append(rec)
    if done:
        print(f"resuming: {len(done)} rationales already in {progress_path}", file=sys.stderr)
    t0 = time.perf_counter()
    lm = InstructLM.load(args.teacher, device=args.device) if todo else None
    load_s = time.perf_counter() - t0
    labels = EMOTIONS
    t0, n_new = time.perf_counter(), 0
    with (
        open(progress_path, "a", encoding="utf-8") as sink,
        tqdm(
            total=len(todo), unit="utt", desc=f"rationales ({args.teacher})", file=sys.stderr, disable=args.no_progress
        ) as bar,
    ):
        for start in range(0, len(todo), args.batch_size):
            batch = todo[start : start + args.batch_size]
            prompts = [lm.render(system, user_message(template, r)) for r in batch]
            try:
                replies = lm.generate(
                    prompts, max_new_tokens=args.max_new_tokens, seed=args.seed + start, temperature=args.temperature
                )
            except Exception as err:  # one bad batch is named, the rest goes on
                failures += [{"id": r["id"], "reason": f"teacher_error: {type(err).__name__}: {err}"} for r in batch]
                bar.update(len(batch))
                continue
            for rec, text in zip(batch, replies):
                text = " ".join(text.split())
                row = {"id": rec["id"], "rationale": text or None, "flags": check(text, rec, labels) if text else []}
                sink.write(json.dumps(row, ensure_ascii=False) + "\n")
                sink.flush()
                done[rec["id"]] = row
                n_new += 1
            bar.update(len(batch))
    gen_s = time.perf_counter() - t0
    counts: Counter = Counter()
    flagged_examples = []
    with CutSet.open_writer(out) as writer:
        for cut in CutSet.from_file(args.manifest):
            row = done.get(cut.id)
            custom = dict(cut.supervisions[0].custom or {})
            custom.pop("rationale_flags", None)
            custom.pop("rationale_rejected", None)
            if row is None:  # not generated (no emotion, a teacher error): left as it was
                pass
            elif row["rationale"] is None:
                counts["empty_rationale"] += 1
                failures.append({"id": cut.id, "reason": "empty_rationale"})
                custom["rationale"] = None
            elif row["flags"]:
                counts["flagged"] += 1
                if len(flagged_examples) < 5:
                    flagged_examples.append({"id": cut.id, "rationale": row["rationale"], "flags": row["flags"]})
                if args.flagged == "keep":
                    custom["rationale"], custom["rationale_flags"] = row["rationale"], row["flags"]
                else:
                    custom["rationale"] = None
                    custom["rationale_rejected"] = {"text": row["rationale"], "flags": row["flags"]}
            else:
                counts["kept"] += 1
                custom["rationale"] = row["rationale"]
            cut.supervisions[0].custom = custom
            writer.write(cut)
    with open(out.with_name(out.name + ".failures.jsonl"), "w", encoding="utf-8") as f:
        for row in failures:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    n_rationales = counts["kept"] + counts["flagged"]
    report = {
        "manifest": str(args.manifest),
        "out": str(out),
        "teacher": args.teacher,
        "prompt": version,
        "prompt_sha256": hashlib.sha256(prompt_text.encode()).hexdigest(),
        "seed": args.seed,
        "temperature": args.temperature,
        "max_new_tokens": args.max_new_tokens,
        "flagged_policy": args.flagged,
        "n_records": len(records),
        "n_generated_this_run": n_new,
        "n_with_rationale": n_rationales,
        "kept": counts["kept"],
        "flagged": counts["flagged"],
        "flagged_rate": counts["flagged"] / n_rationales if n_rationales else None,
        "failures": dict(Counter(r["reason"].split(":")[0] for r in failures)),
        "load_seconds": round(load_s, 1),
        "generation_seconds": round(gen_s, 1),
        "utt_per_s": round(n_new / gen_s, 3) if n_new and gen_s > 0 else None,
        "flagged_examples": flagged_examples,
    }
    out.with_name(out.name + ".report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="python -m data_modules.rationales",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--manifest", required=True, help="a unified cut manifest (.jsonl.gz)")
    p.add_argument("--out", required=True, help="the manifest to write, with rationales")
    p.add_argument(
        "--source",
        choices=["teacher", "evidence"],
        default="teacher",
        help="teacher (default): an instruct LLM writes them; evidence: templates from each clip's "
        "measurements, every cue checkable",
    )
    p.add_argument(
        "--references",
        help="evidence: the usual voices and emotion profiles to judge against (OUT.references.json of "
        "the training split; default: this manifest's own)",
    )
    p.add_argument(
        "--paraphrase",
        metavar="MODEL",
        help="evidence: an instruct LLM (e.g. pkg:smollm2-135m-instruct) rewrites each rationale; a "
        "rewrite is kept only if every cue survives unchanged",
    )
    p.add_argument("--max-cues", type=int, default=3, help="evidence: at most this many cues (default 3)")
    p.add_argument(
        "--min-cues",
        type=int,
        default=2,
        help="evidence: at least this many, topped up with cues that do not support the label (default 2)",
    )
    p.add_argument(
        "--min-strength",
        type=float,
        default=1.0,
        help="evidence: state only clear cues, a deviation of at least this many dead zones (a normal "
        "cue within 1/this of one; a clip with none states its clearest, as by default); default 1: every "
        "cue outside its dead zone",
    )
    p.add_argument(
        "--no-numbers",
        dest="numbers",
        action="store_false",
        help='evidence: state each cue\'s direction without its number ("a loud voice", not "a loud '
        'voice (+6 dB)"); rationale_cues keep the numbers either way',
    )
    p.add_argument(
        "--describe-first",
        action="store_true",
        help="evidence: state the clip's clearest cues whatever its label (not the ones its emotion "
        'usually shows), before the emotion ("A loud voice and a fast pace: the speaker is angry."), '
        "so a model cannot earn the cues by reciting its emotion's usual ones (--min-cues does not apply)",
    )
    p.add_argument("--workers", type=int, default=None, help="evidence: measurement processes (default: min(2, CPUs))")
    p.add_argument(
        "--teacher",
        default="pkg:smollm2-135m-instruct",
        help="an HF instruct model: hub name, local dir, or pkg:NAME (default: the packaged "
        "SmolLM2-135M-Instruct; meta-llama/Llama-3.1-8B-Instruct on a GPU)",
    )
    p.add_argument("--prompt-file", help="a prompt to use instead of the built-in one (see above)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0, help="0 (default): greedy")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--flagged",
        choices=["drop", "keep"],
        default="drop",
        help="what becomes of a rationale that contradicts the record (default drop)",
    )
    p.add_argument("--device", default=None)
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not Path(args.manifest).is_file():
        print(f"error: manifest not found: {args.manifest}", file=sys.stderr)
        return 2
    if args.references and not Path(args.references).is_file():
        print(f"error: references not found: {args.references}", file=sys.stderr)
        return 2
    try:
        if args.source == "evidence":
            from data_modules.evidence_rationales import run_evidence, summary_line

            if args.workers is None:
                from data_modules.cli_types import default_workers

                args.workers = default_workers()
            report = run_evidence(args)
            print(summary_line(report), file=sys.stderr)
            return 0
        report = run(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(
        f"{report['n_with_rationale']} rationales ({report['kept']} kept, {report['flagged']} flagged: "
        f"{args.flagged}); failures {report['failures'] or 'none'}; "
        f"{report['utt_per_s']} utt/s -> {args.out} (report: {args.out}.report.json)",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
