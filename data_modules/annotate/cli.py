"""``python -m data_modules.annotate``: the command line of the annotator (options, report).

Usage and the methods behind every option: METHODS.md (this folder).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from data_modules.annotate.bins import (
    LABEL_SCHEME,
    NORMALIZE_CHOICES,
    PERCENTILE_CHOICES,
    PITCH_MEASURES,
    VOLUME_MEASURES,
    BinningConfig,
)
from data_modules.annotate.pipeline import annotate_manifest
from data_modules.cli_types import positive_int

# ------------------------------------------------------------------------------------ the CLI
_MANIFEST_NAME = re.compile(r"^(?P<corpus>.+?)_cuts_(?P<split>.+)\.jsonl(\.gz)?$")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m data_modules.annotate",
        description="Measure F0, loudness and speaking rate of every utterance of a manifest, "
        "bin them into SpeechCraft's low/normal/high (slow/normal/fast) categories "
        "and write attributes and a descriptor caption into each record.",
        epilog="For ser_sed targets on IEMOCAP/MELD: annotate each prepared split into a new "
        "directory keeping the <corpus>_cuts_<split>.jsonl.gz names (stats saved on "
        "train with --save-stats, loaded for dev/test with --reference-stats), then "
        "point data.corpora at that directory. Details: data_modules/annotate/METHODS.md.",
    )
    parser.add_argument(
        "--manifest",
        type=Path,
        required=True,
        metavar="IN",
        help="input CutSet manifest (.jsonl.gz), e.g. data/iemocap/iemocap_cuts_train.jsonl.gz",
    )
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="OUT",
        help="output manifest; name it DIR/<corpus>_cuts_<split>.jsonl.gz so a CorpusSpec(dir=DIR) reads it",
    )
    parser.add_argument(
        "--reference-stats",
        type=Path,
        metavar="STATS.json",
        help="bin against this reference distribution (written by --save-stats) instead of the input's own",
    )
    parser.add_argument(
        "--save-stats",
        type=Path,
        metavar="STATS.json",
        help="write the reference distribution used (quantiles per measure, "
        "gender and normalisation) for annotating other corpora",
    )
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        metavar="N",
        help="measurement processes (default: min(2, CPU count))",
    )
    parser.add_argument(
        "--overwrite-captions",
        action="store_true",
        help="replace the corpus's captions and pitch/volume/speed with the "
        "annotator's (default: keep them; the annotator's caption is "
        "always in custom['annotated_caption'])",
    )
    parser.add_argument(
        "--normalize-by",
        choices=NORMALIZE_CHOICES,
        default="gender",
        help="gender: pitch percentiles per gender, volume/speed pooled "
        "(SpeechCraft); none: all pooled; speaker: centre every measure "
        "on its speaker's median first (default: %(default)s)",
    )
    parser.add_argument(
        "--percentiles",
        choices=PERCENTILE_CHOICES,
        default="speechcraft",
        help="speechcraft: pitch male 40th/90th, female 10th/60th, "
        "volume/speed tertiles; tertiles: tertiles everywhere; "
        f"{LABEL_SCHEME}: the bin proportions of a reference whose records "
        "carry labelled bins (SynthCraft, SpeechCraft) "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--pitch-measure",
        choices=sorted(PITCH_MEASURES),
        default="median",
        help="median F0, or the floor (5th percentile) of F0 (default: %(default)s)",
    )
    parser.add_argument(
        "--volume-measure",
        choices=sorted(VOLUME_MEASURES),
        default="lufs",
        help="integrated loudness (LUFS), or the median RMS (level) or peak "
        "(peak) level of the voiced frames, dBFS (default: %(default)s)",
    )
    parser.add_argument(
        "--min-speaker-utterances",
        type=positive_int,
        default=10,
        metavar="K",
        help="speaker normalisation and speaker-level gender need K measured "
        "utterances of the speaker (default: %(default)s)",
    )
    parser.add_argument("--report", type=Path, metavar="REPORT.json", help="also write the final report as JSON")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def format_report(report: dict[str, Any]) -> str:
    lines = [
        f"annotated {report['utterances']} utterances into {report['out']} "
        f"({report['fully_annotated']} with gender, pitch, volume and speed)",
        f"  {report['seconds']:.1f} s: {report['utterances_per_second']:.2f} utterances/s, "
        f"{report['x_real_time']:.1f}x real time, {report['workers']} worker(s)",
        f"  reference stats: {report['reference_stats']}",
        "  binning: " + ", ".join(f"{k}={v}" for k, v in report["binning"].items()),
    ]
    for attribute, reasons in report["null"].items():
        text = ", ".join(f"{r}={n}" for r, n in sorted(reasons.items())) or "none"
        lines.append(f"  null {attribute:6s}: {text}")
    lines.append("  captions: " + ", ".join(f"{k}={v}" for k, v in sorted(report["captions"].items())))
    lines.append("  gender from: " + ", ".join(f"{k}={v}" for k, v in sorted(report["gender_source"].items())))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.manifest.exists():
        print(f"error: manifest not found: {args.manifest}", file=sys.stderr)
        return 2
    if not _MANIFEST_NAME.match(args.out.name):
        print(
            f"note: {args.out.name} is not named <corpus>_cuts_<split>.jsonl.gz, so a CorpusSpec will not find it",
            file=sys.stderr,
        )
    cfg = BinningConfig(
        normalize_by=args.normalize_by,
        percentiles=args.percentiles,
        pitch_measure=args.pitch_measure,
        volume_measure=args.volume_measure,
        min_speaker_utterances=args.min_speaker_utterances,
    )
    if args.reference_stats is not None and not args.reference_stats.is_file():
        print(f"error: reference stats not found: {args.reference_stats}", file=sys.stderr)
        return 2
    try:
        report = annotate_manifest(
            args.manifest,
            args.out,
            reference_stats=args.reference_stats,
            save_stats=args.save_stats,
            cfg=cfg,
            overwrite_captions=args.overwrite_captions,
            workers=args.workers,
            progress=not args.no_progress,
        )
    except ValueError as err:  # --out == --manifest, foreign stats file, unparsable manifest line
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_report(report))
    if args.report is not None:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report, indent=2))
    return 0
