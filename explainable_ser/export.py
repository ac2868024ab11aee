"""Export a trained run in the ecosystem's formats:
``python -m explainable_ser.export --ckpt RUN/stage2/final.ckpt --out DIR``.

The directory it writes needs neither the run nor this repository's training code::

    DIR/
      README.md                 model card: base models, training data, the run's metrics, usage
      explainable_ser.json      what this is: format, base models, labels, source, versions
      config.yaml               the run's resolved experiment config
      adapter/                  the LoRA adapter in peft's format (adapter_config.json,
                                adapter_model.safetensors): PeftModel.from_pretrained(base_llm, DIR/adapter)
      branches.safetensors      the content and descriptor branches (VIB blocks + adapters)
      tokenizer/                the LLM's tokenizer (save_pretrained)
      base_models/              only for a run on random / locally trained frozen models (the
                                offline stack): their saved weights; named models are not copied
      merged_llm/               with --merge-lora: the LLM with LoRA merged in (save_pretrained)
      metrics.json              the run's test metrics, when it has them
      verification.json         the export checked on reload (unless --no-verify)

Load it in one call: ``explainable_ser.from_pretrained(DIR)`` (an
:class:`~explainable_ser.serving.inference.Explainer`), or ``load_exported(DIR)`` for the bare model.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m explainable_ser.export",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="exit status: 0 exported (and verified); 1 the verification "
        "found a mismatch; 2 a bad argument or checkpoint",
    )
    parser.add_argument(
        "--ckpt",
        required=True,
        help="checkpoint of a trained run: a file (runs/demo/stage2/final.ckpt), a stage "
        "directory (its final.ckpt) or a run directory (its last stage's final.ckpt)",
    )
    parser.add_argument("--out", required=True, help="the directory to write (must be new or empty)")
    parser.add_argument(
        "--merge-lora",
        action="store_true",
        help="also write merged_llm/: the LLM with LoRA merged in (save_pretrained)",
    )
    parser.add_argument(
        "--dtype", default=None, help="dtype of the saved weights: fp32, bf16 or fp16 (default: as trained)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    parser.add_argument(
        "--no-verify",
        action="store_true",
        help="skip reloading the export with plain peft (and the merged LLM) to compare",
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="config overrides for rebuilding the run (rarely needed)"
    )
    args = parser.parse_args(argv)
    # The implementation (torch, lhotse, the models) loads after the arguments are checked,
    # so that --help and argument errors answer at once.
    from explainable_ser.serving.bundle import DTYPES, ExportError, export, verify

    if args.dtype is not None and args.dtype not in DTYPES:
        parser.error(f"argument --dtype: invalid choice: {args.dtype!r} (choose from {', '.join(sorted(DTYPES))})")
    from explainable_ser.config import ConfigError
    from explainable_ser.training.runs import resolve_ckpt_arg

    try:
        args.ckpt = resolve_ckpt_arg(args.ckpt)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    try:
        out = export(
            args.ckpt,
            args.out,
            merge_lora=args.merge_lora,
            dtype=args.dtype,
            overrides=args.overrides,
            overwrite=args.overwrite,
        )
    except (ConfigError, ExportError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"exported {args.ckpt} -> {out} (model card: {out / 'README.md'})")
    if args.no_verify:
        return 0
    rep = verify(out)
    # fp32 reloads agree to float rounding; bf16/fp16 weights were rounded once more on saving
    tol = 1e-3 if args.dtype in (None, "fp32") else 5e-2 * max(1.0, rep["logit_scale"])
    line = f"verified: plain peft on the base LLM, max |logit diff| {rep['plain_peft_max_abs_logit_diff']:.2e}"
    ok = rep["plain_peft_max_abs_logit_diff"] <= tol
    if "merged_max_abs_logit_diff" in rep:
        line += f"; merged LLM {rep['merged_max_abs_logit_diff']:.2e}, same greedy text: {rep['merged_same_text']}"
        ok = ok and rep["merged_same_text"]
    print(f"{line} ({out / 'verification.json'})")
    if not ok:
        print("error: the reloaded export does not reproduce the model", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
