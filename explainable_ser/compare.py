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
from pathlib import Path

from explainable_ser.model.prompts import get_task

# The metrics (scipy, scikit-learn) and the record reader (lhotse) load when used, so that
# `--help` and argument errors answer at once.

#: What each test's per-utterance scores are (``test`` in the JSON, the ``test on`` column).
TESTS = {
    "ua": "class-weighted correctness (mean = UA)",
    "accuracy": "correctness 1/0 (mean = WA)",
    "wer": "minus utterance WER",
    "bleu4": "sentence BLEU-4",
    "meteor": "per-caption METEOR",
    "rouge_l": "per-caption ROUGE-L",
    "cider": "per-caption CIDEr-D",
}
CAPTION_TESTS = ("bleu4", "meteor", "rouge_l", "cider")


def read_predictions(path: str | Path) -> dict[tuple[str, str], dict]:
    """A ``predictions.jsonl`` keyed ``(id, task)``; a line without both is a ValueError."""
    from data_modules.records import read_jsonl

    rows = {}
    for n, r in enumerate(read_jsonl(path), 1):
        if "id" not in r or "task" not in r:
            raise ValueError(f"{path}: prediction {n} has no {'id' if 'id' not in r else 'task'}")
        rows[(r["id"], r["task"])] = r
    return rows


def pool_pairs(pairs: list[tuple[dict, dict]]) -> tuple[dict, dict]:
    """Rows of several (A, B) pairs of runs (seeds) as one pair: ids suffixed ``@k`` with the
    pair's index, so utterances pair within their own pair only. One pair is left as it is."""
    if len(pairs) == 1:
        return pairs[0]
    pooled: tuple[dict, dict] = ({}, {})
    for k, pair in enumerate(pairs):
        for side, rows in zip(pooled, pair):
            for (utt, task), row in rows.items():
                side[(f"{utt}@{k}", task)] = {**row, "id": f"{utt}@{k}"}
    return pooled


def _by_utterance(rows: dict, field: str) -> dict[str, dict]:
    """Each utterance's row for the task that outputs ``field`` (the first such task by name),
    so systems decoding different tasks (Sys.5 ``ser`` vs Sys.7 ``ser_sed``) still pair up."""
    out: dict[str, dict] = {}
    for (utt, task), row in sorted(rows.items()):
        if field in get_task(task).fields:
            out.setdefault(utt, row)
    return out


def _paired(a_rows: dict, b_rows: dict, field: str) -> tuple[list[dict], list[dict]]:
    """The two systems' rows for ``field`` on the utterances both decoded that have its reference."""
    a, b = _by_utterance(a_rows, field), _by_utterance(b_rows, field)
    ids = [u for u in sorted(set(a) & set(b)) if a[u][f"{field}_ref"]]  # a row without it: KeyError
    return [a[u] for u in ids], [b[u] for u in ids]


def _entry(metric: str, a: float | None, b: float | None, test: dict) -> dict:
    delta = None if a is None or b is None else a - b
    return {"a": a, "b": b, "delta": delta, "test": TESTS[metric], **test}


