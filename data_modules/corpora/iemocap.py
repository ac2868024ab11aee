"""IEMOCAP reader: the 4-class subset with leave-one-session-out folds.

Raw layout (``--root`` may be ``IEMOCAP_full_release`` itself or the folder holding it)::

    IEMOCAP_full_release/Session{1..5}/
        dialog/EmoEvaluation/<dialog>.txt      labels (only these *.txt; the Categorical/,
                                               Attribute/ and Self-evaluation/ subfolders and
                                               the .anvil files are not read)
        dialog/transcriptions/<dialog>.txt     "<utt_id> [<start>-<end>]: <text>"
        sentences/wav/<dialog>/<utt_id>.wav    16 kHz mono 16-bit PCM, one file per utterance

An EmoEvaluation file is a sequence of blocks: a summary line
``[<start> - <end>]\\t<utt_id>\\t<label>\\t[<V>, <A>, <D>]``, then one ``C-<annotator>:\\t<Label>;
...\\t(<comment>)`` line per categorical annotation, ``A-<annotator>:`` dimensional lines
(ignored; the summary line already holds their averages) and a blank line. The file may start
with a ``%`` header.

Utterance ids follow ``Ses0[1-5][FM]_(impro0[1-8][ab]?|script0[1-3]_[1-3][ab]?)_[FM]\\d{3}``
(:data:`UTT_ID`). The letter after ``Ses0N`` names the dialog (which actor wore the motion
capture markers), not the speaker: the speaker is the letter of the LAST token, so the 10
speakers are ``Ses01_F`` ... ``Ses05_M`` and the gender comes from that same letter.

Choices (where the release or the task leaves room):

* **4 classes**: neu, hap, ang, sad, with exc merged into hap (the usual IEMOCAP protocol and
  EmoBox's map). Utterances labelled fru/sur/fea/dis/oth/xxx are dropped before any audio is
  touched and counted under ``label_not_in_4_classes`` with one report entry per raw label
  (thousands of ids would crowd real problems out of the named-items list).
* **annotator_emotions**: one canonical label per ``C-`` line (evaluators and, where present,
  the actors' self-evaluations), in file order: the annotator's first label that has a
  canonical form (``Excited``/``Happiness`` -> ``happy``, ``Neutral state`` -> ``neutral``,
  ``Surprise`` -> ``surprised`` ...; the canonical 7-class labels of
  :data:`data_modules.records.EMOTIONS` are kept, not only the 4 classes, since they are what
  the annotator perceived). Annotators whose labels are all outside the canonical set
  (``Frustration``, ``Other``, empty) are left out; ``None`` when no annotator is left.
* **attributes**: ``gender`` plus the summary line's averaged dimensions ``valence``,
  ``activation`` and ``dominance`` (IEMOCAP's 1-5 scale), which would otherwise be lost.
* **transcript**: from the dialog's transcription file. An utterance with no transcription
  line (or an empty one) is skipped as ``missing_transcript``: every kept IEMOCAP record then
  has ASR and emotion targets. Transcription lines whose id does not match :data:`UTT_ID`
  are not utterances and are ignored.
* **bad input** never stops the preparation: a summary line that does not parse, or any line
  that is neither a summary, ``C-``, ``A-``, ``%`` header nor blank line
  (``broken_emoevaluation_line``, named by file and line number), an id outside the pattern
  (``bad_utterance_id``), a repeated id (``duplicate_id``), a missing wav (``missing_audio``),
  a wav soundfile cannot open or an empty one (``bad_audio``) and macOS ``._*`` AppleDouble
  files (``macos_appledouble``, the file is not read) are each skipped, counted and named in
  ``iemocap_report.json``.

Splits (manifests ``iemocap_cuts_<split>.jsonl.gz``): ``all`` (every kept utterance) and, for
each session k, ``fold{k}_test`` (session k), ``fold{k}_dev`` and ``fold{k}_train`` (the other
sessions). The dev part is chosen per speaker of the training sessions: that speaker's
utterance ids are sorted, shuffled with ``random.Random(f"{seed}:fold{k}:{speaker}")`` and the
first ``round(val_fraction * n)`` go to dev, so every training speaker is represented in dev in
proportion and the choice is reproducible for a seed (utterance-level, as in EmoBox: dev
utterances share dialogs with train). A record's ``split`` is the manifest it is in;
``session`` and ``fold`` are the session number (fold k tests the records with ``fold == k``).
An empty split (e.g. dev with ``--val-fraction 0``) is not written and a note says so.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import soundfile as sf
from lhotse import CutSet
from tqdm import tqdm

from data_modules.cli_types import fraction
from data_modules.corpora.common import BadInput, LayoutError, PrepareReport, write_prepared
from data_modules.records import canonical_emotion, make_cut

CORPUS = "iemocap"
SESSIONS: tuple[int, ...] = (1, 2, 3, 4, 5)
RELEASE_DIR = "IEMOCAP_full_release"

UTT_ID = re.compile(r"Ses0([1-5])([FM])_(impro0[1-8][ab]?|script0[1-3]_[1-3][ab]?)_([FM])(\d{3})")

# The 4-class protocol: excited is merged into happy; every other raw label is dropped.
FOUR_CLASS: dict[str, str] = {"neu": "neutral", "hap": "happy", "exc": "happy", "ang": "angry", "sad": "sad"}
GENDERS = {"F": "female", "M": "male"}

# Annotator label spellings that records.canonical_emotion does not know.
ANNOTATOR_ALIASES = {"neutral state": "neutral"}

_NUM = r"\d+(?:\.\d*)?"
SUMMARY_LINE = re.compile(rf"\[\s*({_NUM})\s*-\s*({_NUM})\s*\]\s+(\S+)\s+(\S+)\s+\[([^\]]*)\]\s*")
ANNOTATOR_LINE = re.compile(r"C-([^:\s]+):\s*([^()]*?)\s*(?:\(.*\))?\s*")
TRANSCRIPT_LINE = re.compile(r"(\S+)\s+\[[^\]]*\]:\s?(.*)")


@dataclass
class Utterance:
    """One summary line of an EmoEvaluation file and its annotator lines."""

    utt_id: str
    label: str
    vad: tuple[float, float, float]
    source: str  # "<file>:<line>", for the report
    annotators: list[list[str]] = field(default_factory=list)  # raw labels per C- line

    @property
    def session(self) -> int:
        return int(self.utt_id[4])

    @property
    def dialog(self) -> str:
        return self.utt_id.rsplit("_", 1)[0]

    @property
    def speaker(self) -> str:
        return f"Ses0{self.session}_{self.utt_id[-4]}"

    @property
    def gender(self) -> str:
        return GENDERS[self.utt_id[-4]]


# --------------------------------------------------------------------------- layout


def find_release(root: Path) -> Path:
    """The folder holding ``Session{N}/`` (``root`` or ``root/IEMOCAP_full_release``)."""
    if not root.is_dir():
        raise LayoutError(f"IEMOCAP root does not exist or is not a directory: {root}")
    for candidate in (root, root / RELEASE_DIR):
        if any(emo_dir(candidate, n).is_dir() for n in SESSIONS):
            return candidate
    raise LayoutError(
        f"no IEMOCAP release found under {root}: expected {root}/[{RELEASE_DIR}/]Session{{1..5}}/dialog/EmoEvaluation/"
    )


def emo_dir(release: Path, session: int) -> Path:
    return release / f"Session{session}" / "dialog" / "EmoEvaluation"


def wav_path(release: Path, utt: Utterance) -> Path:
    return release / f"Session{utt.session}" / "sentences" / "wav" / utt.dialog / f"{utt.utt_id}.wav"


def text_files(folder: Path, report) -> list[Path]:
    """``folder/*.txt`` (not subfolders), without macOS ``._*`` files (counted)."""
    out = []
    for path in sorted(folder.glob("*.txt")):
        if path.name.startswith("._"):
            report.skip("macos_appledouble", str(path), "AppleDouble metadata file, not read")
        elif path.is_file():
            out.append(path)
    return out


# --------------------------------------------------------------------------- parsing


def parse_vad(text: str) -> tuple[float, float, float]:
    """``"2.5000, 3.0000, 2.0000"`` -> floats (ValueError unless exactly three numbers)."""
    values = tuple(float(v) for v in text.split(","))
    if len(values) != 3:
        raise ValueError(f"expected 3 values, got {len(values)}")
    return values  # type: ignore[return-value]


def parse_emo_evaluation(path: Path, report) -> list[Utterance]:
    """All utterance blocks of one EmoEvaluation file; broken lines are counted and skipped."""
    utts: list[Utterance] = []
    current: Utterance | None = None
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    for lineno, raw in enumerate(lines, 1):
        line = raw.strip()
        where = f"{path}:{lineno}"
        if not line or line.startswith("%") or line.startswith("A-"):
            continue
        if line.startswith("C-"):
            match = ANNOTATOR_LINE.fullmatch(line)
            if match is None:
                report.skip("broken_emoevaluation_line", where, f"annotator line: {line!r}")
            elif current is not None:  # annotations of a skipped summary line go with it
                current.annotators.append([s.strip() for s in match[2].split(";") if s.strip()])
            continue
        current = None
        match = SUMMARY_LINE.fullmatch(line)
        try:
            if match is None:
                raise ValueError("not a summary line")
            vad = parse_vad(match[5])
        except ValueError as err:
            report.skip("broken_emoevaluation_line", where, f"{err}: {line!r}")
            continue
        current = Utterance(utt_id=match[3], label=match[4].lower(), vad=vad, source=where)
        utts.append(current)
    return utts


def parse_transcriptions(path: Path) -> dict[str, str]:
    """``utt_id -> text`` for the lines of one transcription file whose id is an utterance id."""
    out = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        match = TRANSCRIPT_LINE.fullmatch(line.strip())
        if match and UTT_ID.fullmatch(match[1]):
            out[match[1]] = match[2].strip()
    return out


def annotator_emotions(utt: Utterance) -> list[str] | None:
    """Per annotator, the first of their labels with a canonical form (see module docstring)."""

    out = []
    for labels in utt.annotators:
        mapped = [canonical_emotion(ANNOTATOR_ALIASES.get(lab.lower(), lab)) for lab in labels]
        mapped = [m for m in mapped if m is not None]
        if mapped:
            out.append(mapped[0])
    return out or None


def read_labels(release: Path, report) -> list[Utterance]:
    """Every summary line of every session's ``EmoEvaluation/*.txt``, in file order."""
    utts: list[Utterance] = []
    for n in SESSIONS:
        if not emo_dir(release, n).is_dir():
            report.note(f"Session{n} not found under {release}: no fold {n}")
            continue
        for path in text_files(emo_dir(release, n), report):
            utts += parse_emo_evaluation(path, report)
    return utts


def read_transcripts(release: Path, report) -> dict[str, str]:
    """``utt_id -> text`` over every session's ``transcriptions/*.txt``."""
    out: dict[str, str] = {}
    for n in SESSIONS:
        folder = release / f"Session{n}" / "dialog" / "transcriptions"
        if not folder.is_dir():
            continue
        for path in text_files(folder, report):
            out.update(parse_transcriptions(path))
    return out


# --------------------------------------------------------------------------- selection


def skip_many(report, reason: str, counts: Counter, what: str) -> None:
    """Count many skips under one reason, naming each group once instead of every item."""
    for key, n in sorted(counts.items()):
        report.skipped[reason] += n
        report.skipped_items.append({"reason": reason, "item": key, "detail": f"{n} {what}"})


def select_four_class(utts: Iterable[Utterance], report) -> list[Utterance]:
    """The utterances with a valid, unique id and a 4-class label; the others are counted."""
    kept, seen, dropped = [], set(), Counter()
    for utt in utts:
        if not UTT_ID.fullmatch(utt.utt_id):
            report.skip("bad_utterance_id", utt.utt_id, f"does not match the id pattern ({utt.source})")
        elif utt.utt_id in seen:
            report.skip("duplicate_id", utt.utt_id, f"repeated at {utt.source}")
        elif utt.label not in FOUR_CLASS:
            seen.add(utt.utt_id)
            dropped[utt.label] += 1
        else:
            seen.add(utt.utt_id)
            kept.append(utt)
    skip_many(report, "label_not_in_4_classes", dropped, "utterances with this raw label")
    return kept


def dev_ids(utts: Iterable[Utterance], fold: int, val_fraction: float, seed: int) -> set[str]:
    """The seeded, speaker-stratified dev part of a fold's training sessions."""
    by_speaker: dict[str, list[str]] = defaultdict(list)
    for utt in utts:
        by_speaker[utt.speaker].append(utt.utt_id)
    dev: set[str] = set()
    for speaker, ids in sorted(by_speaker.items()):
        ids = sorted(ids)
        random.Random(f"{seed}:fold{fold}:{speaker}").shuffle(ids)
        dev.update(ids[: int(val_fraction * len(ids) + 0.5)])
    return dev


def fold_splits(
    utts: list[Utterance], sessions: Iterable[int], val_fraction: float, seed: int
) -> dict[str, list[Utterance]]:
    """``all`` plus ``fold{k}_{train,dev,test}`` for each session k (leave one session out)."""
    splits = {"all": list(utts)}
    for k in sessions:
        rest = [u for u in utts if u.session != k]
        dev = dev_ids(rest, k, val_fraction, seed)
        splits[f"fold{k}_train"] = [u for u in rest if u.utt_id not in dev]
        splits[f"fold{k}_dev"] = [u for u in rest if u.utt_id in dev]
        splits[f"fold{k}_test"] = [u for u in utts if u.session == k]
    return splits


# --------------------------------------------------------------------------- records


def audio_info(path: Path) -> tuple[int, int]:
    """``(sampling_rate, num_samples)`` of a wav; BadInput when missing, unreadable or empty."""

    if not path.is_file():
        raise BadInput("missing_audio", f"no such file: {path}")
    try:
        info = sf.info(str(path))
    except (sf.SoundFileError, OSError) as err:
        raise BadInput("bad_audio", f"{path}: {err}") from None
    if info.frames <= 0 or info.samplerate <= 0:
        raise BadInput("bad_audio", f"{path}: no samples")
    return info.samplerate, info.frames


def record_fields(utt: Utterance, release: Path, transcripts: dict[str, str]) -> dict:
    """The :func:`make_cut` keyword arguments of one utterance (all but ``split``)."""

    transcript = transcripts.get(utt.utt_id)
    if not transcript:
        raise BadInput("missing_transcript", "no (or an empty) line in the dialog's transcription file")
    path = wav_path(release, utt)
    sampling_rate, num_samples = audio_info(path)
    valence, activation, dominance = utt.vad
    return dict(
        utt_id=utt.utt_id,
        audio_path=path.resolve(),
        sampling_rate=sampling_rate,
        num_samples=num_samples,
        corpus=CORPUS,
        transcript=transcript,
        emotion=FOUR_CLASS[utt.label],
        speaker=utt.speaker,
        gender=utt.gender,
        language="en",
        attributes={"gender": utt.gender, "valence": valence, "activation": activation, "dominance": dominance},
        annotator_emotions=annotator_emotions(utt),
        session=utt.session,
        fold=utt.session,
    )


def prepare_iemocap(
    root: str | Path,
    out_dir: str | Path,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    shar: bool = False,
    progress: bool = True,
) -> dict[str, Path]:
    """Read the release under ``root``, write the split manifests and the report to ``out_dir``.

    Returns split -> manifest path. Raises :class:`LayoutError` when ``root`` holds no release.
    """

    release = find_release(Path(root))
    report = PrepareReport(CORPUS, release)
    utts = select_four_class(read_labels(release, report), report)
    transcripts = read_transcripts(release, report)

    fields: dict[str, dict] = {}
    for utt in tqdm(utts, desc=CORPUS, unit="utt", disable=not progress):
        try:
            fields[utt.utt_id] = record_fields(utt, release, transcripts)
        except BadInput as err:
            report.skip(err.reason, utt.utt_id, err.detail)
    kept = [u for u in utts if u.utt_id in fields]

    sessions = [n for n in SESSIONS if emo_dir(release, n).is_dir()]
    cuts_by_split = {}
    for split, members in fold_splits(kept, sessions, val_fraction, seed).items():
        if not members:
            report.note(f"split {split} is empty and was not written")
            continue
        cuts_by_split[split] = CutSet.from_cuts(make_cut(**fields[u.utt_id], split=split) for u in members)
    return write_prepared(cuts_by_split, out_dir, report, shar=shar)


# --------------------------------------------------------------------------- CLI


def add_args(parser: argparse.ArgumentParser) -> None:
    """Prepare IEMOCAP (4 classes, exc->hap) with leave-one-session-out folds fold{1..5}_{train,dev,test}."""
    parser.add_argument(
        "--root", type=Path, required=True, metavar="RAW_DIR", help=f"{RELEASE_DIR} (or the folder holding it)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="OUT_DIR",
        help="output directory (manifests and iemocap_report.json)",
    )
    parser.add_argument(
        "--shar", action="store_true", help="also write Shar shards with the audio as FLAC under OUT_DIR/shar/"
    )
    parser.add_argument(
        "--val-fraction",
        type=fraction,
        default=0.1,
        metavar="F",
        help="share of each training speaker's utterances held out as a fold's dev split (default: %(default)s)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, metavar="S", help="seed of the dev selection (default: %(default)s)"
    )


def run(args: argparse.Namespace) -> int:
    try:
        prepare_iemocap(args.root, args.out, val_fraction=args.val_fraction, seed=args.seed, shar=args.shar)
    except LayoutError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
