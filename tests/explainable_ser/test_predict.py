"""``predict`` on folders: recursion, formats, bucketed batches, resuming, bad files."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from explainable_ser.predict import main
from explainable_ser.serving.batch import already_done, batches, collect


@pytest.fixture(scope="module")
def folder(trained_run, tmp_path_factory):
    """Nested clips: the corpus's FLACs, one as 8 kHz stereo WAV, one as MP3 (PyAV), bad files."""
    run_dir, clip = trained_run
    root = tmp_path_factory.mktemp("clips")
    corpus = clip.parents[2]
    for i, flac in enumerate(sorted((corpus / "audio").rglob("*.flac"))):
        sub = root / ("a" if i % 2 else "b/deeper")
        sub.mkdir(parents=True, exist_ok=True)
        shutil.copy(flac, sub / flac.name)
    audio, sr = sf.read(str(clip), dtype="float32")
    sf.write(str(root / "stereo_8k.WAV"), np.stack([audio[::2], audio[::2]], axis=1), sr // 2)
    import av

    with av.open(str(root / "clip.mp3"), "w") as out:  # a format soundfile does not read here
        stream = out.add_stream("mp3", rate=sr)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(audio[None], format="flt", layout="mono")
        frame.sample_rate = sr
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    (root / "broken.flac").write_bytes(b"fLaC but not really" * 20)
    (root / "notes.txt").write_text("not audio, not searched for")
    return root


def rows_of(path: Path) -> dict[str, dict]:
    return {Path(r["file"]).name: r for r in map(json.loads, path.read_text().splitlines())}


def test_folders_are_searched_recursively_for_audio(folder):
    files, missing = collect([str(folder), str(folder / "nope")])
    names = sorted(Path(f).name for f in files)
    assert "notes.txt" not in names and "clip.mp3" in names and "stereo_8k.WAV" in names
    assert len(names) == 13 and missing == [str(folder / "nope")]  # 10 corpus clips + 3 made here (one broken)


def test_bucketed_batches_hold_similar_durations_and_lose_no_file():
    seconds = {f"f{i}": d for i, d in enumerate([1.0, 9.0, 2.0, 50.0, 8.5, 1.5, 3.0])}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # lhotse's warnings about the 50 s file: expected, kept quiet
        got = list(batches(list(seconds), seconds, batch_seconds=12))
    assert sorted(f for b in got for f in b) == sorted(seconds)
    assert ["f3"] in got  # longer than a batch: alone, not dropped
    for b in got:
        assert sum(seconds[f] for f in b) <= 12 or len(b) == 1
    assert list(batches(list(seconds), seconds, batch_seconds=0)) == [[f] for f in seconds]


def test_a_folder_run_writes_every_file_once_and_resumes(folder, exported, tmp_path, capsys):
    out = tmp_path / "preds.jsonl"
    assert main(["--model", str(exported), str(folder), "--out", str(out), "--batch-seconds", "20"]) == 1
    rows = rows_of(out)
    err = capsys.readouterr().err
    assert len(rows) == 13 and "error" in rows["broken.flac"] and "explained 12 file(s)" in err
    for name in ("clip.mp3", "stereo_8k.WAV"):
        assert set(rows[name]["emotion_scores"]) == {"neutral", "happy", "sad", "angry"}, name
    order = [json.loads(line)["file"] for line in out.read_text().splitlines()]
    assert order == collect([str(folder)])[0]  # the inputs' order, although batched by length
    # An interruption: the last lines lost, one of them cut in half.
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:9]) + lines[9][:25])
    assert len(already_done(out)) == 9 and out.read_text().endswith("\n")
    # the bad file (sorted after the two folders) is among the four left: it fails again
    assert order.index(str(folder / "broken.flac")) >= 9
    assert main(["--model", str(exported), str(folder), "--out", str(out), "--batch-seconds", "20"]) == 1
    err = capsys.readouterr().err
    assert "9 of 13 files are already in" in err and "explained 3 file(s)" in err
    again = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(again) == 13 and {r["file"] for r in again} == {str(r["file"]) for r in rows.values()}


def test_batched_and_one_at_a_time_agree(folder, exported, tmp_path):
    one, many = tmp_path / "one.jsonl", tmp_path / "many.jsonl"
    assert main(["--model", str(exported), str(folder / "a"), "--out", str(one), "--batch-seconds", "0"]) == 0
    assert main(["--model", str(exported), str(folder / "a"), "--out", str(many), "--batch-seconds", "60"]) == 0
    a, b = rows_of(one), rows_of(many)
    assert a.keys() == b.keys() and len(a) == 5
    for name in a:  # padding in a batch may move a score in the last digits, not the answer
        assert a[name]["transcript"] == b[name]["transcript"], name
        assert a[name]["emotion"] == b[name]["emotion"], name
        for lab, p in a[name]["emotion_scores"].items():
            assert abs(p - b[name]["emotion_scores"][lab]) < 1e-3


