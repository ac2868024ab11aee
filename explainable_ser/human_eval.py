"""Human evaluation of explanations: a blinded rating sheet, its aggregation, and an LLM judge.

    python -m explainable_ser.human_eval export --predictions A=runs/a/predictions.jsonl \\
        B=runs/b/predictions.jsonl --n 100 --seed 0 --out sheets/round1
    python -m explainable_ser.human_eval aggregate sheets/round1_rater*.csv --key sheets/round1.key.json
    python -m explainable_ser.human_eval judge sheets/round1/sheet.csv --key sheets/round1.key.json \\
        [--judge pkg:smollm2-135m-instruct] --out sheets/round1_judge.csv

``export`` draws ``--n`` utterances (seeded) that every system decoded, and writes one sheet
row per (utterance, system) in a shuffled order under a blind item name: the clip, the
system's emotion and explanation (its rationale when it has one, else its descriptor
caption; ``--explanation`` chooses), and empty Likert columns (1-5) for **plausibility**
(would a listener accept this reason for this emotion?), **grounding** (are the cues it
states actually in the audio?) and **faithfulness** (does the explanation support the emotion
given?). The clips are copied under blind names (``--audio paths`` lists their paths
instead). Which system wrote which row is in the key file, written *beside* the sheet's
folder (``OUT.key.json``), so the folder can be handed to raters as it is.

``aggregate`` reads one filled copy of the sheet per rater (the rater is the ``rater``
column, else the file name), checks every rating (1-5 or blank), and gives per system and
criterion the mean with a 95 % t-interval over items (each item's ratings averaged first),
and the inter-rater agreement as Krippendorff's alpha (ordinal; the ``krippendorff``
package). Sheets whose rater starts with ``automatic:`` (the judge's) are summarised apart
and never enter the human means or alpha.

``judge`` fills a copy of the sheet with an instruct LLM: for each row and criterion the
model reads a fixed rubric (:data:`RUBRIC`, versioned) with the emotion, the explanation,
the utterance's transcript and its measured attributes (from the key; it does not hear the
audio), and its score is the most probable of the tokens 1-5. The copy's rater is
``automatic: llm-judge <model>``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


# -- command line -----------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m explainable_ser.human_eval",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("export", help="write a blinded rating sheet and its key")
    ex.add_argument(
        "--predictions",
        nargs="+",
        required=True,
        metavar="[NAME=]PATH",
        help="each system's predictions.jsonl (NAME defaults to its run directory's name)",
    )
    ex.add_argument("--n", type=int, default=100, help="utterances to rate (default 100)")
    ex.add_argument("--seed", type=int, default=0)
    ex.add_argument("--out", required=True, help="the sheet's folder (the key goes to OUT.key.json)")
    ex.add_argument(
        "--explanation",
        choices=["auto", "rationale", "caption"],
        default="auto",
        help="what is rated: auto (default) = the rationale where there is one, else the caption",
    )
    ex.add_argument(
        "--audio",
        choices=["copy", "paths"],
        default="copy",
        help="copy the clips under blind names (default) or list their paths",
    )
    ag = sub.add_parser("aggregate", help="per-system means with 95%% intervals and Krippendorff's alpha")
    ag.add_argument("sheets", nargs="+", help="filled sheets, one per rater")
    ag.add_argument("--key", required=True)
    ag.add_argument("--out", help="also write the summary JSON here")
    jd = sub.add_parser("judge", help="fill a sheet with an instruct LLM (labelled automatic)")
    jd.add_argument("sheet")
    jd.add_argument("--key", required=True)
    jd.add_argument(
        "--judge",
        default="pkg:smollm2-135m-instruct",
        help="any HF instruct model (default: the packaged SmolLM2-135M-Instruct)",
    )
    jd.add_argument("--out", required=True)
    jd.add_argument("--batch-size", type=int, default=8)
    jd.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    # The implementation (torch, lhotse, the models) loads after the arguments are checked,
    # so that --help and argument errors answer at once.
    from explainable_ser.analysis.rating import SheetError, aggregate, export, judge, parse_systems

    try:
        if args.command == "export":
            res = export(
                parse_systems(args.predictions), Path(args.out), args.n, args.seed, args.explanation, args.audio
            )
            print(
                f"{res['n_items']} rows ({res['n_utterances']} utterances x systems) -> {res['sheet']}; "
                f"key (keep it from the raters) -> {res['key']}",
                file=sys.stderr,
            )
        elif args.command == "aggregate":
            res = aggregate([Path(s) for s in args.sheets], Path(args.key))
            text = json.dumps(res, indent=2)
            if args.out:
                Path(args.out).write_text(text + "\n", encoding="utf-8")
            print(text)
        else:
            res = judge(Path(args.sheet), Path(args.key), Path(args.out), args.judge, args.batch_size, args.device)
            print(f"{res['n_rows']} rows rated by {res['rater']} -> {res['sheet']}", file=sys.stderr)
    except (SheetError, FileNotFoundError, ValueError) as err:  # ValueError: a judge that cannot score
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
