"""Spoken-language identification for flagging out-of-domain audio in ``predict``."""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf
import soxr
import torch

from explainable_ser.config import load_config
from explainable_ser.serving.language_id import LanguageID, training_languages

EMOSEC_WAVS = Path(__file__).resolve().parents[4] / "shared" / "reference" / "formats" / "emosec" / "wav"


def read16k(path) -> torch.Tensor:
    audio, sr = sf.read(path, dtype="float32")
    audio = audio.mean(axis=1) if audio.ndim == 2 else audio
    return torch.from_numpy(soxr.resample(audio, sr, 16000) if sr != 16000 else audio)


@pytest.fixture(scope="module")
def synthcraft(tmp_path_factory):
    from data_modules.synthcraft import generate

    root = tmp_path_factory.mktemp("sc")
    generate(root, n_train=3, n_dev=1, n_test=3, seed=0, progress=False)
    return root


def test_training_languages_read_the_records_or_say_none(synthcraft, tmp_path):
    cfg = load_config(["offline", f"data.corpora.0.dir={synthcraft}"])
    assert training_languages(cfg.data) == {"en"}
    away = load_config(["offline", f"data.corpora.0.dir={tmp_path / 'gone'}"])
    assert training_languages(away.data) is None  # the model used away from its data


@pytest.mark.packaged
def test_whisper_base_tells_mandarin_from_english(synthcraft):
    if not EMOSEC_WAVS.is_dir():
        pytest.skip(f"reference samples absent: {EMOSEC_WAVS}")
    lid = LanguageID("pkg:whisper-base")
    for wav in sorted(EMOSEC_WAVS.glob("*.wav")):  # real EMOSEC clips, read in place
        code, prob = lid(read16k(wav))
        assert code == "zh" and prob > 0.9, (wav.name, code, prob)
    for flac in sorted((synthcraft / "audio" / "test").glob("*.flac")):
        code, prob = lid(read16k(flac))
        assert code == "en" and prob > 0.5, (flac.name, code, prob)


@pytest.mark.packaged
def test_an_english_only_whisper_is_refused_with_a_reason():
    with pytest.raises(ValueError, match="no language tokens"):
        LanguageID("pkg:whisper-tiny.en")
