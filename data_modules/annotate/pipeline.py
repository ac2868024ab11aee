"""The annotator's run over a manifest: measure every utterance, bin, and write the
measurements, bins and a descriptor caption into each record.

What each record gets (the record scheme): METHODS.md (this folder).
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lhotse import CutSet
from lhotse.utils import fastcopy

from data_modules.annotate.bins import (
    BinningConfig,
    assign_bins,
    compute_stats,
    load_stats,
)
from data_modules.annotate.measure import ATTRIBUTES, measure_cuts
from data_modules.captions import render_caption
from data_modules.cli_types import default_workers


# ------------------------------------------------------------------------------- the records
def _caption_rng(utt_id: str) -> random.Random:
    return random.Random(int.from_bytes(hashlib.sha256(utt_id.encode()).digest()[:8], "little"))


def annotate_record(
    cut, measured: dict[str, Any], assigned: dict[str, Any], cfg: BinningConfig, overwrite_captions: bool = False
):
    """A copy of ``cut`` with the annotation written into its record (the record scheme of
    METHODS.md)."""
    sup = cut.supervisions[0]
    custom = dict(sup.custom or {})
    attributes = dict(custom.get("attributes") or {})
    bins = assigned["bins"]
    full = dict(measured)
    full["null_reasons"] = {**measured["null_reasons"], **assigned["null_reasons"]}
    if bins["gender"] is not None:  # the corpus's gender, or a speaker-level estimate
        full["null_reasons"].pop("gender", None)
    full.update(
        bins=dict(bins),
        gender_source=assigned["gender_source"],
        binning={"settings": asdict(cfg), **assigned["binning"]},
    )

    if not attributes.get("gender"):
        attributes["gender"] = bins["gender"]
    for attribute in ATTRIBUTES:
        if overwrite_captions or attributes.get(attribute) is None:
            attributes[attribute] = bins[attribute]
    attributes["measured"] = full

    caption_attrs = {**bins, "emphasis": attributes.get("emphasis")}
    annotated = None
    if all(caption_attrs[k] for k in ("gender", *ATTRIBUTES)):
        annotated = render_caption(caption_attrs, _caption_rng(cut.id))
    own = custom.get("caption")
    has_own = isinstance(own, str) and bool(own.strip())
    if has_own and not overwrite_captions:
        caption, source = own, "corpus"
    else:
        caption, source = annotated, ("annotator" if annotated else None)
    custom.update(attributes=attributes, caption=caption, caption_source=source, annotated_caption=annotated)
    return _copy_cut(cut, _copy_sup(sup, custom))


def _copy_sup(sup, custom: dict):

    return fastcopy(sup, custom=custom)


def _copy_cut(cut, sup):

    return fastcopy(cut, supervisions=[sup, *cut.supervisions[1:]])


# ------------------------------------------------------------------------------ the pipeline
def _summarise(
    measured: Sequence[dict],
    assigned: Sequence[dict],
    sources: Counter,
    elapsed: float,
    audio_seconds: float,
    workers: int,
) -> dict[str, Any]:
    nulls: dict[str, Counter] = {a: Counter() for a in ("gender", *ATTRIBUTES)}
    complete = 0
    for m, a in zip(measured, assigned):
        reasons = {**m["null_reasons"], **a["null_reasons"]}
        for attribute in nulls:
            if a["bins"].get(attribute) is None:
                nulls[attribute][reasons.get(attribute, "unknown")] += 1
        complete += all(a["bins"].get(k) for k in ("gender", *ATTRIBUTES))
    n = len(measured)
    return {
        "utterances": n,
        "fully_annotated": complete,
        "null": {attribute: dict(c) for attribute, c in nulls.items()},
        "captions": dict(sources),
        "gender_source": dict(Counter(str(a["gender_source"]) for a in assigned)),
        "seconds": elapsed,
        "utterances_per_second": n / elapsed if elapsed > 0 else None,
        "audio_seconds": audio_seconds,
        "x_real_time": audio_seconds / elapsed if elapsed > 0 else None,
        "workers": workers,
    }


def annotate_manifest(
    manifest: str | Path,
    out: str | Path,
    *,
    reference_stats: str | Path | dict | None = None,
    save_stats: str | Path | None = None,
    cfg: BinningConfig | None = None,
    overwrite_captions: bool = False,
    workers: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Annotate a manifest into ``out``; returns the report (see
    :func:`~data_modules.annotate.cli.main`).

    Two passes over the (lazily read) manifest: measure every utterance (in parallel), then --
    once every speaker's utterances are known -- bin and write.
    """

    cfg = cfg or BinningConfig()
    workers = default_workers() if workers is None else workers
    manifest, out = Path(manifest), Path(out)
    if manifest.resolve() == out.resolve():
        raise ValueError("--out must differ from --manifest (the input is read while writing)")
    start = time.perf_counter()
    cuts = CutSet.from_file(manifest)
    total = sum(1 for _ in cuts) if progress else None
    ids, measured, metas = [], [], []
    for utt_id, m, meta in measure_cuts(cuts, workers=workers, progress=progress, total=total):
        ids.append(utt_id)
        measured.append(m)
        metas.append(meta)

    if reference_stats is None:
        stats = compute_stats(measured, metas, cfg.min_speaker_utterances, [str(manifest)])
        stats_source = f"computed on {manifest}"
    elif isinstance(reference_stats, dict):
        stats, stats_source = reference_stats, "given"
    else:
        stats, stats_source = load_stats(reference_stats), str(reference_stats)
    if save_stats is not None:
        Path(save_stats).parent.mkdir(parents=True, exist_ok=True)
        Path(save_stats).write_text(json.dumps(stats, indent=1))
    assigned = assign_bins(measured, metas, stats, cfg)

    sources: Counter = Counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    with CutSet.open_writer(out) as writer:
        for i, cut in enumerate(CutSet.from_file(manifest)):
            if cut.id != ids[i]:
                raise RuntimeError(f"manifest changed while annotating ({cut.id} != {ids[i]})")
            new = annotate_record(cut, measured[i], assigned[i], cfg, overwrite_captions)
            sources[str(new.supervisions[0].custom["caption_source"])] += 1
            writer.write(new)
    elapsed = time.perf_counter() - start
    report = _summarise(measured, assigned, sources, elapsed, sum(meta["duration"] for meta in metas), workers)
    report.update(
        manifest=str(manifest),
        out=str(out),
        reference_stats=stats_source,
        binning=asdict(cfg),
        overwrite_captions=overwrite_captions,
    )
    return report
