"""The ``fit`` entry point end to end on a tiny SynthCraft and a tiny model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from data_modules.synthcraft import generate
from explainable_ser.fit import main

from conftest import TINY_LLM

QUICK = [
    "training.stages.0.epochs=1",
    "training.stages.1.epochs=1",
    "data.max_duration=12",
    "trainer.enable_progress_bar=false",
    "eval.max_new_tokens=8",
    "trainer.log_every_n_steps=1",
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthcraft")
    generate(out, n_train=24, n_dev=6, n_test=6, seed=3, progress=False)
    return out


def fit_args(corpus, run_dir, *extra):
    return [*TINY_LLM, *QUICK, f"data.corpora.0.dir={corpus}", f"run_dir={run_dir}", *extra]


@pytest.fixture(scope="module")
def demo_run(corpus, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    assert main(fit_args(corpus, run_dir)) == 0
    return run_dir


def test_fit_writes_a_run_directory_that_reads_back(demo_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from data_modules.records import read_jsonl
    from explainable_ser.config import load_config
    from explainable_ser.evaluation.report import compute_metrics
    from explainable_ser.model.tokenizer import load_tokenizer

    cfg = load_config([str(demo_run / "config.yaml")])  # the resolved config, loadable as is
    assert cfg.run_dir == str(demo_run) and cfg.model.encoder.kind == "fbank"
    rows = read_jsonl(demo_run / "predictions.jsonl")
    assert sorted((r["id"], r["task"]) for r in rows) == sorted(
        (u, t) for u in {r["id"] for r in rows} for t in cfg.eval.tasks
    )
    tok = load_tokenizer(str(demo_run / "tokenizer"))  # the run's own word-level tokenizer
    for text in (cfg.model.system_prompt, " ".join(cfg.training.labels)):  # always in its vocabulary
        assert tok.unk_token_id not in tok(text)["input_ids"], text
    metrics = json.loads((demo_run / "metrics.json").read_text())
    again = compute_metrics(rows, list(cfg.training.labels), caption_metrics=("bleu4",))
    assert metrics["n_utterances"] == again["n_utterances"] == 6
    for key in ("ua", "wa", "macro_f1", "wer", "bleu4", "n_unparsed"):
        assert metrics[key] == again[key], key  # metrics.json is what its predictions give
    assert (demo_run / "offline_models" / "llm" / "config.json").exists()  # the frozen random LLM
    for stage in ("stage1", "stage2"):
        events = EventAccumulator(str(demo_run / "tensorboard" / stage)).Reload()
        assert any(tag.startswith("train/loss_") for tag in events.Tags()["scalars"]), stage


def test_the_run_ends_with_a_summary_and_a_probe_per_stream(demo_run):
    metrics = json.loads((demo_run / "metrics.json").read_text())
    summary = (demo_run / "summary.txt").read_text()
    assert f"UA {metrics['ua']:.3f} (chance 0.25 with 4 classes" in summary
    assert f"tensorboard --logdir {demo_run / 'tensorboard'}" in summary
    assert set(metrics["counterfactual"]) == {"descriptor", "content"}
    for stream, cf in metrics["counterfactual"].items():
        assert cf["n"] == 6 and f"{stream} tokens zeroed (6 utterances)" in summary
        assert 0.0 <= cf["unparseable_rate"] <= 1.0
    assert metrics["confusion_columns"] == [*metrics["labels"], "unparsed"]
    for _branch, lw in metrics["layer_weights"].items():  # what the summary's layer lines rest on
        assert abs(sum(lw["weights"]) - 1.0) < 1e-5 and lw["uniform"] == 1 / len(lw["weights"])
    timings = json.loads((demo_run / "timings.json").read_text())  # what a README timing quotes
    assert set(timings["seconds"]) == {"build", "warm_start", "stage1", "stage2", "evaluation", "total"}
    assert timings["seconds"]["total"] >= timings["seconds"]["stage1"] + timings["seconds"]["stage2"]
    assert {"commit", "command", "load_average_start", "torch_threads", "date"} <= set(timings)
    assert "time      build" in summary and "timings.json" in summary


def test_checkpoints_hold_only_adaptable_weights_and_load_weights_only(demo_run):
    ckpt = torch.load(demo_run / "stage2" / "final.ckpt", map_location="cpu", weights_only=True)
    keys = set(ckpt["state_dict"])
    assert keys, "checkpoint has weights"
    assert all(
        k.startswith(("model.content.", "model.descriptor.")) or "lora_" in k or "modules_to_save" in k for k in keys
    )
    assert not any(k.startswith("model.encoder.") for k in keys)
    assert "optimizer_states" in ckpt and "lr_schedulers" in ckpt


def test_stage2_starts_from_stage1_weights(demo_run):
    s1 = torch.load(demo_run / "stage1" / "final.ckpt", weights_only=True)["state_dict"]
    s2 = torch.load(demo_run / "stage2" / "final.ckpt", weights_only=True)["state_dict"]
    content = [k for k in s1 if k.startswith("model.content.")]
    assert content
    for k in content:  # frozen in stage 2, so carried over unchanged
        assert torch.equal(s1[k], s2[k]), k
    desc = [k for k in s1 if k.startswith("model.descriptor.block.encoder")]
    assert any(not torch.equal(s1[k], s2[k]) for k in desc), "stage 2 trains the descriptor branch"


def test_bad_config_exits_2_with_a_clear_message(capsys):
    assert main(["training.nonexistent=3"]) == 2
    err = capsys.readouterr().err
    assert "nonexistent" in err and "Traceback" not in err


def test_a_value_outside_a_fields_choices_exits_2_naming_field_and_choices():
    proc = subprocess.run(
        [sys.executable, "-m", "explainable_ser.fit", "model.encoder.kind=foo"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "model.encoder.kind" in lines[0] and "'foo'" in lines[0]
    assert all(f"'{kind}'" in lines[0] for kind in ("hf", "whisper", "fbank", "ctc_fbank"))


@pytest.mark.slow
def test_ddp_two_cpu_processes(corpus, tmp_path):
    # Lightning's DDP launcher re-executes the command line for rank 1, so run the real CLI.
    args = fit_args(
        corpus, tmp_path, "trainer.strategy=ddp", "trainer.devices=2", "trainer.accelerator=cpu", "eval.limit=4"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "explainable_ser.fit", *args], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "stage2" / "final.ckpt").exists()
    assert "MEMBER: 2/2" in proc.stderr + proc.stdout  # Lightning started the second rank
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["n_utterances"] == 4  # written once, by rank 0


@pytest.mark.slow
def test_bf16_mixed_precision(corpus, tmp_path):
    assert main(fit_args(corpus, tmp_path, "trainer.precision=bf16-mixed", "eval.limit=2")) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["n_utterances"] == 2 and isinstance(metrics["wer"], float)
    s1 = torch.load(tmp_path / "stage1" / "final.ckpt", weights_only=True)["state_dict"]
    s2 = torch.load(tmp_path / "stage2" / "final.ckpt", weights_only=True)["state_dict"]
    # Autocast computes in bf16; the trained (master) weights stay fp32, finite, and moved.
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in s2.values())
    lora = [k for k in s2 if "lora_" in k]
    assert lora and any(not torch.equal(s1[k], s2[k]) for k in lora)


def test_evaluate_cli_reproduces_the_trained_model(demo_run, tmp_path):
    from explainable_ser.evaluate import main as evaluate_main

    out = tmp_path / "eval"
    assert evaluate_main(["--ckpt", str(demo_run / "stage2" / "final.ckpt"), "--out", str(out), "eval.limit=3"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_utterances"] == 3
    reloaded = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert {r["task"] for r in reloaded} == {"asr", "ser_sed"}
    # A rebuild from disk (frozen random weights from offline_models/, adapters from the
    # checkpoint) must decode exactly what the in-process model decoded after training.
    in_process = {
        (r["id"], r["task"]): r["raw"]
        for r in map(json.loads, (demo_run / "predictions.jsonl").read_text().splitlines())
    }
    assert all(in_process[(r["id"], r["task"])] == r["raw"] for r in reloaded)


EMOSEC_SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "reference" / "formats" / "emosec"


def test_evaluate_warns_when_english_captions_meet_mandarin_references(demo_run, corpus, tmp_path, capsys):
    """The zero-shot EMOSEC row: a model trained on English captions, scored on SECap's Mandarin."""
    from data_modules.corpora.emosec import prepare_emosec
    from explainable_ser.evaluate import main as evaluate_main

    if not EMOSEC_SAMPLES.is_dir():
        pytest.skip(f"reference samples absent: {EMOSEC_SAMPLES}")
    prepare_emosec(EMOSEC_SAMPLES, tmp_path / "emosec", progress=False)
    overlay = tmp_path / "emosec.yaml"
    overlay.write_text(f"""data:
  corpora:
    - {{name: synthcraft, dir: {corpus}, weight: 1.0, train_split: train, val_split: dev, test_split: null}}
    - {{name: emosec, dir: {tmp_path / "emosec"}, weight: 1.0, train_split: null, val_split: null, test_split: test}}
eval:
  tasks: [sed]
""")
    out = tmp_path / "eval"
    assert (
        evaluate_main(
            [
                "--ckpt",
                str(demo_run / "stage2" / "final.ckpt"),
                "--out",
                str(out),
                str(demo_run / "config.yaml"),
                str(overlay),
            ]
        )
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert rows and all(r["corpus"] == "emosec" and r["language"] == "zh" for r in rows)
    assert metrics["caption_language"] == "zh"
    (warning,) = metrics["warnings"]
    assert "hypotheses are English" in warning and "Mandarin (zh)" in warning
    assert capsys.readouterr().err.count("warning: captions:") == 1  # in the log, once


def test_predict_prints_one_explanation_per_file(demo_run, corpus, capsys):
    from explainable_ser.predict import main as predict_main

    audio = sorted((corpus / "audio" / "test").glob("*.flac"))[:2]
    assert (
        predict_main(["--ckpt", str(demo_run / "stage2" / "final.ckpt"), *map(str, audio), "/nonexistent.wav"]) == 1
    )  # one bad file: reported
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert len(lines) == 3 and [r["file"] for r in lines if "error" in r] == ["/nonexistent.wav"]
    for line in (r for r in lines if "error" not in r):
        assert set(line["emotion_scores"]) == {"neutral", "happy", "sad", "angry"}
        assert abs(sum(line["emotion_scores"].values()) - 1.0) < 1e-3
        assert {"transcript", "caption", "emotion", "attributes"} <= set(line)


def test_predict_warns_when_the_spoken_language_is_not_the_training_one(demo_run, corpus, capsys, monkeypatch):
    from explainable_ser.predict import main as predict_main
    from explainable_ser.serving import batch

    class HearsMandarin:  # stands in for Whisper's language identification
        def __init__(self, name, device, trust_remote_code=False):
            assert name == "some-whisper"

        def __call__(self, wave):
            return "zh", 0.97

    monkeypatch.setattr(batch, "LanguageID", HearsMandarin)  # where predict's loop looks it up
    audio = sorted((corpus / "audio" / "test").glob("*.flac"))[0]
    assert (
        predict_main(["--ckpt", str(demo_run / "stage2" / "final.ckpt"), str(audio), "--language-id", "some-whisper"])
        == 0
    )
    out, err = capsys.readouterr()
    line = json.loads(next(x for x in out.splitlines() if x.startswith("{")))
    assert line["language"] == {"detected": "zh", "probability": 0.97, "training": ["en"]}
    assert "trained on ['en']" in line["warnings"][0] and "warning:" in err
    assert predict_main(["--ckpt", str(demo_run / "stage2" / "final.ckpt"), str(audio)]) == 0
    assert "language" not in json.loads(
        next(x for x in capsys.readouterr().out.splitlines() if x.startswith("{"))
    )  # fbank encoder: auto is off


def test_compare_pairs_utterances(demo_run, capsys):
    from explainable_ser.compare import main as compare_main

    pred = str(demo_run / "predictions.jsonl")
    assert compare_main([pred, pred, "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n_shared"] == 6 and res["only_a"] == 0  # 6 test utterances, each decoded for 2 tasks
    assert res["metrics"]["ua"]["delta"] == 0.0
    assert res["metrics"]["ua"]["p"] is None  # identical systems: no variance, no p-value
    assert compare_main([pred, "/nonexistent.jsonl"]) == 2


def scalars(run_dir, stage: str, tag: str) -> list[float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard" / stage))
    acc.Reload()
    return [e.value for e in acc.Scalars(tag)]


def test_schedules_follow_the_stage_length(demo_run):
    from explainable_ser.config import load_config

    beta = load_config([str(demo_run / "config.yaml")]).training.beta
    assert beta == 0.01  # the schema's default, the paper's 10^-2
    # Dynamic batches have no len(): the schedule must still know the stage's length.
    for stage in ("stage1", "stage2"):
        lrs = scalars(demo_run, stage, "lr-AdamW")
        assert lrs and max(lrs) > 0, stage
        betas = scalars(demo_run, stage, "train/beta")
        assert betas[0] == 0.0 and betas[-1] == pytest.approx(beta, rel=1e-6), (
            "beta ramps from 0 to its value during the KL warm-up"
        )


def test_lr_schedules():
    from explainable_ser.training.lit_module import lr_lambda

    cosine, constant = lr_lambda(10, 100, "cosine"), lr_lambda(10, 100, "constant")
    assert [cosine(s) for s in (0, 9)] == [0.1, 1.0]  # linear warm-up
    assert cosine(55) == pytest.approx(0.5) and cosine(100) == pytest.approx(0.0)
    assert constant(5) == 0.6 and constant(99) == 1.0


def test_fsdp_wraps_each_llm_decoder_layer(tiny_tokenizer, monkeypatch):
    from lightning.pytorch.strategies import FSDPStrategy

    from explainable_ser.config import ConfigError
    from explainable_ser.model.build import build_model
    from explainable_ser.training.recipe import trainer_kwargs

    from conftest import tiny_config

    cfg = tiny_config("trainer.strategy=fsdp")
    model = build_model(cfg.model, tiny_tokenizer)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="fsdp needs CUDA"):
            trainer_kwargs(cfg, model)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # build the strategy only
    strategy = trainer_kwargs(cfg, model)["strategy"]
    assert isinstance(strategy, FSDPStrategy)
    layer = type(model.llm.get_base_model().model.layers[0])
    assert strategy.kwargs["auto_wrap_policy"]._module_classes == {layer}
    assert strategy.kwargs["use_orig_params"]  # frozen and LoRA weights share units
    assert trainer_kwargs(tiny_config("trainer.strategy=ddp"), model)["strategy"] == "ddp"
    # FSDP flattens each unit into one tensor: a bf16 LLM with fp32 LoRA and branches is refused.
    bf16 = build_model(tiny_config("model.llm.dtype=bfloat16").model, tiny_tokenizer)
    with pytest.raises(ConfigError, match="one parameter dtype"):
        trainer_kwargs(cfg, bf16)


def test_dtype_auto_means_bf16_only_on_a_gpu_with_bf16_precision(monkeypatch):
    from explainable_ser.training.assembly import auto_dtype_device, compute_device

    from conftest import tiny_config

    assert auto_dtype_device(tiny_config("trainer.precision=bf16-mixed")) == compute_device(tiny_config())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert auto_dtype_device(tiny_config("trainer.precision=bf16-mixed")) == "cuda"
    assert auto_dtype_device(tiny_config("trainer.precision=32-true")) == "cpu"
    assert auto_dtype_device(tiny_config("trainer.precision=bf16-mixed", "trainer.strategy=fsdp")) == "cpu"
    assert auto_dtype_device(tiny_config("trainer.precision=bf16-mixed", "trainer.accelerator=cpu")) == "cpu"
