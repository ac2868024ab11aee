"""Compare two systems: ``python -m explainable_ser.compare A/predictions.jsonl B/predictions.jsonl``.

Pairs the utterances both files decoded (same id and task), then reports per metric the value
of A and of B, the delta, and the paper's significance test: a paired one-tailed t-test that A
is better than B on per-utterance scores (emotion correct = 1/0; ASR: minus the utterance WER),
significant at p < 0.05. Utterances present in only one file are counted and left out.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from explainable_ser import metrics as M
from explainable_ser.prompts import get_task


def read_predictions(path: str | Path) -> dict[tuple[str, str], dict]:
    rows = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                r = json.loads(line)
                rows[(r["id"], r["task"])] = r
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise ValueError(f"{path}:{n}: not a prediction line ({err})") from None
    return rows


def compare(a_rows: dict, b_rows: dict, labels: list[str] | None = None) -> dict:
    shared = sorted(set(a_rows) & set(b_rows))
    out: dict = {"n_shared": len(shared), "only_a": len(set(a_rows) - set(b_rows)),
                 "only_b": len(set(b_rows) - set(a_rows)), "metrics": {}}
    emo = [k for k in shared if "emotion" in get_task(k[1]).fields and a_rows[k]["emotion_ref"]]
    if emo:
        labs = labels or sorted({a_rows[k]["emotion_ref"] for k in emo})
        ua = [M.emotion_metrics([r[k]["emotion_ref"] for k in emo], [r[k]["emotion"] for k in emo],
                                labs)["ua"] for r in (a_rows, b_rows)]
        test = M.paired_t_test(M.per_utterance_scores([a_rows[k] for k in emo], "emotion"),
                               M.per_utterance_scores([b_rows[k] for k in emo], "emotion"))
        out["metrics"]["ua"] = {"a": ua[0], "b": ua[1], "delta": ua[0] - ua[1], **test}
    asr = [k for k in shared if "transcript" in get_task(k[1]).fields and a_rows[k]["transcript_ref"]]
    if asr:
        wer = [M.wer([r[k]["transcript_ref"] for k in asr], [r[k]["transcript"] for k in asr])["wer"]
               for r in (a_rows, b_rows)]
        test = M.paired_t_test(M.per_utterance_scores([a_rows[k] for k in asr], "wer"),
                               M.per_utterance_scores([b_rows[k] for k in asr], "wer"))
        out["metrics"]["wer"] = {"a": wer[0], "b": wer[1], "delta": wer[0] - wer[1], **test}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m explainable_ser.compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="exit status: 0 compared; 2 a file is missing or unreadable, "
                                            "or the two share no (id, task) pair")
    parser.add_argument("a", help="predictions.jsonl of system A (the one tested for being better)")
    parser.add_argument("b", help="predictions.jsonl of system B")
    parser.add_argument("--json", action="store_true", help="print the full result as JSON")
    args = parser.parse_args(argv)
    rows = []
    for path in (args.a, args.b):
        try:
            rows.append(read_predictions(path))
        except (OSError, ValueError) as err:  # missing, a directory, not UTF-8, not JSON lines
            text = str(err) if str(path) in str(err) else f"{path}: {err}"
            print(f"error: {text}", file=sys.stderr)
            return 2
    a_rows, b_rows = rows
    try:
        if not set(a_rows) & set(b_rows):
            raise ValueError(f"{args.a} ({len(a_rows)} rows) and {args.b} ({len(b_rows)} rows) share "
                             f"no (id, task) pair: they are not predictions on the same utterances")
        res = compare(a_rows, b_rows)
    except KeyError as err:  # a JSON line without a field the metrics need
        print(f"error: a prediction row lacks the field {err}", file=sys.stderr)
        return 2
    except ValueError as err:  # no shared pair, an unknown task name
        print(f"error: {err}", file=sys.stderr)
        return 2
    if res["only_a"] or res["only_b"]:
        print(f"note: {res['only_a']} (id, task) pair(s) only in A and {res['only_b']} only in B "
              f"are left out", file=sys.stderr)
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    print(f"paired utterances: {res['n_shared']} (only in A: {res['only_a']}, only in B: {res['only_b']})")
    print(f"{'metric':>7} {'A':>8} {'B':>8} {'delta':>8} {'p (A>B)':>9}  significant")
    for name, m in res["metrics"].items():
        p = "n/a" if m["p"] is None else f"{m['p']:.4f}"
        print(f"{name:>7} {m['a']:>8.4f} {m['b']:>8.4f} {m['delta']:>+8.4f} {p:>9}  "
              f"{'yes' if m['significant'] else 'no'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
