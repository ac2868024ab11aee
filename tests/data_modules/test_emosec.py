"""EMOSEC reader: the real SECap samples (when present) and a fake set with every kind of bad input.

The reference samples (``/work/shared/reference/formats/emosec``) are read in place, never
copied into the project; their tests skip when the folder is absent.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from lhotse import CutSet
from scipy.signal import resample_poly

from data_modules import prepare
from data_modules.corpora import emosec as em
from data_modules.corpora.common import report_path
from data_modules.records import manifest_path, record_of

REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference" / "formats" / "emosec"
EXTENSIBLE_24BIT = "tx_xiao_0200107000704"


@pytest.fixture
def reference() -> Path:
    if not REFERENCE.is_dir():
        pytest.skip(f"reference samples absent: {REFERENCE}")
    return REFERENCE


def tone(seconds: float, sr: int, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    wave = 0.3 * np.sin(2 * np.pi * 300 * t)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


def load(out: Path) -> dict[str, dict]:
    return {c.id: record_of(c) for c in CutSet.from_file(manifest_path(out, "emosec", "test"))}


def read_report(out: Path) -> dict:
    return json.loads(report_path(out, "emosec").read_text())


# --------------------------------------------------------------------------- the real samples


@pytest.fixture
def prepared_reference(reference, tmp_path) -> Path:
    out = tmp_path / "out"
    em.prepare_emosec(reference, out, progress=False)
    return out


def test_reference_keeps_the_three_wavs_and_counts_the_rest(reference, prepared_reference):
    recs = load(prepared_reference)
    wavs = {p.stem for p in (reference / "wav").glob("*.wav")}
    assert set(recs) == wavs and len(wavs) == 3
    report = read_report(prepared_reference)
    assert report["skipped"] == {"missing_audio": 597}  # 600 captions, 3 wavs in the sample
    captions = json.loads((reference / "fid2captions.json").read_text())
    # tx_emotion_* lines are "id text " (space, trailing space), tx_emulate_* lines "id\ttext"
    texts = dict(line.split(maxsplit=1) for line in (reference / "text.txt").read_text().splitlines())
    for utt_id, rec in recs.items():
        assert rec["caption"] == captions[utt_id]
        assert rec["transcript"] == texts[utt_id].strip() and not rec["transcript"].endswith(" ")
        assert (rec["corpus"], rec["split"], rec["language"]) == ("emosec", "test", "zh")
        assert rec["emotion"] is None and rec["speaker"] is None


def test_reference_audio_is_16k_flac_of_the_same_duration(reference, prepared_reference):
    cuts = CutSet.from_file(manifest_path(prepared_reference, "emosec", "test"))
    for cut in cuts:
        src = sf.info(str(reference / "wav" / f"{cut.id}.wav"))
        flac = Path(cut.recording.sources[0].source)
        assert flac.parent == (prepared_reference / "audio").resolve() and flac.suffix == ".flac"
        info = sf.info(str(flac))
        assert (info.samplerate, info.channels, info.format) == (16000, 1, "FLAC")
        assert src.samplerate == 24000
        assert info.duration == pytest.approx(src.duration, abs=1e-3)
        assert cut.duration == pytest.approx(src.duration, abs=1e-3)
        assert cut.load_audio().shape == (1, info.frames)


def test_reference_24bit_extensible_wav_resamples(reference, prepared_reference):
    src_path = reference / "wav" / f"{EXTENSIBLE_24BIT}.wav"
    src = sf.info(str(src_path))
    assert (src.format, src.subtype, src.samplerate) == ("WAVEX", "PCM_24", 24000)
    audio, sr = sf.read(str(prepared_reference / "audio" / f"{EXTENSIBLE_24BIT}.flac"))
    assert sr == 16000
    assert len(audio) == round(src.frames * 16000 / 24000)
    assert len(audio) / sr == pytest.approx(5.761, abs=1e-3)
    # the same signal as an independent polyphase resampler gives (24 kHz * 2 / 3)
    original, _ = sf.read(str(src_path))
    expected = resample_poly(original, 2, 3)
    assert np.corrcoef(audio, expected)[0, 1] > 0.99
    assert np.sqrt(np.mean(audio**2)) == pytest.approx(np.sqrt(np.mean(expected**2)), rel=0.02)


# --------------------------------------------------------------------------- a fake set


BROKEN_JSON = """{
    "a_ok": "开心愉悦",
    "b_ext": "悲伤难过",
    "c_bad": "愤怒",
    "d_notext": "平静",
    "e_broken": "缺少引号,
    this line has no id
    "g_abs": "惊讶",
    "h_nowav": "害怕",
    "i_fallback": "轻松",
    "j_empty": ""
}
"""


def build_fake_set(base: Path) -> Path:
    """A SECap-like repository root (``base/dataset/...``) with one of each problem."""
    meta = base / "dataset"
    (meta / "wav").mkdir(parents=True)
    sf.write(meta / "wav" / "a_ok.wav", tone(0.5, 24000), 24000, subtype="PCM_16")
    sf.write(meta / "wav" / "b_ext.wav", tone(0.3, 24000), 24000, format="WAVEX", subtype="PCM_24")
    (meta / "wav" / "c_bad.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEgarbage header" * 4)
    sf.write(meta / "wav" / "d_notext.wav", tone(0.2, 24000), 24000)
    sf.write(meta / "wav" / "e_broken.wav", tone(0.2, 24000), 24000)
    sf.write(meta / "wav" / "f_scp_only.wav", tone(0.2, 24000), 24000)
    elsewhere = base / "elsewhere" / "g.wav"
    elsewhere.parent.mkdir()
    sf.write(elsewhere, tone(0.25, 48000, channels=2), 48000)
    sf.write(meta / "wav" / "i_fallback.wav", tone(0.2, 24000), 24000)
    sf.write(meta / "wav" / "j_empty.wav", tone(0.2, 24000), 24000)
    (meta / "fid2captions.json").write_text(BROKEN_JSON)
    (meta / "text.txt").write_text(
        "".join(
            f"{u} 这是{u}的文本。 \n"
            for u in ("a_ok", "b_ext", "c_bad", "e_broken", "g_abs", "h_nowav", "i_fallback", "j_empty")
        )
    )
    scp = [
        f"{u} dataset/wav/{u}.wav"
        for u in ("a_ok", "b_ext", "c_bad", "d_notext", "e_broken", "f_scp_only", "h_nowav", "j_empty")
    ]
    scp += [f"g_abs {elsewhere}", "i_fallback moved/away/i_fallback.wav", "lonely_token", "x y z", ""]
    (meta / "wav.scp").write_text("\n".join(scp) + "\n")
    return base


@pytest.fixture
def fake(tmp_path) -> tuple[Path, Path]:
    root = build_fake_set(tmp_path / "SECap")
    out = tmp_path / "out"
    em.prepare_emosec(root, out, progress=False)
    return root, out


def test_fake_set_keeps_the_good_utterances(fake):
    _, out = fake
    recs = load(out)
    assert set(recs) == {"a_ok", "b_ext", "d_notext", "g_abs", "i_fallback"}
    assert recs["a_ok"]["caption"] == "开心愉悦" and recs["a_ok"]["transcript"] == "这是a_ok的文本。"
    assert recs["d_notext"]["transcript"] is None  # kept without a transcript
    assert recs["b_ext"]["duration"] == pytest.approx(0.3, abs=1e-3)
    assert recs["g_abs"]["duration"] == pytest.approx(0.25, abs=1e-3)  # 48 kHz stereo, absolute path
    for utt_id in recs:
        info = sf.info(str(out / "audio" / f"{utt_id}.flac"))
        assert (info.samplerate, info.channels) == (16000, 1)


def test_fake_set_bad_input_is_skipped_counted_and_named(fake):
    _, out = fake
    report = read_report(out)
    assert report["skipped"] == {
        "bad_audio": 1,
        "broken_caption_line": 2,
        "missing_caption": 1,
        "missing_audio": 1,
        "bad_caption": 1,
        "broken_wav_scp_line": 2,
    }
    named = {(i["reason"], i["item"]) for i in report["skipped_items"]}
    assert {
        ("bad_audio", "c_bad"),
        ("broken_caption_line", "e_broken"),
        ("missing_caption", "f_scp_only"),
        ("missing_audio", "h_nowav"),
        ("bad_caption", "j_empty"),
    } <= named
    lines = sorted(
        i["item"].rsplit(":", 1)[1]
        for i in report["skipped_items"]
        if i["reason"] in ("broken_wav_scp_line", "broken_caption_line") and ":" in i["item"]
    )
    assert lines == ["11", "12", "7"]  # scp lines 11 and 12, json line 7 (no id to name)
    assert any("not valid JSON" in n for n in report["notes"])
    assert any("d_notext" in n and "transcript None" in n for n in report["notes"])
    assert not (out / "audio" / "c_bad.flac").exists()
    assert not list((out / "audio").glob("*.tmp"))


def test_second_run_reuses_valid_flacs_and_redoes_broken_ones(fake, monkeypatch):
    root, out = fake
    (out / "audio" / "a_ok.flac").write_bytes(b"not a flac")  # e.g. a damaged earlier output
    before = {p.name: p.stat().st_mtime_ns for p in (out / "audio").glob("*.flac")}
    converted = []
    real_convert = em.convert
    monkeypatch.setattr(em, "convert", lambda src, dst: converted.append(src.stem) or real_convert(src, dst))
    em.prepare_emosec(root, out, progress=False)
    assert converted == ["a_ok", "c_bad"]  # the damaged output, and the bad wav tried again
    after = {p.name: p.stat().st_mtime_ns for p in (out / "audio").glob("*.flac")}
    assert {k for k in before if before[k] == after[k]} == set(before) - {"a_ok.flac"}
    assert sf.info(str(out / "audio" / "a_ok.flac")).samplerate == 16000
    assert set(load(out)) == {"a_ok", "b_ext", "d_notext", "g_abs", "i_fallback"}


def test_root_may_be_the_dataset_folder(tmp_path):
    root = build_fake_set(tmp_path / "SECap") / "dataset"
    out = tmp_path / "out"
    em.prepare_emosec(root, out, progress=False)
    assert set(load(out)) == {"a_ok", "b_ext", "d_notext", "g_abs", "i_fallback"}


def test_valid_json_with_missing_text_file(tmp_path):
    root = tmp_path / "set"
    (root / "wav").mkdir(parents=True)
    sf.write(root / "wav" / "u1.wav", tone(0.2, 24000), 24000)
    captions = {"u1": "高兴", "u2": ["a", "list"]}
    (root / "fid2captions.json").write_text(json.dumps(captions, ensure_ascii=False))
    em.prepare_emosec(root, tmp_path / "out", progress=False)
    assert load(tmp_path / "out")["u1"]["transcript"] is None
    report = read_report(tmp_path / "out")
    assert report["skipped"] == {"bad_caption": 1}
    assert any("text.txt not found" in n for n in report["notes"])


def test_cli_with_shar(tmp_path, capsys):
    root = build_fake_set(tmp_path / "SECap")
    out = tmp_path / "out"
    assert prepare.main(["emosec", "--root", str(root), "--out", str(out), "--shar"]) == 0
    assert list((out / "shar" / "test").glob("recording.*.tar"))
    printed = capsys.readouterr().out
    assert "kept 5 utterances" in printed and "skipped bad_audio: 1" in printed


@pytest.mark.parametrize("layout", ["missing", "empty", "no_captions"])
def test_cli_rejects_a_root_without_the_set(tmp_path, capsys, layout):
    root = tmp_path / "raw"
    if layout != "missing":
        (root / "wav").mkdir(parents=True)
    if layout == "no_captions":
        (root / "wav.scp").write_text("u1 wav/u1.wav\n")
    assert prepare.main(["emosec", "--root", str(root), "--out", str(tmp_path / "out")]) == 2
    assert str(root) in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
