"""Shared fixtures: tiny random models and a tiny tokenizer (no downloads anywhere), and the
signals and measured SynthCraft clips that several data tests share."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck

from explainable_ser.config import ExperimentConfig, load_config
from explainable_ser.offline.tokenizer import build_word_tokenizer

TINY_TEXTS = [
    "the dog found a red ball near the house",
    'A male speaker with low pitch and high volume speaks at a slow pace, emphasizing the word "ball".',
    "neutral happy sad angry",
]

# The offline stack (``explainable_ser/configs/offline.yaml``; merged once even when a SynthCraft
# YAML before it already did), shrunk further: these lead every test's overrides.
TINY_LLM = [
    "offline",
    "model.llm.hf_config.hidden_size=32",
    "model.llm.hf_config.intermediate_size=64",
    "model.llm.hf_config.num_hidden_layers=2",
    "model.llm.hf_config.num_attention_heads=2",
    "model.llm.hf_config.num_key_value_heads=1",
    "model.llm.lora.dropout=0.0",
    "model.branch.hidden_dim=16",
    "model.branch.latent_dim=8",
    "model.branch.adapter_dim=16",
    "model.encoder.ctc_epochs=1",
]

# Concept heads on two measured cues, their values spelled by words of the tiny tokenizer's
# vocabulary (an unknown word would be its unknown token): ``model.branch.concepts={...}``.
TINY_CONCEPTS = (
    "model.branch.concepts={evidence.volume: {high: high, normal: red, low: low}, "
    "evidence.speed: {fast: happy, slow: slow}}"
)

HUBERT_FIELDS = dict(
    model_type="hubert",
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    conv_dim=[16] * 7,
    feat_extract_norm="layer",
    do_stable_layer_norm=True,
    conv_bias=True,
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=2,
    hidden_dropout=0.0,
    attention_dropout=0.0,
    activation_dropout=0.0,
    feat_proj_dropout=0.0,
    layerdrop=0.0,
)


def tiny_config(*overrides: str, hubert: bool = False) -> ExperimentConfig:
    cfg = load_config([*TINY_LLM, *overrides])
    if hubert:
        cfg.model.encoder.kind = "hf"
        cfg.model.encoder.hf_config = dict(HUBERT_FIELDS)
    return cfg


def waves(lengths, seed=0):
    """A batch of small random waveforms with the given lengths, zero-padded: (wave, lens)."""
    g = torch.Generator().manual_seed(seed)
    lens = torch.tensor(lengths)
    wave = torch.zeros(len(lengths), max(lengths))
    for i, n in enumerate(lengths):
        wave[i, :n] = 0.1 * torch.randn(n, generator=g)
    return wave, lens


def save_tiny_instruct(path, words: str, max_positions: int = 1024):
    """A tiny random Llama with the offline word tokenizer (chat template included) over
    ``words``, saved as a model directory: what --teacher / --judge take, like any hub
    instruct checkpoint."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = build_word_tokenizer([words])
    tok.save_pretrained(path)
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=max_positions,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    LlamaForCausalLM(cfg).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return build_word_tokenizer(TINY_TEXTS)


@pytest.fixture
def seeded():
    torch.manual_seed(0)
    yield


