"""Compare two systems: ``python -m explainable_ser.compare A/predictions.jsonl B/predictions.jsonl``.

Pairs the utterances both files decoded (same id), then reports per metric the value of A and of
B, the delta, and the paper's significance test, a paired one-tailed t-test that A is better
(p < 0.05), each on per-utterance scores whose mean is that metric or its sentence-level form:

    ua        class-weighted emotion correctness (correct x n / (C n_c)): the mean is the UA
    accuracy  emotion correctness 1/0: the mean is the WA (what the paper's test runs on, strictly)
    wer       minus the utterance's WER (the value shown is the corpus WER)
    bleu4     sentence BLEU-4 (the value shown is the corpus BLEU-4)
    meteor, rouge_l, cider   the scorers' per-caption scores (CIDEr-D's IDF from the shared set)

Caption tests need captions in both files and Java (PTB tokenizer, METEOR); otherwise they are
left out with a reason. Utterances present in only one file are counted and left out.

Several seeds: ``compare A_seed0 B_seed0 --pair A_seed1 B_seed1 --pair A_seed2 B_seed2`` pools the
pairs into one test, each utterance of pair k paired with the same utterance of pair k only (its
id suffixed ``@k``), so every seed's run of A meets the same seed's run of B.
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m explainable_ser.compare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="exit status: 0 compared; 2 a file is missing or unreadable, or the two share no utterance",
    )
    parser.add_argument("a", help="predictions.jsonl of system A (the one tested for being better)")
    parser.add_argument("b", help="predictions.jsonl of system B")
    parser.add_argument(
        "--pair",
        nargs=2,
        action="append",
        default=[],
        metavar=("A", "B"),
        help="one more pair of files (another seed of A and of B, in that order), "
        "pooled into the same tests; repeat for each seed",
    )
    parser.add_argument("--json", action="store_true", help="print the full result as JSON")
    parser.add_argument(
        "--no-captions",
        action="store_true",
        help="skip the caption tests (they start Java for tokenisation and METEOR)",
    )
    args = parser.parse_args(argv)
    # The metrics (scipy, scikit-learn, Java scorers) load after the arguments are checked, so
    # that `--help` and argument errors answer at once.
    from explainable_ser.evaluation.report import read_predictions
    from explainable_ser.evaluation.significance import compare, pool_pairs

    pairs = []
    for a_path, b_path in [(args.a, args.b), *args.pair]:
        rows = []
        for path in (a_path, b_path):
            try:
                rows.append(read_predictions(path))
            except (OSError, ValueError) as err:  # missing, a directory, not UTF-8, not JSON lines
                text = str(err) if str(path) in str(err) else f"{path}: {err}"
                print(f"error: {text}", file=sys.stderr)
                return 2
        if not {k[0] for k in rows[0]} & {k[0] for k in rows[1]}:
            print(
                f"error: {a_path} ({len(rows[0])} rows) and {b_path} ({len(rows[1])} rows) share "
                f"no utterance id: they are not predictions on the same utterances",
                file=sys.stderr,
            )
            return 2
        pairs.append(tuple(rows))
    a_rows, b_rows = pool_pairs(pairs)
    try:
        res = compare(a_rows, b_rows, captions=not args.no_captions)
    except KeyError as err:  # a JSON line without a field the metrics need
        print(f"error: a prediction row lacks the field {err}", file=sys.stderr)
        return 2
    except ValueError as err:  # no shared pair, an unknown task name
        print(f"error: {err}", file=sys.stderr)
        return 2
    if res["only_a"] or res["only_b"]:
        print(
            f"note: {res['only_a']} utterance(s) only in A and {res['only_b']} only in B are left out", file=sys.stderr
        )
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    pooled = f", pooled over {len(pairs)} pairs of runs" if len(pairs) > 1 else ""
    print(f"paired utterances: {res['n_shared']}{pooled} (only in A: {res['only_a']}, only in B: {res['only_b']})")
    print(
        "paired one-tailed t-tests that A is better than B (significant: p < 0.05); better is "
        "higher for every metric but WER, where it is lower (its test runs on minus the WER)"
    )
    print(
        f"{'metric':>9} {'better':>6} {'test on':<40} {'A':>8} {'B':>8} {'delta':>8} {'t':>7} "
        f"{'p(A better)':>11}  significant"
    )
    for name, m in res["metrics"].items():
        p = "n/a" if m["p"] is None else f"{m['p']:.4f}"
        t = "n/a" if m["t"] is None else f"{m['t']:.2f}"
        better = "lower" if name == "wer" else "higher"
        print(
            f"{name:>9} {better:>6} {m['test']:<40} {m['a']:>8.4f} {m['b']:>8.4f} {m['delta']:>+8.4f} {t:>7} {p:>11}  "
            f"{'yes' if m['significant'] else 'no'}" + (f" ({m['reason']})" if m["reason"] else "")
        )
    for name, why in res["reasons"].items():
        print(f"{name:>9} not tested: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