def test_the_checkpoint_and_the_export_predict_the_same(trained_run, exported, capsys):
    run_dir, clip = trained_run
    assert main(["--ckpt", str(run_dir / "stage2" / "final.ckpt"), str(clip)]) == 0
    from_ckpt = json.loads(capsys.readouterr().out)
    assert main(["--model", str(exported), str(clip)]) == 0
    assert json.loads(capsys.readouterr().out) == from_ckpt
    for given in (run_dir, run_dir / "stage2"):  # a run or a stage directory: its final checkpoint
        assert main(["--ckpt", str(given), str(clip)]) == 0
        out = capsys.readouterr()
        assert json.loads(out.out) == from_ckpt
        assert f"checkpoint: {run_dir / 'stage2' / 'final.ckpt'} (from {given})" in out.err


def test_a_folder_without_audio_and_a_missing_model_are_named(tmp_path, exported, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["--model", str(exported), str(tmp_path / "empty")]) == 2
    assert "holds no audio file" in capsys.readouterr().err
    assert main(["--model", str(tmp_path / "nomodel"), str(tmp_path / "empty")]) == 2
    clip = tmp_path / "x.wav"
    sf.write(str(clip), np.full(16000, 0.1, dtype=np.float32), 16000)
    assert main(["--model", str(tmp_path / "nomodel"), str(clip)]) == 2
    assert "model directory not found" in capsys.readouterr().err
    assert main(["--model", str(tmp_path), str(clip)]) == 2
    assert "not an exported model directory" in capsys.readouterr().err


def test_a_clip_outside_the_length_limits_is_refused_naming_limit_and_key(tmp_path, exported, capsys):
    from explainable_ser.serving.inference import AudioError, Explainer

    short, long = tmp_path / "short.wav", tmp_path / "long.wav"
    sf.write(str(short), np.full(1600, 0.1, dtype=np.float32), 16000)  # 0.1 s
    sf.write(str(long), np.full(16000 * 31, 0.1, dtype=np.float32), 16000)  # 31 s
    assert main(["--model", str(exported), str(short)]) == 1
    assert f"{short}: too_short: 0.10 s < 0.30 s minimum (data.min_clip_seconds)" in capsys.readouterr().err
    # predict cuts a long file into pieces; read as one clip (training's rule) it is refused
    ser = Explainer.from_export(exported)
    with pytest.raises(AudioError, match=r"too_long: 31.0 s > 30 s maximum \(data.max_clip_seconds\)"):
        ser.read(long, any_length=False)


def test_a_long_recording_gets_a_line_per_piece_then_its_own_in_input_order_and_resumes(
    tmp_path, exported, trained_run, capsys
):
    """Files come out in the order given (batched by length, explained out of order); a
    recording longer than the limit gets its pieces' lines, then its own; a run cut off in the
    middle of a recording's lines explains that recording again, without duplicating pieces."""
    _, clip = trained_run
    audio, sr = sf.read(str(clip), dtype="float32")
    gap = np.zeros(sr, dtype=np.float32)
    long = tmp_path / "b_long.wav"
    sf.write(str(long), np.concatenate([gap, audio, gap, audio, gap, audio, gap]), sr)
    short_a, short_c = tmp_path / "a.wav", tmp_path / "c.wav"
    sf.write(str(short_a), audio, sr)
    sf.write(str(short_c), np.concatenate([audio, audio[: sr // 2]]), sr)  # longer: batched first
    out = tmp_path / "out.jsonl"
    args = [
        "--model",
        str(exported),
        str(short_c),
        str(long),
        str(short_a),
        "data.max_clip_seconds=3",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main(args) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    names = [Path(r.get("file") or r["recording"]).name + ("#" if "recording" in r else "") for r in rows]
    assert names == ["c.wav", "b_long.wav#", "b_long.wav#", "b_long.wav#", "b_long.wav", "a.wav"]
    rec = rows[4]
    assert rec["n_pieces"] == 3 and [t[:2] for t in rec["timeline"]] == [[r["start"], r["end"]] for r in rows[1:4]]
    assert [r["piece"] for r in rows[1:4]] == [0, 1, 2] and rows[1]["start"] == pytest.approx(1.0, abs=0.15)
    # cut off after two of the recording's piece lines: those are removed, the recording redone
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:3]))
    capsys.readouterr()
    assert main(args) == 0
    assert "removed 2 piece line(s)" in capsys.readouterr().err
    again = [json.loads(line) for line in out.read_text().splitlines()]
    assert again[0] == rows[0] and len(again) == len(rows)
    assert [r.get("file") or r["recording"] for r in again[1:]] == [r.get("file") or r["recording"] for r in rows[1:]]
