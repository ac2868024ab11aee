"""MELD reader: CSV planning (checked against the real label CSVs when present) and whole
preparations of small fake releases with real tiny mp4 clips written by PyAV."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
from lhotse import CutSet

from data_modules import prepare as prepare_cli
from data_modules.audio import decode_mp4
from data_modules.corpora import meld
from data_modules.corpora.common import BadInput, PrepareReport, report_path
from data_modules.records import EMOTIONS, manifest_path, record_of

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
MELD_CSVS = SHARED / "data" / "meld"
MELD_REFERENCE = SHARED / "reference" / "formats" / "meld"
HEADER = [
    "Sr No.",
    "Utterance",
    "Speaker",
    "Emotion",
    "Sentiment",
    "Dialogue_ID",
    "Utterance_ID",
    "Season",
    "Episode",
    "StartTime",
    "EndTime",
]
TRICKY_TEXT = 'Oh, he said "no, no" — you’re… sure?'


# ------------------------------------------------------------------------------ fixtures
def encode_mp4(path: Path, seconds: float = 0.3, channels: int = 2, rate: int = 48000) -> None:
    """A real mp4 with one AAC audio stream (a tone on every channel)."""
    layout = {1: "mono", 2: "stereo", 6: "5.1"}[channels]
    n = int(seconds * rate)
    tone = (0.2 * np.sin(2 * np.pi * 330 * np.arange(n) / rate)).astype(np.float32)
    frame = av.AudioFrame.from_ndarray(np.tile(tone, (channels, 1)), format="fltp", layout=layout)
    frame.sample_rate = rate
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=rate, layout=layout)
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    """Template clips: stereo, 5.1, a 1.5 s one, and a truncated (undecodable) one."""
    folder = tmp_path_factory.mktemp("clips")
    out = {"stereo": folder / "stereo.mp4", "six": folder / "six.mp4", "long": folder / "long.mp4"}
    encode_mp4(out["stereo"])
    encode_mp4(out["six"], channels=6)
    encode_mp4(out["long"], seconds=1.5)
    data = out["stereo"].read_bytes()
    out["truncated"] = folder / "truncated.mp4"
    out["truncated"].write_bytes(data[: len(data) // 2])
    return out


def write_csv(path: Path, rows: list[list]) -> None:
    """A MELD-style CSV: UTF-8, CRLF, quoted where needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\r\n")
        writer.writerow(HEADER)
        writer.writerows(rows)


def row(sr, text, speaker, emotion, dia, utt):
    return [sr, text, speaker, emotion, "neutral", dia, utt, 8, 21, "00:16:16,059", "00:16:21,731"]


