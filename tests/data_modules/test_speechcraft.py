"""SpeechCraft reader: labels join segment files or segments of long GigaSpeech recordings
(lhotse supervision manifest); bad input is skipped and counted; the split never cuts a
recording in two. (The label files themselves: test_speechcraft_labels.py.)"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from lhotse import CutSet, SupervisionSegment, SupervisionSet

from data_modules import prepare as prepare_cli
from data_modules.corpora import speechcraft as sc
from data_modules.corpora.common import report_path, shar_dir
from data_modules.records import manifest_path, record_of

from conftest import SPEECHCRAFT_LJ_LABELS, needs_speechcraft_samples

SR = 16000


def labels(**fields: str) -> str:
    return "\t".join(f"{k}:{v}" for k, v in fields.items())


def write_audio(path: Path, seconds: float, seed: int, **kw) -> np.ndarray:
    """Seeded noise (distinct per file, so a wrong offset shows), written and read back."""
    path.parent.mkdir(parents=True, exist_ok=True)
    audio = (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * SR))).astype(np.float32)
    sf.write(str(path), audio, SR, **kw)
    return sf.read(str(path), dtype="float32")[0]


def cli(*args: str) -> int:
    return prepare_cli.main(["speechcraft", "--no-progress", *map(str, args)])


def manifests(out: Path) -> dict[str, list]:
    return {
        s: list(CutSet.from_file(manifest_path(out, "speechcraft", s)))
        for s in ("train", "dev", "test")
        if manifest_path(out, "speechcraft", s).exists()
    }


@needs_speechcraft_samples
def test_ljspeech_style_keys_with_segment_files(tmp_path):
    keys = list(json.loads(SPEECHCRAFT_LJ_LABELS.read_text()))
    audio = tmp_path / "audio"
    for i, key in enumerate(keys[:5]):  # files named after the key
        write_audio(audio / f"{key}.wav", 0.5, i)
    for i, key in enumerate(keys[5:7]):  # the pipeline's <folder>_<basename> keys
        folder, base = key.split("_", 1)
        write_audio(audio / folder / f"{base}.flac", 0.5, 10 + i)
    out = tmp_path / "out"
    assert (
        cli(
            "--labels",
            SPEECHCRAFT_LJ_LABELS,
            "--root",
            audio,
            "--out",
            out,
            "--dev-fraction",
            "0",
            "--test-fraction",
            "0",
        )
        == 0
    )
    cuts = manifests(out)
    assert list(cuts) == ["train"]
    assert sorted(c.id for c in cuts["train"]) == sorted(f"speechcraft-{k}" for k in keys[:7])
    report = json.loads(report_path(out, "speechcraft").read_text())
    assert report["skipped"] == {"missing_audio": 5}
    rec = record_of(cuts["train"][0])
    assert (
        rec["corpus"] == "speechcraft"
        and rec["transcript"]
        and rec["emotion"] in ("sad", "neutral", "happy", "angry", "surprised", "fearful", "disgusted")
    )
    assert cuts["train"][0].load_audio().shape == (1, SR // 2)


# ------------------------------------------------------------------------------ GigaSpeech
@pytest.fixture
def gigaspeech(tmp_path):
    """Long recordings (wav, flac, opus), a supervision manifest, label files with broken
    parts. Returns (labels dir, audio root, manifest, recordings' samples)."""
    audio = tmp_path / "gigaspeech" / "audio"
    waves = {
        "POD0000000001": write_audio(audio / "podcast/P0000/POD0000000001.wav", 20, 1),
        "YOU0000000002": write_audio(audio / "youtube/Y0000/YOU0000000002.flac", 10, 2),
        "AUD0000000003": write_audio(audio / "audiobook/A0000/AUD0000000003.opus", 5, 3, format="OGG", subtype="OPUS"),
    }
    write_audio(audio / "podcast/P0000/POD0000000004.wav", 2, 4)  # no labels: counted only
    (audio / "podcast/P0000/._POD0000000001.wav").write_bytes(b"AppleDouble")
    sups = [
        ("POD0000000001_S0000001", 1.0, 2.0, "spk1"),
        ("POD0000000001_S0000002", 5.0, 3.0, None),
        ("POD0000000001_S0000009", 18.0, 5.0, None),  # beyond the recording
        ("YOU0000000002_S0000001", 0.5, 1.0, None),
        ("AUD0000000003_S0000001", 1.0, 2.0, None),
        ("POD0000000009_S0000001", 0.0, 1.0, None),  # recording not downloaded
        ("POD0000000004_S0000001", 0.0, 1.0, None),
    ]  # no label
    manifest = tmp_path / "gigaspeech" / "gigaspeech_supervisions_M.jsonl.gz"
    SupervisionSet.from_segments(
        SupervisionSegment(
            id=sid, recording_id=sid.split("_S")[0], start=start, duration=dur, speaker=spk, text="IGNORED <COMMA>"
        )
        for sid, start, dur, spk in sups
    ).to_file(manifest)

    lab = tmp_path / "labels"
    lab.mkdir()
    (lab / "labels_M.json").write_text(
        json.dumps(
            {
                "POD0000000001_S0000001": {
                    "labels": labels(
                        age="Youth adult",
                        gender="Female",
                        pitch="Medium",
                        volume="normal",
                        speed="Fast",
                        emotion="Happy",
                        emphasis="Vault",
                        transcription=" Into a vault.",
                    )
                },
                "POD0000000001_S0000002": {
                    "labels": labels(
                        gender="male",
                        pitch="weird",
                        energy="High",
                        speed="slow",
                        emotion="unknown",
                        transcription="Second one.",
                    )
                },
                "POD0000000001_S0000009": {"labels": labels(gender="male", transcription="Too far.")},
                "POD0000000009_S0000001": {"labels": labels(gender="male", transcription="No audio.")},
                "POD0000000001_S0000077": {"labels": labels(gender="male", transcription="No times.")},
                "POD0000000001_S0000005": {"labels": 5},  # broken record
                "POD0000000001_S0000006": ["not", "a", "record"],  # broken record
                "POD0000000001_S0000007": {"labels": "no pairs here"},  # broken record
            },
            indent=4,
        )
    )
    (lab / "descriptions_M.json").write_text(
        json.dumps(
            {
                "POD0000000001_S0000001": "A happy young woman speaks quickly about a vault.",
                "POD0000000001_S0000002": {"instruction": "Say it slowly.", "caption": "A man, slowly."},
            }
        )
    )
    (lab / "more_M.jsonl").write_text(
        "\n".join(
            [
                json.dumps(
                    {
                        "sid": "YOU0000000002_S0000001",
                        "labels": labels(gender="female", emotion="anger", transcription="Third."),
                    }
                ),
                '{"sid": "YOU0000000002_S0000002", "labels": "gender:male',  # broken line
                json.dumps(
                    {
                        "AUD0000000003_S0000001": {
                            "labels": labels(gender="male", emotion="sad", transcription="Fourth.")
                        }
                    }
                ),
                "",
            ]
        )
    )
    (lab / "broken_M.json").write_text('{"POD0000000001_S0000003": {"labels": "gender:male"')
    return lab, audio, manifest, waves


def test_gigaspeech_long_recordings(tmp_path, gigaspeech):
    lab, audio, manifest, waves = gigaspeech
    out = tmp_path / "out"
    assert (
        cli(
            "--labels",
            lab,
            "--audio",
            audio,
            "--gigaspeech-manifest",
            manifest,
            "--out",
            out,
            "--dev-fraction",
            "0",
            "--test-fraction",
            "0",
        )
        == 0
    )
    cuts = {c.id: c for c in manifests(out)["train"]}
    assert sorted(cuts) == [
        "speechcraft-AUD0000000003_S0000001",
        "speechcraft-POD0000000001_S0000001",
        "speechcraft-POD0000000001_S0000002",
        "speechcraft-YOU0000000002_S0000001",
    ]
    report = json.loads(report_path(out, "speechcraft").read_text())
    assert report["skipped"] == {
        "bad_label_record": 3,
        "bad_label_line": 1,
        "bad_label_file": 1,
        "missing_audio": 2,
        "segment_out_of_range": 1,
    }
    named = {i["item"]: i for i in report["skipped_items"]}
    assert "no manifest gives the times" in named["POD0000000001_S0000077"]["detail"]
    assert "POD0000000009" in named["POD0000000009_S0000001"]["detail"]
    assert named[str(lab / "broken_M.json")]["reason"] == "bad_label_file"
    notes = " ".join(report["notes"])
    assert "1 audio file(s)" in notes and "pitch=weird" in notes

    first = record_of(cuts["speechcraft-POD0000000001_S0000001"])
    assert first["transcript"] == "Into a vault." and first["emotion"] == "happy"
    assert first["caption"] == "A happy young woman speaks quickly about a vault."
    assert first["attributes"] == {
        "gender": "female",
        "age": "youth adult",
        "pitch": "normal",
        "volume": "normal",
        "speed": "fast",
        "emphasis": "vault",
    }
    assert first["gender"] == "female" and first["speaker"] == "spk1"
    second = cuts["speechcraft-POD0000000001_S0000002"]
    rec = record_of(second)
    assert rec["emotion"] is None and rec["caption"] == "A man, slowly."  # caption beats instruction
    assert rec["attributes"] == {"gender": "male", "volume": "high", "speed": "slow"}
    assert second.supervisions[0].custom["captions"]["instruction"] == "Say it slowly."
    assert record_of(cuts["speechcraft-YOU0000000002_S0000001"])["emotion"] == "angry"

    for cut_id, start, dur in [
        ("POD0000000001_S0000001", 1.0, 2.0),
        ("POD0000000001_S0000002", 5.0, 3.0),
        ("YOU0000000002_S0000001", 0.5, 1.0),
    ]:
        cut = cuts[f"speechcraft-{cut_id}"]
        assert (cut.start, cut.duration, cut.recording.id) == (start, dur, cut_id.split("_S")[0])
        got = cut.load_audio()[0]
        want = waves[cut.recording.id][int(start * SR) : int((start + dur) * SR)]
        np.testing.assert_allclose(got, want, atol=1e-4)
    opus = cuts["speechcraft-AUD0000000003_S0000001"]
    assert opus.load_audio().shape[1] == pytest.approx(2 * opus.sampling_rate, abs=2)


def test_segment_file_is_preferred_and_shar_holds_segments(tmp_path, gigaspeech):
    lab, audio, manifest, _ = gigaspeech
    seg = write_audio(audio / "segments" / "POD0000000001_S0000002.flac", 0.7, 9)
    out = tmp_path / "out"
    assert (
        cli(
            "--labels",
            lab,
            "--audio",
            audio,
            "--gigaspeech-manifest",
            manifest,
            "--out",
            out,
            "--shar",
            "--test-fraction",
            "0",
            "--dev-fraction",
            "0",
        )
        == 0
    )
    cuts = {c.id: c for c in manifests(out)["train"]}
    assert len(cuts) == 4
    own = cuts["speechcraft-POD0000000001_S0000002"]
    assert own.recording.id == own.id and own.start == 0.0  # its own file, not the long one
    assert own.supervisions[0].speaker is None and record_of(own)["caption"] == "A man, slowly."
    np.testing.assert_allclose(own.load_audio()[0], seg, atol=1e-4)
    assert cuts["speechcraft-POD0000000001_S0000001"].recording.id == "POD0000000001"
    shar = {c.id: c for c in CutSet.from_shar(in_dir=shar_dir(out, "train"))}
    assert set(shar) == set(cuts)
    for cut_id, cut in cuts.items():  # the shards hold each segment's audio, not the recording
        assert shar[cut_id].load_audio().shape[1] == cut.load_audio().shape[1]


def test_split_by_recording(tmp_path, gigaspeech):
    lab, audio, manifest, _ = gigaspeech
    out = tmp_path / "out"
    assert (
        cli(
            "--labels",
            lab,
            "--audio",
            audio,
            "--gigaspeech-manifest",
            manifest,
            "--out",
            out,
            "--dev-fraction",
            "0.3",
            "--test-fraction",
            "0.3",
            "--seed",
            "1",
        )
        == 0
    )
    splits_of = defaultdict(set)
    for split, cuts in manifests(out).items():
        for cut in cuts:
            splits_of[cut.recording.id].add(split)
            assert record_of(cut)["split"] == split
    assert all(len(s) == 1 for s in splits_of.values())

    ids = [f"POD{i:010d}" for i in range(4000)]
    counts = Counter(sc.assign_split(r, 0.05, 0.1, seed=3) for r in ids)
    assert abs(counts["dev"] / 4000 - 0.05) < 0.015 and abs(counts["test"] / 4000 - 0.1) < 0.02
    assert [sc.assign_split(r, 0.05, 0.1, seed=3) for r in ids[:50]] == [
        sc.assign_split(r, 0.05, 0.1, seed=3) for r in ids[:50]
    ]
    assert [sc.assign_split(r, 0.05, 0.1, seed=4) for r in ids] != [sc.assign_split(r, 0.05, 0.1, seed=3) for r in ids]
    assert sc.recording_id_of("POD0000003712_S0000072") == "POD0000003712"
    assert sc.recording_id_of("LJSpeech_LJ010-0227") == "LJSpeech_LJ010-0227"


# ------------------------------------------------------------------------------ CLI
def test_missing_inputs_and_unrecognised_layout_exit_2(tmp_path, capsys, gigaspeech):
    lab, audio, manifest, _ = gigaspeech
    out = tmp_path / "out"
    nowhere = tmp_path / "nowhere"
    for args, named in [
        (("--labels", nowhere, "--audio", audio), nowhere),
        (("--labels", lab, "--audio", nowhere), nowhere),
        (("--labels", lab, "--audio", audio, "--gigaspeech-manifest", nowhere), nowhere),
    ]:
        assert cli(*args, "--out", out) == 2
        assert str(named) in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli("--labels", lab, "--audio", empty, "--out", out) == 2
    err = capsys.readouterr().err
    assert "unrecognised" in err and str(empty) in err
    assert cli("--labels", empty, "--audio", audio, "--out", out) == 2
    assert "no .json/.jsonl label file" in capsys.readouterr().err
    assert cli("--labels", lab, "--audio", audio, "--out", out, "--dev-fraction", "0.6", "--test-fraction", "0.5") == 2


def test_subcommand_is_registered():
    args = prepare_cli.build_parser().parse_args(
        ["speechcraft", "--labels", "a.json", "b.json", "--root", "audio", "--out", "o"]
    )
    assert args.audio == Path("audio") and args.labels == [Path("a.json"), Path("b.json")]
    assert args.dev_fraction == args.test_fraction == 0.01 and args.gigaspeech_manifests == []
