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

from data_modules.records import read_jsonl
from explainable_ser import metrics as M
from explainable_ser.prompts import get_task


def read_predictions(path: str | Path) -> dict[tuple[str, str], dict]:
    """A ``predictions.jsonl`` keyed ``(id, task)``; a line without both is a ValueError."""
    rows = {}
    for n, r in enumerate(read_jsonl(path), 1):
        if "id" not in r or "task" not in r:
            raise ValueError(f"{path}: prediction {n} has no {'id' if 'id' not in r else 'task'}")
        rows[(r["id"], r["task"])] = r
    return rows


def _by_utterance(rows: dict, field: str) -> dict[str, dict]:
    """Each utterance's row for the task that outputs ``field`` (the first such task by name),
    so systems decoding different tasks (Sys.5 ``ser`` vs Sys.7 ``ser_sed``) still pair up."""
    out: dict[str, dict] = {}
    for (utt, task), row in sorted(rows.items()):
        if field in get_task(task).fields:
            out.setdefault(utt, row)
    return out


def compare(a_rows: dict, b_rows: dict, labels: list[str] | None = None) -> dict:
    """UA and WER of A and B on the utterances both decoded, with the paired one-tailed t-test
    that A is better. Rows are keyed ``(id, task)``; pairs are made per utterance."""
    a_ids, b_ids = {k[0] for k in a_rows}, {k[0] for k in b_rows}
    out: dict = {"n_shared": len(a_ids & b_ids), "only_a": len(a_ids - b_ids),
                 "only_b": len(b_ids - a_ids), "metrics": {}}
    a_emo, b_emo = _by_utterance(a_rows, "emotion"), _by_utterance(b_rows, "emotion")
    emo = [u for u in sorted(set(a_emo) & set(b_emo)) if a_emo[u]["emotion_ref"]]
    if emo:
        labs = labels or sorted({a_emo[u]["emotion_ref"] for u in emo})
        ua = [M.emotion_metrics([r[u]["emotion_ref"] for u in emo], [r[u]["emotion"] for u in emo],
                                labs)["ua"] for r in (a_emo, b_emo)]
        test = M.paired_t_test(M.per_utterance_scores([a_emo[u] for u in emo], "emotion"),
                               M.per_utterance_scores([b_emo[u] for u in emo], "emotion"))
        out["metrics"]["ua"] = {"a": ua[0], "b": ua[1], "delta": ua[0] - ua[1], **test}
    a_asr, b_asr = _by_utterance(a_rows, "transcript"), _by_utterance(b_rows, "transcript")
    asr = [u for u in sorted(set(a_asr) & set(b_asr)) if a_asr[u]["transcript_ref"]]
    if asr:
        wer = [M.wer([r[u]["transcript_ref"] for u in asr], [r[u]["transcript"] for u in asr])["wer"]
               for r in (a_asr, b_asr)]
        test = M.paired_t_test(M.per_utterance_scores([a_asr[u] for u in asr], "wer"),
                               M.per_utterance_scores([b_asr[u] for u in asr], "wer"))
        out["metrics"]["wer"] = {"a": wer[0], "b": wer[1], "delta": wer[0] - wer[1], **test}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m explainable_ser.compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="exit status: 0 compared; 2 a file is missing or unreadable, "
                                            "or the two share no utterance")
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
        if not {k[0] for k in a_rows} & {k[0] for k in b_rows}:
            raise ValueError(f"{args.a} ({len(a_rows)} rows) and {args.b} ({len(b_rows)} rows) share "
                             f"no utterance id: they are not predictions on the same utterances")
        res = compare(a_rows, b_rows)
    except KeyError as err:  # a JSON line without a field the metrics need
        print(f"error: a prediction row lacks the field {err}", file=sys.stderr)
        return 2
    except ValueError as err:  # no shared pair, an unknown task name
        print(f"error: {err}", file=sys.stderr)
        return 2
    if res["only_a"] or res["only_b"]:
        print(f"note: {res['only_a']} utterance(s) only in A and {res['only_b']} only in B "
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