def compare(a_rows: dict, b_rows: dict, labels: list[str] | None = None,
            captions: bool = True) -> dict:
    """Metrics of A and B on the utterances both decoded, each with the paired one-tailed t-test
    that A is better (see the module docstring). Rows are keyed ``(id, task)``; pairs are made
    per utterance. ``captions=False`` skips the caption tests (they start Java)."""
    from explainable_ser.evaluation import asr, captions, emotion, significance

    a_ids, b_ids = {k[0] for k in a_rows}, {k[0] for k in b_rows}
    out: dict = {"n_shared": len(a_ids & b_ids), "only_a": len(a_ids - b_ids),
                 "only_b": len(b_ids - a_ids), "metrics": {}, "reasons": {}}
    a_emo, b_emo = _paired(a_rows, b_rows, "emotion")
    if a_emo:
        labs = labels or sorted({r["emotion_ref"] for r in a_emo})
        em = [emotion.emotion_metrics([r["emotion_ref"] for r in rows], [r["emotion"] for r in rows], labs)
              for rows in (a_emo, b_emo)]
        for metric, key in (("ua", "ua"), ("accuracy", "wa")):
            test = significance.paired_t_test(significance.per_utterance_scores(a_emo, metric),
                                   significance.per_utterance_scores(b_emo, metric))
            out["metrics"][metric] = _entry(metric, em[0][key], em[1][key], test)
    a_asr, b_asr = _paired(a_rows, b_rows, "transcript")
    if a_asr:
        wer = [asr.wer([r["transcript_ref"] for r in rows], [r["transcript"] for r in rows])["wer"]
               for rows in (a_asr, b_asr)]
        test = significance.paired_t_test(significance.per_utterance_scores(a_asr, "wer"), significance.per_utterance_scores(b_asr, "wer"))
        out["metrics"]["wer"] = _entry("wer", wer[0], wer[1], test)
    a_cap, b_cap = _paired(a_rows, b_rows, "caption")
    if a_cap and captions:
        # As evaluate reads them: ``zh``, ``zh-CN`` ... score by characters, anything else by words.
        languages = {"zh" if str(r.get("language") or "").lower().startswith("zh") else "en" for r in a_cap}
        if len(languages) > 1:
            out["reasons"]["captions"] = f"captions in several languages {sorted(languages)}: score them apart"
        else:
            lang = languages.pop()
            scored = [captions.caption_metrics([r["caption_ref"] for r in rows], [r.get("caption") for r in rows],
                                        language=lang, metrics=CAPTION_TESTS, per_item=True)
                      for rows in (a_cap, b_cap)]
            for metric in CAPTION_TESTS:
                if scored[0][metric] is None or scored[1][metric] is None:
                    out["reasons"][metric] = scored[0]["reasons"].get(metric) or scored[1]["reasons"].get(metric)
                    continue
                nan = float("nan")
                per = [[nan if v is None else v for v in s["per_item"][metric]] for s in scored]
                out["metrics"][metric] = _entry(metric, scored[0][metric], scored[1][metric],
                                                significance.paired_t_test(per[0], per[1]))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m explainable_ser.compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="exit status: 0 compared; 2 a file is missing or unreadable, "
                                            "or the two share no utterance")
    parser.add_argument("a", help="predictions.jsonl of system A (the one tested for being better)")
    parser.add_argument("b", help="predictions.jsonl of system B")
    parser.add_argument("--pair", nargs=2, action="append", default=[], metavar=("A", "B"),
                        help="one more pair of files (another seed of A and of B, in that order), "
                             "pooled into the same tests; repeat for each seed")
    parser.add_argument("--json", action="store_true", help="print the full result as JSON")
    parser.add_argument("--no-captions", action="store_true",
                        help="skip the caption tests (they start Java for tokenisation and METEOR)")
    args = parser.parse_args(argv)
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
            print(f"error: {a_path} ({len(rows[0])} rows) and {b_path} ({len(rows[1])} rows) share "
                  f"no utterance id: they are not predictions on the same utterances", file=sys.stderr)
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
        print(f"note: {res['only_a']} utterance(s) only in A and {res['only_b']} only in B "
              f"are left out", file=sys.stderr)
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    pooled = f", pooled over {len(pairs)} pairs of runs" if len(pairs) > 1 else ""
    print(f"paired utterances: {res['n_shared']}{pooled} (only in A: {res['only_a']}, only in B: {res['only_b']})")
    print("paired one-tailed t-tests that A is better than B (significant: p < 0.05); better is "
          "higher for every metric but WER, where it is lower (its test runs on minus the WER)")
    print(f"{'metric':>9} {'better':>6} {'test on':<40} {'A':>8} {'B':>8} {'delta':>8} {'t':>7} "
          f"{'p(A better)':>11}  significant")
    for name, m in res["metrics"].items():
        p = "n/a" if m["p"] is None else f"{m['p']:.4f}"
        t = "n/a" if m["t"] is None else f"{m['t']:.2f}"
        better = "lower" if name == "wer" else "higher"
        print(f"{name:>9} {better:>6} {m['test']:<40} {m['a']:>8.4f} {m['b']:>8.4f} {m['delta']:>+8.4f} {t:>7} {p:>11}  "
              f"{'yes' if m['significant'] else 'no'}" + (f" ({m['reason']})" if m["reason"] else ""))
    for name, why in res["reasons"].items():
        print(f"{name:>9} not tested: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