# -- a trained-looking run and its export (export, predict, the app) --------------------------
@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A run directory whose checkpoint has non-trivial LoRA and branch weights (random, as if
    trained: an untrained LoRA is zero and would make every comparison trivially equal)."""
    from data_modules.synthcraft import generate
    from explainable_ser.config import load_config, to_yaml
    from explainable_ser.training.assembly import build
    from explainable_ser.training.preparation import prepare
    from explainable_ser.training.stages import adaptable_names

    tmp = tmp_path_factory.mktemp("export")
    corpus = tmp / "corpus"
    generate(corpus, n_train=6, n_dev=2, n_test=2, seed=7, progress=False)
    run_dir = tmp / "run"
    cfg = load_config([*TINY_LLM, f"data.corpora.0.dir={corpus}", f"run_dir={run_dir}", "eval.max_new_tokens=6"])
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(to_yaml(cfg))
    _, module = build(cfg, run_dir, prepare(cfg, run_dir))
    gen = torch.Generator().manual_seed(0)
    keep = {f"model.{n}" for n in adaptable_names(module.model)}
    state = {
        k: (v + 0.05 * torch.randn(v.shape, generator=gen)) if v.is_floating_point() else v
        for k, v in module.state_dict().items()
        if k in keep
    }
    (run_dir / "stage2").mkdir()
    torch.save({"state_dict": state, "stage_name": "stage2"}, run_dir / "stage2" / "final.ckpt")
    (run_dir / "metrics.json").write_text(json.dumps({"ua": 0.5, "wer": 0.25, "n_utterances": 2}))
    clip = sorted((corpus / "audio" / "test").glob("*.flac"))[0]
    return run_dir, clip


@pytest.fixture(scope="session")
def exported(trained_run, tmp_path_factory):
    from explainable_ser.export import main

    run_dir, _ = trained_run
    out = tmp_path_factory.mktemp("exp") / "model"
    assert main(["--ckpt", str(run_dir / "stage2" / "final.ckpt"), "--out", str(out), "--merge-lora"]) == 0
    return out


# Caption metrics need Java for METEOR and SPICE; tests that score captions say so.
needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="needs Java")

# Captions with their references, for the caption metrics and compare's caption tests.
CAP_REFS = [
    ["A man speaks loudly with a high pitch.", "The male speaker talks loudly, pitch is high."],
    "A woman whispers slowly and sadly.",
    ["She speaks fast, with an angry tone!", "An angry female voice, fast speech."],
    ["A calm male voice at normal speed."],
]
CAP_HYPS = [
    "A man speaks loudly with high pitch.",
    "The woman whispers slowly.",
    None,
    "A calm man speaks at a normal speed.",
]


# -- cuts without audio (test_streaming.py, test_datamodule.py) -------------------------------
def fake_cuts(n: int, seed: int = 0):
    """A CutSet with SpeechCraft-like durations (no audio is read by the sampler)."""
    import random

    from lhotse import CutSet

    from data_modules.records import make_cut

    rng = random.Random(seed)
    cuts = []
    for i in range(n):
        dur = round(rng.uniform(1.0, 12.0), 2)
        cuts.append(
            make_cut(
                f"utt-{i:05d}",
                f"/nonexistent/{i}.flac",
                sampling_rate=16000,
                num_samples=int(dur * 16000),
                corpus="fake",
                split="train",
                transcript="a b",
                emotion="sad",
            )
        )
    return CutSet.from_cuts(cuts)


# -- SpeechCraft's released label samples (test_speechcraft*.py) ------------------------------
SPEECHCRAFT_SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "formats" / "speechcraft"
SPEECHCRAFT_LJ_LABELS = SPEECHCRAFT_SAMPLES / "pipeline_labels_LJspeech_0.first12.json"
SPEECHCRAFT_FORK_LABELS = SPEECHCRAFT_SAMPLES / "fork_labels_CTTS_0.first6.json"
needs_speechcraft_samples = pytest.mark.skipif(
    not SPEECHCRAFT_LJ_LABELS.is_file() or not SPEECHCRAFT_FORK_LABELS.is_file(),
    reason="SpeechCraft reference samples not present",
)


# -- SynthCraft's captions (test_synthcraft.py, test_caption_templates.py) --------------------
def parse_caption(caption: str) -> dict:
    """A keyword parser, as a downstream consumer would read captions back."""
    found = {
        "gender": re.search(r"\b(male|female) speaker\b", caption),
        "pitch": re.search(r"\b(low|normal|high) pitch\b", caption),
        "volume": re.search(r"\b(low|normal|high) volume\b", caption),
        "speed": re.search(r"\bat a (slow|normal|fast) pace\b", caption),
        "emphasis": re.search(r'the word "(\w+)"', caption),
    }
    return {key: m.group(1) if m else None for key, m in found.items()}


# -- the annotator's tests (tests/data_modules/annotate/) -------------------------------------
def harmonic(f0: float, seconds: float, amp: float = 0.3) -> np.ndarray:
    """A voice-like harmonic complex (1/k amplitudes) at ``f0``, peak ``amp``, at 16 kHz."""
    sr = 16000
    t = np.arange(int(seconds * sr)) / sr
    x = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 9) if k * f0 < sr / 2)
    return (amp * x / np.max(np.abs(x))).astype(np.float32)


@pytest.fixture(scope="session")
def synthcraft_measured(tmp_path_factory):
    """60 SynthCraft clips, measured once by two worker processes: (cuts, measured, metas,
    truth). Shared by the binning and the pipeline tests."""
    from lhotse import CutSet

    from data_modules.annotate.measure import measure_cuts
    from data_modules.records import record_of
    from data_modules.synthcraft import generate

    out = tmp_path_factory.mktemp("synthcraft")
    manifests = generate(out, n_train=60, n_dev=1, n_test=1, seed=0, num_workers=1, progress=False)
    cuts = list(CutSet.from_file(manifests["train"]))
    results = list(measure_cuts(cuts, workers=2))
    assert [r[0] for r in results] == [c.id for c in cuts]  # the pool keeps the order
    truth = [record_of(c)["attributes"] for c in cuts]
    return cuts, [r[1] for r in results], [r[2] for r in results], truth


# One record with every field the tasks' targets need (the model tests render it).
REC = {
    "transcript": "the dog found a red ball",
    "emotion": "sad",
    "caption": 'A male speaker with low pitch, emphasizing the word "ball".',
}


# -- fuzz tests (hypothesis): fast settings, a scratch folder, raw file writing ----------------
FAST = dict(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def scratch():
    with tempfile.TemporaryDirectory() as tmp:
        yield Path(tmp)


def write_raw(directory: Path, name: str, data: str | bytes) -> Path:
    """A file with exactly these bytes (text encoded with surrogates kept)."""
    path = directory / name
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_bytes(data.encode("utf-8", errors="surrogatepass"))
    return path
