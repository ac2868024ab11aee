"""IEMOCAP reader: layout quirks, bad input, 4-class selection and leave-one-session-out folds.

Fake releases are written into tmp_path: small hand-written trees for every quirk and, when the
reference samples are present (``/work/shared/reference/formats``, never copied into the
project), a full-size tree rebuilt from the 10,039 real summary lines to check the counts.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from lhotse import CutSet

from data_modules import prepare
from data_modules.corpora import iemocap as ie
from data_modules.corpora.common import report_path
from data_modules.records import manifest_path, record_of

REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference" / "formats"
EXPECTED_PER_SESSION = {1: 1085, 2: 1023, 3: 1151, 4: 1031, 5: 1241}
ANNOTATOR_NAMES = {
    "neu": "Neutral state",
    "hap": "Happiness",
    "exc": "Excited",
    "ang": "Anger",
    "sad": "Sadness",
    "fru": "Frustration",
    "sur": "Surprise",
    "fea": "Fear",
    "dis": "Disgust",
    "oth": "Other",
    "xxx": "Other",
}
HEADER = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"


def _wav_bytes(num_samples: int = 160) -> bytes:
    """A short 16 kHz 16-bit sine wav, built once and written as bytes (fast for 10k files)."""
    buf = io.BytesIO()
    tone = 0.1 * np.sin(2 * np.pi * 440 * np.arange(num_samples) / 16000)
    sf.write(buf, tone, 16000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


WAV = _wav_bytes()


@pytest.fixture
def reference() -> Path:
    if not (REFERENCE / "iemocap").is_dir():
        pytest.skip(f"reference samples absent: {REFERENCE}")
    return REFERENCE / "iemocap"


def summary_line(
    utt: str, label: str, start: float = 1.0, end: float = 2.5, vad: tuple[float, float, float] = (2.5, 3.0, 3.5)
) -> str:
    return f"[{start:.4f} - {end:.4f}]\t{utt}\t{label}\t[{vad[0]:.4f}, {vad[1]:.4f}, {vad[2]:.4f}]\n"


def block(utt: str, label: str, annotators: list[str] | None = None, **kw) -> str:
    """One EmoEvaluation block: summary, C- lines (default: one per label), an A- line, blank."""
    if annotators is None:
        annotators = [f"C-E1:\t{ANNOTATOR_NAMES.get(label, 'Other')};\t()"]
    return (
        summary_line(utt, label, **kw) + "".join(a + "\n" for a in annotators) + "A-E1:\tval 3; act 2; dom  2;\t()\n\n"
    )


def dialog_of(utt: str) -> str:
    return utt.rsplit("_", 1)[0]


def session_dir(release: Path, utt_or_dialog: str) -> Path:
    return release / f"Session{int(utt_or_dialog[4])}"


def write_dialog(release: Path, dialog: str, blocks: list[str], transcript_lines: list[str]) -> None:
    """EmoEvaluation and transcription files of one dialog."""
    emo = session_dir(release, dialog) / "dialog" / "EmoEvaluation"
    trn = session_dir(release, dialog) / "dialog" / "transcriptions"
    emo.mkdir(parents=True, exist_ok=True)
    trn.mkdir(parents=True, exist_ok=True)
    (emo / f"{dialog}.txt").write_text(HEADER + "".join(blocks))
    (trn / f"{dialog}.txt").write_text("".join(line + "\n" for line in transcript_lines))


def transcript_line(utt: str, text: str | None = None) -> str:
    return f"{utt} [001.0000-002.5000]: {text or 'words of ' + utt}"


def write_wav(release: Path, utt: str, data: bytes = WAV) -> Path:
    path = session_dir(release, utt) / "sentences" / "wav" / dialog_of(utt) / f"{utt}.wav"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def load(out: Path, split: str) -> dict[str, dict]:
    return {c.id: record_of(c) for c in CutSet.from_file(manifest_path(out, "iemocap", split))}


def read_report(out: Path) -> dict:
    return json.loads(report_path(out, "iemocap").read_text())


# --------------------------------------------------------------------------- a tree of quirks

QUIRK_BLOCKS = {
    # dialog-name variants; the speaker is the last token's letter, not the one after Ses0N
    "Ses01F_impro05a": [
        block("Ses01F_impro05a_F000", "neu"),
        block("Ses01F_impro05a_M000", "exc"),
        block("Ses01F_impro05a_F001", "fru"),
        block("Ses01F_impro05a_F002", "xxx"),
        block("Ses01F_impro05a_F003", "neu"),  # garbage wav header
        block("Ses01F_impro05a_F004", "ang"),  # no wav
        block("Ses01F_impro05a_F005", "hap"),  # no transcription line
        "[12.0000 - 13.0000]\tSes01F_impro05a_F006\tneu\n\n",  # broken: no [V, A, D]
        block("Ses01F_impro05a_F000", "sad"),  # repeated id
    ],
    "Ses01M_impro08b": [
        block(
            "Ses01M_impro08b_F001",
            "ang",
            annotators=[
                "C-E1:\tNeutral state;\t()",
                "C-E2:\tFrustration; Anger;\t(annoyed; upset)",
                "C-E3:\t;\t()",
                "C-F1:\tOther;\t(sarcasm)",
                "C-M1:\tExcited;\t()",
            ],
            vad=(2.0, 4.0, 3.5),
        ),
        block("Ses01M_impro08b_M001", "sad", annotators=["C-E1:\tFrustration;\t()"]),
    ],
    "Ses01F_script01_1b": [block("Ses01F_script01_1b_M002", "sad")],
    "Ses02M_impro01": [
        block(f"Ses02M_impro01_{s}00{i}", lab) for s in "FM" for i, lab in enumerate(("neu", "hap", "ang", "sad"))
    ],
}
QUIRK_KEPT = {
    "Ses01F_impro05a_F000",
    "Ses01F_impro05a_M000",
    "Ses01M_impro08b_F001",
    "Ses01M_impro08b_M001",
    "Ses01F_script01_1b_M002",
} | {f"Ses02M_impro01_{s}00{i}" for s in "FM" for i in range(4)}


def build_quirk_tree(base: Path) -> Path:
    """A small release under ``base/IEMOCAP_full_release`` with every known quirk."""
    release = base / ie.RELEASE_DIR
    for dialog, blocks in QUIRK_BLOCKS.items():
        utts = [b.split("\t")[1] for b in blocks if b.startswith("[")]
        lines = [transcript_line(u) for u in dict.fromkeys(utts) if u != "Ses01F_impro05a_F005"]
        # lines that are not utterances: ignored, never an error
        lines += [f"{dialog}_MXX0 [003.0000-004.0000]: [LAUGHTER]", "M: [BREATHING]", ""]
        write_dialog(release, dialog, blocks, lines)
        for utt in utts:
            if utt != "Ses01F_impro05a_F004":
                write_wav(release, utt)
    write_wav(release, "Ses01F_impro05a_F003", b"RIFF\x00\x00garbage, not a wav header" * 3)
    emo = release / "Session1" / "dialog" / "EmoEvaluation"
    # macOS AppleDouble files (binary junk) and what must not be parsed
    (emo / "._Ses01F_impro05a.txt").write_bytes(b"\x00\x05\x16\x07\xff\xfe junk")
    (release / "Session1" / "dialog" / "transcriptions" / "._Ses01F_impro05a.txt").write_bytes(b"\x00\x05")
    (emo / "Categorical").mkdir()
    categorical = emo / "Categorical" / "Ses01F_impro05a_e1_cat.txt"
    categorical.write_text(summary_line("Ses01F_impro05a_F009", "neu"))
    (emo / "Ses01F_impro05a.anvil").write_text(summary_line("Ses01F_impro05a_F009", "neu"))
    write_wav(release, "Ses01F_impro05a_F009")
    return release


@pytest.fixture
def quirks(tmp_path) -> Path:
    """The quirk tree prepared with --root at the parent of IEMOCAP_full_release."""
    build_quirk_tree(tmp_path / "raw")
    out = tmp_path / "out"
    ie.prepare_iemocap(tmp_path / "raw", out, val_fraction=0.5, seed=0, progress=False)
    return out


def test_quirk_tree_keeps_exactly_the_good_4_class_utterances(quirks):
    assert set(load(quirks, "all")) == QUIRK_KEPT


def test_records_follow_the_contract(quirks):
    recs = load(quirks, "all")
    rec = recs["Ses01F_impro05a_M000"]  # dialog letter F, speaker M
    assert rec["speaker"] == "Ses01_M" and rec["gender"] == "male"
    assert rec["emotion"] == "happy"  # exc merged into hap
    assert rec["corpus"] == "iemocap" and rec["split"] == "all" and rec["language"] == "en"
    assert rec["session"] == 1 and rec["fold"] == 1
    assert rec["transcript"] == "words of Ses01F_impro05a_M000"
    assert rec["duration"] == pytest.approx(0.01)
    assert recs["Ses01M_impro08b_F001"]["speaker"] == "Ses01_F"
    assert recs["Ses01M_impro08b_F001"]["gender"] == "female"
    assert recs["Ses01M_impro08b_F001"]["attributes"] == {
        "gender": "female",
        "valence": 2.0,
        "activation": 4.0,
        "dominance": 3.5,
    }
    assert recs["Ses02M_impro01_F001"]["emotion"] == "happy"
    assert recs["Ses02M_impro01_F003"]["emotion"] == "sad"
    assert {r["speaker"] for r in recs.values()} == {"Ses01_F", "Ses01_M", "Ses02_F", "Ses02_M"}
    cut = next(iter(CutSet.from_file(manifest_path(quirks, "iemocap", "all"))))
    assert cut.recording.sampling_rate == 16000 and cut.load_audio().shape == (1, 160)


def test_annotator_labels_become_canonical(quirks):
    recs = load(quirks, "all")
    # Neutral state -> neutral; "Frustration; Anger" -> first canonical (angry); empty and
    # Other are left out; Excited -> happy
    assert recs["Ses01M_impro08b_F001"]["annotator_emotions"] == ["neutral", "angry", "happy"]
    assert recs["Ses01M_impro08b_M001"]["annotator_emotions"] is None  # only Frustration
    assert recs["Ses01F_impro05a_F000"]["annotator_emotions"] == ["neutral"]


def test_bad_input_is_skipped_counted_and_named(quirks):
    report = read_report(quirks)
    named = {(i["reason"], i["item"]) for i in report["skipped_items"]}
    assert ("bad_audio", "Ses01F_impro05a_F003") in named
    assert ("missing_audio", "Ses01F_impro05a_F004") in named
    assert ("missing_transcript", "Ses01F_impro05a_F005") in named
    assert ("duplicate_id", "Ses01F_impro05a_F000") in named
    broken = [i for i in report["skipped_items"] if i["reason"] == "broken_emoevaluation_line"]
    assert len(broken) == 1 and broken[0]["item"].endswith("Ses01F_impro05a.txt:31")
    assert "Ses01F_impro05a_F006" in broken[0]["detail"]
    apple = {Path(i["item"]).parent.name for i in report["skipped_items"] if i["reason"] == "macos_appledouble"}
    assert apple == {"EmoEvaluation", "transcriptions"}
    # the non-4-class labels: counted, grouped by raw label rather than listed one by one
    assert report["skipped"]["label_not_in_4_classes"] == 2
    assert {i["item"] for i in report["skipped_items"] if i["reason"] == "label_not_in_4_classes"} == {"fru", "xxx"}
    assert report["skipped"] == {
        "bad_audio": 1,
        "missing_audio": 1,
        "missing_transcript": 1,
        "duplicate_id": 1,
        "broken_emoevaluation_line": 1,
        "macos_appledouble": 2,
        "label_not_in_4_classes": 2,
    }
    assert any("Session3 not found" in n for n in report["notes"])


def test_leave_one_session_out_folds(quirks):
    session_of = {u: int(u[4]) for u in QUIRK_KEPT}
    for k in (1, 2):
        test, dev, train = (load(quirks, f"fold{k}_{s}") for s in ("test", "dev", "train"))
        assert set(test) == {u for u, s in session_of.items() if s == k}
        assert not set(dev) & set(train) and set(dev) | set(train) == QUIRK_KEPT - set(test)
        assert all(r["split"] == f"fold{k}_dev" and r["fold"] != k for r in dev.values())
        assert all(r["fold"] == k for r in test.values())
    # val_fraction 0.5 over the other session's speakers: 2 of Ses02_F's 4 and of Ses02_M's 4
    assert Counter(r["speaker"] for r in load(quirks, "fold1_dev").values()) == {"Ses02_F": 2, "Ses02_M": 2}
    for k in (3, 4, 5):
        assert not manifest_path(quirks, "iemocap", f"fold{k}_test").exists()


def test_root_may_be_the_release_folder_itself(tmp_path):
    release = build_quirk_tree(tmp_path / "raw")
    out = tmp_path / "out"
    ie.prepare_iemocap(release, out, val_fraction=0.5, progress=False)
    assert set(load(out, "all")) == QUIRK_KEPT


def test_dev_selection_is_seeded_and_speaker_stratified():
    utts = [
        ie.Utterance(f"Ses0{n}{d}_impro01_{s}{i:03d}", "neu", (3.0, 3.0, 3.0), "x")
        for n in (2, 3)
        for d in "FM"
        for s in "FM"
        for i in range(50)
    ]
    dev = ie.dev_ids(utts, fold=1, val_fraction=0.1, seed=0)
    assert dev == ie.dev_ids(utts, fold=1, val_fraction=0.1, seed=0)
    assert dev != ie.dev_ids(utts, fold=1, val_fraction=0.1, seed=1)
    assert dev != ie.dev_ids(utts, fold=4, val_fraction=0.1, seed=0)
    per_speaker = Counter(f"Ses0{u[4]}_{u[-4]}" for u in dev)
    assert per_speaker == {spk: 10 for spk in ("Ses02_F", "Ses02_M", "Ses03_F", "Ses03_M")}
    assert ie.dev_ids(utts, fold=1, val_fraction=0.0, seed=0) == set()


def test_cli_writes_the_splits_a_corpus_spec_selects(tmp_path, capsys):
    build_quirk_tree(tmp_path / "raw")
    out = tmp_path / "out"
    assert (
        prepare.main(
            [
                "iemocap",
                "--root",
                str(tmp_path / "raw"),
                "--out",
                str(out),
                "--val-fraction",
                "0.5",
                "--seed",
                "3",
                "--shar",
            ]
        )
        == 0
    )
    from data_modules.datamodule import CorpusSpec

    spec = CorpusSpec(
        name="iemocap", dir=str(out), train_split="fold1_train", val_split="fold1_dev", test_split="fold1_test"
    )
    for split in (spec.train_split, spec.val_split, spec.test_split, "all"):
        assert manifest_path(spec.dir, spec.name, split).exists()
        assert list((out / "shar" / split).glob("recording.*.tar"))
    printed = capsys.readouterr().out
    assert "skipped missing_transcript: 1" in printed and "fold1_test" in printed


@pytest.mark.parametrize("layout", ["missing", "empty", "wrong"])
def test_cli_rejects_a_root_without_a_release(tmp_path, capsys, layout):
    root = tmp_path / "raw"
    if layout != "missing":
        root.mkdir()
    if layout == "wrong":
        (root / "Session1" / "sentences" / "wav").mkdir(parents=True)
    assert prepare.main(["iemocap", "--root", str(root), "--out", str(tmp_path / "out")]) == 2
    assert str(root) in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_rejects_a_bad_val_fraction(tmp_path):
    with pytest.raises(SystemExit) as err:
        prepare.main(["iemocap", "--root", str(tmp_path), "--out", str(tmp_path), "--val-fraction", "1.5"])
    assert err.value.code == 2


# --------------------------------------------------------------------------- real formats


def test_real_emoevaluation_excerpt_parses(reference, tmp_path):
    """The real blocks (two spaces before dom, multi-label C- lines, empty labels)."""
    text = (reference / "EmoEvaluation_excerpt.txt").read_text()
    blocks = defaultdict(list)
    for chunk in text.strip().split("\n\n"):
        blocks[dialog_of(chunk.split("\t")[1])].append(chunk + "\n\n")
    release = tmp_path / "raw"
    for dialog, chunks in blocks.items():
        utts = [c.split("\t")[1] for c in chunks]
        write_dialog(release, dialog, chunks, [transcript_line(u) for u in utts])
        for utt in utts:
            write_wav(release, utt)
    out = tmp_path / "out"
    ie.prepare_iemocap(release, out, progress=False)
    recs = load(out, "all")
    raw = {c.split("\t")[1]: c.split("\t")[2] for chunks in blocks.values() for c in chunks}
    assert set(recs) == {u for u, lab in raw.items() if lab in ie.FOUR_CLASS}
    assert read_report(out)["skipped"] == {
        "label_not_in_4_classes": sum(lab not in ie.FOUR_CLASS for lab in raw.values())
    }
    hap = recs["Ses01M_impro07_M033"]
    assert hap["emotion"] == "happy" and hap["speaker"] == "Ses01_M"
    assert hap["annotator_emotions"] == ["happy"] * 4  # Excited + 3 x Happiness
    assert hap["attributes"]["valence"] == 3.5 and hap["attributes"]["dominance"] == 1.5
    assert recs["Ses02F_impro01_F000"]["annotator_emotions"] == ["happy", "neutral", "neutral", "neutral"]


def test_real_transcription_lines_parse(reference, tmp_path):
    path = tmp_path / "Ses01F_impro01.txt"
    path.write_text((reference / "transcription_lines_quoted.txt").read_text())
    assert ie.parse_transcriptions(path) == {
        "Ses01F_impro01_F000": "Excuse me.",
        "Ses01F_impro01_M000": "Do you have your forms?",
    }


def build_full_release(reference: Path, base: Path) -> Path:
    """Every real summary line, a C- and an A- line each, a transcript and a 10 ms wav each."""
    release = base / ie.RELEASE_DIR
    by_dialog = defaultdict(list)
    with open(reference / "iemocap_full_dataset_w_dims.csv", newline="") as f:
        for row in csv.DictReader(f):
            by_dialog[dialog_of(row["name"])].append(row)
    for dialog, rows in by_dialog.items():
        blocks = [
            block(
                r["name"],
                r["label"],
                start=float(r["start_time"]),
                end=float(r["end_time"]),
                vad=(float(r["avg_val"]), float(r["avg_act"]), float(r["avg_dom"])),
            )
            for r in rows
        ]
        write_dialog(release, dialog, blocks, [transcript_line(r["name"]) for r in rows])
        for r in rows:
            write_wav(release, r["name"])
    return release


def test_full_release_counts_and_folds(reference, tmp_path):
    release = build_full_release(reference, tmp_path / "raw")
    out = tmp_path / "out"
    ie.prepare_iemocap(release.parent, out, val_fraction=0.1, seed=0, progress=False)
    expected = json.loads((reference / "expected_counts.json").read_text())

    recs = load(out, "all")
    per_session = Counter(r["session"] for r in recs.values())
    print("per-session 4-class counts:", dict(sorted(per_session.items())))
    assert per_session == EXPECTED_PER_SESSION
    assert dict(per_session) == {int(k[-1]): v for k, v in expected["four_class_session_totals"].items()}
    assert len(recs) == expected["four_class_total"] == 5531
    assert Counter(r["emotion"] for r in recs.values()) == {"neutral": 1708, "happy": 1636, "angry": 1103, "sad": 1084}
    with open(reference / "emobox_iemocap_4class_index.tsv", newline="") as f:
        emobox = {row["utt_id"] for row in csv.DictReader(f, delimiter="\t")}
    assert set(recs) == emobox
    assert {r["speaker"] for r in recs.values()} == {f"Ses0{n}_{g}" for n in range(1, 6) for g in "FM"}
    assert all(r["fold"] == r["session"] == int(u[4]) for u, r in recs.items())

    report = read_report(out)
    assert report["skipped"] == {"label_not_in_4_classes": 10039 - 5531}
    for k, n_test in EXPECTED_PER_SESSION.items():
        test, dev, train = (load(out, f"fold{k}_{s}") for s in ("test", "dev", "train"))
        assert (
            len(test)
            == n_test
            == expected["loso_fold_sizes_test_train (fold k tests Session k; EmoBox data/iemocap/fold_k)"][f"fold_{k}"][
                0
            ]
        )
        assert set(test) == {u for u, r in recs.items() if r["session"] == k}
        assert not set(dev) & set(train) and len(dev) + len(train) == 5531 - n_test
        assert report["kept"][f"fold{k}_test"] == n_test
        # every training speaker contributes about 10 % of its utterances to dev
        rest = Counter(r["speaker"] for r in recs.values() if r["session"] != k)
        for speaker, n_dev in Counter(r["speaker"] for r in dev.values()).items():
            assert abs(n_dev - 0.1 * rest[speaker]) <= 0.5
        assert set(Counter(r["speaker"] for r in dev.values())) == set(rest)


def test_annotator_aware_macro_f1_by_hand_on_the_quirk_tree(quirks):
    """arXiv 2509.24187's scoring on this fixture's records, worked out by hand below."""
    from explainable_ser.evaluation.emotion import (
        annotator_aware_accuracy,
        annotator_aware_f1,
        emotion_metrics,
    )

    recs = load(quirks, "all")
    hyps = {
        "Ses01F_impro05a_F000": "neutral",  # [neutral]: right
        "Ses01F_impro05a_M000": "sad",  # happy [happy]: wrong
        "Ses01M_impro08b_F001": "neutral",  # angry [neutral, angry, happy]: a minority reading, credited
        "Ses01M_impro08b_M001": "angry",  # no annotator label kept: not scored
        "Ses01F_script01_1b_M002": "sad",  # right
        "Ses02M_impro01_F000": "neutral",
        "Ses02M_impro01_F001": "happy",
        "Ses02M_impro01_F002": "neutral",  # angry: wrong
        "Ses02M_impro01_F003": "sad",
        "Ses02M_impro01_M000": "happy",  # neutral: wrong
        "Ses02M_impro01_M001": "happy",
        "Ses02M_impro01_M002": "angry",
        "Ses02M_impro01_M003": None,
    }  # sad, unparsed: wrong
    assert set(hyps) == set(recs)
    ids = sorted(recs)
    ann = [recs[i]["annotator_emotions"] for i in ids]
    maj = [recs[i]["emotion"] for i in ids]
    hyp = [hyps[i] for i in ids]
    # 12 scored. References (the prediction where an annotator gave it, else the majority):
    # neutral 4 (TP 3, FP 1: F002) F1 3/4; happy 3 (TP 2, FP 1: M000) 2/3; sad 3 (TP 2, FP 1:
    # 05a_M000) 2/3; angry 2 (TP 1, FP 0) 2/3. Macro-F1 = (3/4 + 3 * 2/3) / 4 = 0.6875.
    assert annotator_aware_f1(ann, maj, hyp, ["neutral", "happy", "sad", "angry"]) == pytest.approx(0.6875)
    assert annotator_aware_accuracy(ann, hyp) == pytest.approx(8 / 12)
    scored = [k for k, a in enumerate(ann) if a]
    plain = emotion_metrics([maj[k] for k in scored], [hyp[k] for k in scored], ["neutral", "happy", "sad", "angry"])[
        "macro_f1"
    ]
    assert plain < 0.6875  # the minority reading counts against the majority label there
