"""What every corpus reader shares: the preparation report, skips, and writing manifests/Shar.

A reader turns a raw release into unified records (:func:`data_modules.records.make_cut`) and
hands them, split by split, to :func:`write_prepared`::

    report = PrepareReport("iemocap", root)
    for item in tqdm(items, desc="iemocap"):
        try:
            cut = read_one(item)
        except BadInput as err:             # anything wrong with one utterance
            report.skip(err.reason, item_id, str(err))
            continue
        cuts_by_split[split].append(cut)
    write_prepared(cuts_by_split, out_dir, report, shar=args.shar)

Nothing is dropped silently: every skip has a reason (a short snake_case key), the item it
concerns and a detail, all written to ``{corpus}_report.json`` next to the manifests and summed
up on stdout.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lhotse import CutSet

from data_modules.records import manifest_path

# No lhotse at the top (it takes seconds): the readers import this module for LayoutError
# when `prepare --help` builds its parser; write_prepared imports it.

SHAR_SHARD_SIZE = 1000  # cuts per Shar shard (tar): a few hundred MB of FLAC at 10 s clips


class LayoutError(Exception):
    """A reader's input path is missing, or what is there does not look like the corpus's
    release; ``prepare`` answers it with one ``error:`` line and exit status 2."""


class BadInput(Exception):
    """One unusable input item; ``reason`` is the key it is counted under in the report."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(detail or reason)
        self.reason = reason
        self.detail = detail or reason


class PrepareReport:
    """Kept and skipped counts per split and reason, hours per split, named skipped items."""

    def __init__(self, corpus: str, root: str | Path | None = None, max_named: int = 1000):
        self.corpus = corpus
        self.root = str(root) if root is not None else None
        self.kept: Counter = Counter()
        self.seconds: Counter = Counter()
        self.skipped: Counter = Counter()
        self.skipped_items: list[dict[str, str]] = []
        self.max_named = max_named  # cap on the listed items (all are counted)
        self.notes: list[str] = []

    def keep(self, split: str, duration: float) -> None:
        self.kept[split] += 1
        self.seconds[split] += duration

    def skip(self, reason: str, item: str, detail: str = "") -> None:
        self.skipped[reason] += 1
        if len(self.skipped_items) < self.max_named:
            self.skipped_items.append({"reason": reason, "item": str(item), "detail": detail})

    def note(self, text: str) -> None:
        """A remark for the user that is not a skip (e.g. a layout variant detected)."""
        self.notes.append(text)

    def to_dict(self) -> dict[str, Any]:
        return {
            "corpus": self.corpus,
            "root": self.root,
            "kept": dict(self.kept),
            "hours": {s: round(v / 3600.0, 4) for s, v in self.seconds.items()},
            "skipped": dict(self.skipped),
            "skipped_total": sum(self.skipped.values()),
            "skipped_items": self.skipped_items,
            "notes": self.notes,
        }

    def summary(self) -> str:
        lines = [f"{self.corpus}: kept {sum(self.kept.values())} utterances, skipped {sum(self.skipped.values())}"]
        for split in sorted(self.kept):
            lines.append(f"  {split:12s} kept {self.kept[split]:7d}  {self.seconds[split] / 3600.0:8.3f} h")
        for reason, n in sorted(self.skipped.items()):
            examples = [i["item"] for i in self.skipped_items if i["reason"] == reason][:3]
            lines.append(f"  skipped {reason}: {n}  (e.g. {', '.join(examples)})")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def report_path(out_dir: str | Path, corpus: str) -> Path:
    return Path(out_dir) / f"{corpus}_report.json"


def shar_dir(out_dir: str | Path, split: str) -> Path:
    """Where ``--shar`` writes a split's shards: ``{out}/shar/{split}/``."""
    return Path(out_dir) / "shar" / split


def write_prepared(
    cuts_by_split: dict[str, Iterable],
    out_dir: str | Path,
    report: PrepareReport,
    shar: bool = False,
    audio_format: str = "flac",
) -> dict[str, Path]:
    """Write ``{corpus}_cuts_{split}.jsonl.gz`` per split (and Shar shards with ``shar``),
    count the kept utterances and hours, write the report, print the summary.

    Returns split -> manifest path.
    """

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for split, cuts in cuts_by_split.items():
        if not isinstance(cuts, CutSet):
            cuts = list(cuts)
            if not cuts:  # lhotse reads an empty manifest back as None: write none at all
                report.note(f"split {split!r} has no utterances; no manifest written")
                continue
            cuts = CutSet.from_cuts(cuts)
        path = manifest_path(out_dir, report.corpus, split)
        # Write atomically: a killed preparation never leaves a half manifest that looks whole.
        tmp = path.with_name(path.name + ".tmp.jsonl.gz")
        cuts.to_file(tmp)
        tmp.replace(path)
        for cut in CutSet.from_file(path):
            report.keep(split, cut.duration)
        paths[split] = path
        if shar:
            # Audio re-encoded into the shards, so a streaming job needs no access to the release.
            # Start empty: shards of an earlier, larger preparation would otherwise be read too.
            shutil.rmtree(shar_dir(out_dir, split), ignore_errors=True)
            shar_dir(out_dir, split).mkdir(parents=True, exist_ok=True)
            CutSet.from_file(path).to_shar(
                shar_dir(out_dir, split), fields={"recording": audio_format}, shard_size=SHAR_SHARD_SIZE
            )
    report_path(out_dir, report.corpus).write_text(json.dumps(report.to_dict(), indent=2))
    print(report.summary())
    print(f"report: {report_path(out_dir, report.corpus)}")
    for split, path in paths.items():
        print(f"  {split:12s} {path}" + (f"  shards: {shar_dir(out_dir, split)}" if shar else ""))
    return paths