def put(clip: Path, folder: Path, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(clip, folder / name)


def build_release(root: Path, clips: dict[str, Path], nested: bool = False) -> Path:
    """A fake release with every quirk: the plain layout, or the nested mirror layout."""
    train_dir = root / "train" / "train_splits"
    dev_dir = root / ("dev/dev_splits_complete" if nested else "dev_splits_complete")
    test_dir = root / ("test/output_repeated_splits_test" if nested else "output_repeated_splits_test")
    write_csv(
        root / "train" / "train_sent_emo.csv",
        [
            row(1, TRICKY_TEXT, "Chandler", "joy", 0, 0),
            row(2, "Five point one.", "Monica", "anger", 0, 1),
            row(2, "Sr No. repeats: ids come from Dialogue_ID/Utterance_ID.", "Ross", "sadness", 1, 0),
            row(3, "Broken line", "Joey", "neutral", "x", 1),
            row(4, "Corrupt clip.", "Rachel", "neutral", 125, 3),
            row(5, "Too long.", "Phoebe", "fear", 309, 0),
        ],
    )
    put(clips["stereo"], train_dir, "dia0_utt0.mp4")
    put(clips["six"], train_dir, "dia0_utt1.mp4")
    put(clips["stereo"], train_dir, "dia1_utt0.mp4")
    put(clips["truncated"], train_dir, "dia125_utt3.mp4")
    put(clips["long"], train_dir, "dia309_utt0.mp4")
    put(clips["stereo"], train_dir, "._dia0_utt0.mp4")  # AppleDouble junk
    write_csv(
        root / "dev_sent_emo.csv",
        [
            row(1, "Hi.", "Ross", "surprise", 0, 0),
            row(2, "Missing clip.", "Ross", "neutral", 110, 7),
        ],
    )
    put(clips["stereo"], dev_dir, "dia0_utt0.mp4")
    put(clips["stereo"], dev_dir, "dia49_utt4.mp4")  # a video without a CSV row
    write_csv(root / "test_sent_emo.csv", [row(1, "Ew.", "Phoebe", "disgust", 0, 0)])
    put(clips["stereo"], test_dir, "dia0_utt0.mp4")
    put(clips["six"], test_dir, "final_videos_testdia0_utt0.mp4")
    return root


def run_cli(root: Path, out: Path, *extra: str) -> int:
    return prepare_cli.main(
        ["meld", "--root", str(root), "--out", str(out), "--max-duration", "1.0", "--no-progress", *extra]
    )


def load_cuts(out: Path) -> dict[str, dict[str, object]]:
    return {
        split: {c.id: c for c in CutSet.from_file(manifest_path(out, "meld", split))}
        for split in meld.SPLITS
        if manifest_path(out, "meld", split).exists()
    }


# ------------------------------------------------------------------------------ CSV planning
@pytest.mark.skipif(not MELD_CSVS.is_dir(), reason="real MELD CSVs not present")
def test_real_csvs_plan_the_expected_usable_counts():
    """All rows parse; minus the two documented bad clips the counts are EmoBox's
    9988/1108/2610; the CSV times reveal the three over-long clips (30 s limit)."""
    report = PrepareReport("meld")
    plans = meld.plan_items(MELD_CSVS, report)  # CSVs only: no clip folders there
    assert report.skipped == {} and set(plans) == set(meld.SPLITS)
    rows = {
        s: sum(1 for _ in csv.DictReader(open(MELD_CSVS / f"{s}_sent_emo.csv", newline="", encoding="utf-8")))
        for s in meld.SPLITS
    }
    assert rows == {"train": 9989, "dev": 1109, "test": 2610}
    for split, items in plans.items():
        assert len(items) == len({i.name for i in items}) == rows[split]
        assert all(i.mp4 is None and i.emotion in EMOTIONS for i in items)
    usable = {s: [i for i in items if (s, i.name) not in meld.KNOWN_BAD_CLIPS] for s, items in plans.items()}
    assert {s: len(v) for s, v in usable.items()} == {"train": 9988, "dev": 1108, "test": 2610}
    kept_at_30s = {s: sum(i.csv_seconds <= 30 for i in v) for s, v in usable.items()}
    assert kept_at_30s == {"train": 9987, "dev": 1108, "test": 2608}
    long = sorted(f"{i.split}/{i.name}" for v in usable.values() for i in v if i.csv_seconds > 30)
    assert long == ["test/dia220_utt0", "test/dia38_utt4", "train/dia309_utt0"]
    emotions = {e for items in plans.values() for e in (i.emotion for i in items)}
    assert emotions == set(EMOTIONS)
    assert plans["train"][0].transcript.startswith("also I was the point person on my company’s")


@pytest.mark.skipif(not (MELD_REFERENCE / "quirks.json").is_file(), reason="reference absent")
def test_known_bad_clips_match_the_documented_quirks():
    quirks = json.loads((MELD_REFERENCE / "quirks.json").read_text())
    documented = {(p.split("/")[0], Path(p).stem) for p in quirks["missing_or_corrupt_clips"]}
    assert documented == set(meld.KNOWN_BAD_CLIPS)


@pytest.mark.skipif(not MELD_REFERENCE.is_dir(), reason="reference absent")
def test_reference_head_csvs_parse():
    for split in meld.SPLITS:
        report = PrepareReport("meld")
        items = meld.read_csv(MELD_REFERENCE / f"{split}_sent_emo.head8.csv", split, report)
        assert len(items) == 7 and not report.skipped
        assert items[0].name == "dia0_utt0" and items[0].csv_seconds is not None


def test_csv_quirks(tmp_path):
    """Quotes/commas survive, a non-integer id and a duplicate id are skipped and counted,
    a cp1252 line does not fail the file, an unknown header is refused."""
    path = tmp_path / "train_sent_emo.csv"
    write_csv(
        path,
        [
            row(1, TRICKY_TEXT, "Chandler", "joy", 0, 0),
            row(1, "again", "X", "joy", 0, 0),
            row(2, "bad", "X", "joy", "", 1),
            row(3, "odd", "X", "Contempt", 2, 0),
        ],
    )
    with open(path, "ab") as f:
        f.write('4,Caf\xe9 line,Joey,fear,negative,3,0,1,1,"0:0:1,0","0:0:2,5"\r\n'.encode("cp1252"))
    report = PrepareReport("meld")
    items = meld.read_csv(path, "train", report)
    assert [i.name for i in items] == ["dia0_utt0", "dia3_utt0"]
    assert items[0].transcript == TRICKY_TEXT and items[0].emotion == "happy"
    assert items[1].transcript == "Café line" and items[1].csv_seconds == 1.5
    assert report.skipped == {"duplicate_id": 1, "bad_csv_row": 1, "unknown_emotion": 1}
    assert any("cp1252" in n for n in report.notes)
    (tmp_path / "other.csv").write_text("a,b\r\n1,2\r\n")
    with pytest.raises(BadInput, match="no column"):
        meld.read_csv(tmp_path / "other.csv", "train", report)


# ------------------------------------------------------------------------------ preparation
def test_prepare_fake_release(tmp_path, clips):
    root = build_release(tmp_path / "MELD.Raw", clips)
    out = tmp_path / "out"
    assert run_cli(root, out, "--workers", "2") == 0
    cuts = load_cuts(out)
    assert {s: sorted(c) for s, c in cuts.items()} == {
        "train": ["meld-train-dia0_utt0", "meld-train-dia0_utt1", "meld-train-dia1_utt0"],
        "dev": ["meld-dev-dia0_utt0"],
        "test": ["meld-test-dia0_utt0"],
    }
    rec = record_of(cuts["train"]["meld-train-dia0_utt0"])
    assert rec["transcript"] == TRICKY_TEXT and rec["speaker"] == "Chandler"
    assert rec["emotion"] == "happy" and rec["corpus"] == "meld" and rec["split"] == "train"
    assert [record_of(cuts[s][f"meld-{s}-dia0_utt0"])["emotion"] for s in ("dev", "test")] == ["surprised", "disgusted"]
    assert cuts["train"]["meld-train-dia0_utt1"].supervisions[0].custom["sentiment"] == "neutral"

    report = json.loads(report_path(out, "meld").read_text())
    assert report["skipped"] == {"bad_csv_row": 1, "corrupt_audio": 1, "missing_audio": 1, "too_long": 1}
    named = {i["reason"]: i for i in report["skipped_items"]}
    assert named["corrupt_audio"]["item"] == "meld-train-dia125_utt3"
    assert "MELD issues" in named["corrupt_audio"]["detail"]
    assert named["missing_audio"]["item"] == "meld-dev-dia110_utt7"
    assert named["too_long"]["item"] == "meld-train-dia309_utt0"
    assert report["kept"] == {"train": 3, "dev": 1, "test": 1}
    notes = " ".join(report["notes"])
    assert "dia49_utt4" in notes and "ignored 1 final_videos_test" in notes

    for split, by_id in cuts.items():
        for cut in by_id.values():
            path = Path(cut.recording.sources[0].source)
            assert path.parent == (out / "audio" / split).resolve() and path.suffix == ".flac"
            info = sf.info(str(path))
            assert (info.samplerate, info.channels) == (16000, 1)
            audio = cut.load_audio()
            assert audio.shape == (1, cut.num_samples) and 0.25 < cut.duration < 0.45
            assert np.abs(audio).max() > 0.05  # the tone survived decoding and the downmix
    # The long clip is cached although filtered: a rerun with another limit decodes nothing.
    assert (out / "audio" / "train" / "dia309_utt0.flac").exists()
    assert not list((out / "audio").rglob("final_videos*")) and not list((out / "audio").rglob("._*"))


def test_second_run_reuses_the_cache(tmp_path, clips):
    root = build_release(tmp_path / "raw", clips)
    out = tmp_path / "out"
    assert run_cli(root, out, "--workers", "1") == 0
    flac = out / "audio" / "train" / "dia0_utt0.flac"
    stamp = flac.stat().st_mtime_ns
    (out / "audio" / "dev" / "dia0_utt0.flac").write_bytes(b"not a flac")  # damaged cache
    assert run_cli(root, out, "--workers", "1", "--max-duration", "2") == 0
    assert flac.stat().st_mtime_ns == stamp
    report = json.loads(report_path(out, "meld").read_text())
    assert "audio: 1 clip(s) decoded, 5 reused" in " ".join(report["notes"])
    assert report["kept"] == {"train": 4, "dev": 1, "test": 1}  # the 1.5 s clip now fits
    assert sf.info(str(out / "audio" / "dev" / "dia0_utt0.flac")).samplerate == 16000


def test_nested_mirror_layout(tmp_path, clips):
    root = build_release(tmp_path / "kaggle", clips, nested=True)
    out = tmp_path / "out"
    assert run_cli(root, out, "--workers", "1") == 0
    assert {s: len(c) for s, c in load_cuts(out).items()} == {"train": 3, "dev": 1, "test": 1}


def test_root_above_meld_raw_is_accepted(tmp_path, clips):
    build_release(tmp_path / "download" / "MELD.Raw", clips)
    assert run_cli(tmp_path / "download", tmp_path / "out", "--workers", "1") == 0


def test_six_channel_clip_is_downmixed(clips):
    audio = decode_mp4(clips["six"])
    assert audio.ndim == 1 and audio.dtype == np.float32
    assert 0.3 * 16000 <= audio.size <= 0.4 * 16000
    assert np.abs(audio).max() > 0.1


def test_missing_root_and_unrecognised_layout_exit_2(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert run_cli(missing, tmp_path / "out") == 2
    assert str(missing) in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_cli(empty, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert str(empty) in err and "unrecognised" in err
    write_csv(empty / "dev_sent_emo.csv", [row(1, "Hi.", "Ross", "joy", 0, 0)])
    assert run_cli(empty, tmp_path / "out") == 2
    assert "no clip folder" in capsys.readouterr().err


def test_subcommand_is_registered():
    parser = prepare_cli.build_parser()
    args = parser.parse_args(["meld", "--root", "r", "--out", "o"])
    assert args.max_duration == 30.0 and args.workers is None and not args.shar
    assert "MELD" in prepare_cli.SUBCOMMANDS["meld"][0].__doc__.splitlines()[0]
