"""The information ladder: ``python -m explainable_ser.probe RUN_DIR [options]``.

Where along the stack does a trained run keep, or lose, the emotion and each descriptor
attribute? For every rung a simple probe is fitted on training clips and scored on test clips:

1. ``measurements``: nine interpretable measurements per clip (pYIN F0 median / p5 / p95 /
   range, voiced fraction, loudness, level, peak level, speaking rate; the annotator's own
   :func:`data_modules.annotate.measure.measure_audio`) with a small tree classifier;
2. ``encoder/layer_NN``: each frozen encoder layer, mean and std over the clip's frames;
3. ``{branch}/input``: the branch's softmax-weighted layer sum (pooled the same way);
4. ``{branch}/z``: the bottleneck's latent (its mean, as at inference);
5. ``{branch}/tokens``: the speech tokens the LLM receives;
6. ``llm/teacher_forced``: no probe, the LLM itself, fed the reference target up to each
   value: the candidate value (``low`` / ``normal`` / ``high``, ``male`` / ``female``, ...) it
   finds most probable at the attribute's place in the reference caption, the label after the
   reference caption. It separates reading (does the LLM rank the right value first, with
   the right words before it?) from generating (does it still say it after its own words?);
7. ``answer``: what the model itself said (the run's ``predictions.jsonl``).

Rungs 2-5 use ``StandardScaler`` + ``LogisticRegression`` on the pooled states: a linear read
of what is there. On an evidence-rationale manifest (``data_modules.rationales --source
evidence``) each cue's measured direction is a target too (``cue.pitch``, ``cue.range``,
``cue.volume``, ``cue.speed``); its answer is the direction the rationale states, scored on the
clips that state that cue (the grounding's cue accuracy, cue by cue). The emotion is scored by
unweighted accuracy (UA, mean per-class recall), attributes by accuracy, as in
``metrics.json``. Writes ``probe.json`` and ``probe.png`` into
the run directory (or ``--out``); works on any corpus whose records carry the labels
(SynthCraft, IEMOCAP, MELD: a target without labels is reported as such, not scored).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DESCRIPTION = __doc__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m explainable_ser.probe",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="exit status: 0 done; 2 a bad argument, run directory or checkpoint",
    )
    parser.add_argument("run_dir", help="a trained run directory (e.g. runs/demo)")
    parser.add_argument("--ckpt", default=None, help="checkpoint to probe (default: the last stage's final.ckpt)")
    parser.add_argument("--train", type=int, default=600, help="training clips the probes fit on (default 600)")
    parser.add_argument("--test", type=int, default=None, help="test clips scored (default: the whole test split)")
    parser.add_argument(
        "--no-measurements", action="store_true", help="skip the interpretable-measurement rung (pYIN is the slow part)"
    )
    parser.add_argument(
        "--no-teacher-forced",
        action="store_true",
        help="skip the teacher-forced rung (the LLM's choice of each value after the reference text before it)",
    )
    parser.add_argument("--workers", type=int, default=2, help="processes for the measurements (default 2)")
    parser.add_argument("--out", default=None, help="output directory (default: the run directory)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the run's config")
    args = parser.parse_args(argv)
    # The implementation (torch, lhotse, the models) loads after the arguments are checked,
    # so that --help and argument errors answer at once.
    from explainable_ser.analysis.ladder import plot, run_probe, table

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        print(f"error: run directory not found: {run_dir}", file=sys.stderr)
        return 2
    from explainable_ser.config import ConfigError

    try:
        report = run_probe(
            run_dir,
            Path(args.ckpt) if args.ckpt else None,
            args.train,
            args.test,
            not args.no_measurements,
            args.workers,
            list(args.overrides),
            teacher_forced=not args.no_teacher_forced,
        )
    except (ConfigError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else run_dir
    out.mkdir(parents=True, exist_ok=True)
    (out / "probe.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(report, out / "probe.png")
    print(table(report))
    print(f"probe     {out / 'probe.json'}, {out / 'probe.png'} ({report['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
