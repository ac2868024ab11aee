"""benchmarks/train_step.py: its written-out FLOP count against torch's FLOP counter, and a run.

No timing is asserted here (timings live in the JSON the scripts write).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from explainable_ser.model.prompts import get_task

REPO = Path(__file__).resolve().parents[1]


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ts():
    return load_script("train_step")


def small_stack(ts, head_trainable: bool):
    """The benchmark's stack, smaller still, with eager attention (torch counts its matmuls)."""
    cfg, enc_hf, llm_hf = ts.experiment_config("tiny", "baseline")
    cfg.model.encoder.attn_implementation = cfg.model.llm.attn_implementation = "eager"
    enc_hf.update(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        conv_dim=[32] * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
    )
    llm_hf.update(hidden_size=64, intermediate_size=96, num_hidden_layers=2)
    cfg.model.branch.hidden_dim, cfg.model.branch.latent_dim, cfg.model.branch.adapter_dim = 48, 16, 80
    cfg.model.llm.lora.target_modules = ["q_proj", "v_proj", "down_proj"]
    cfg.model.llm.lora.modules_to_save = ["lm_head"] if head_trainable else []
    return cfg, enc_hf, llm_hf


def counted_step(model, lengths: list[int], target: str) -> int:
    """torch's count of one training step (forward + backward) on clips of these lengths."""
    task = get_task("ser_sed")
    wave, lens = torch.randn(len(lengths), max(lengths)) * 0.1, torch.tensor(lengths)
    with FlopCounterMode(display=False) as counter:
        out = model(wave, lens, task, [target] * len(lengths))
        (out["ce"] + out["kl_descriptor"]).mean().backward()
    return counter.get_total_flops()


@pytest.mark.parametrize("variant", ["head_frozen", "head_trainable", "no_vib"])
def test_flop_formula_matches_torch_flop_counter(ts, variant, tmp_path):
    torch.manual_seed(0)
    cfg, enc_hf, llm_hf = small_stack(ts, head_trainable=variant == "head_trainable")
    cfg.model.branch.variational = variant != "no_vib"  # Sys.4: no disentanglement block
    vocab = 1000
    model, _ = ts.build(cfg, "cpu", vocab, tmp_path)
    model.train()
    head, mid, tail = model.prompts.pieces(get_task("ser_sed"))
    prompt_len = len(head) + len(mid) + len(tail)
    target = " ".join(f"w{i}" for i in range(12))
    n_target = len(model.prompts.target_ids(target))

    def formula(lengths):
        return ts.step_flops(cfg, enc_hf, llm_hf, vocab, lengths, prompt_len, n_target)["total"]

    # Equal lengths (no padding): every matmul, convolution and attention product, forward and
    # backward, is accounted for.
    assert formula([16000] * 3) == pytest.approx(counted_step(model, [16000] * 3, target), rel=1e-6)
    # Mixed lengths: the formula counts the real work, i.e. each clip as if it were alone; the
    # padded batch costs torch more than that.
    mixed = [16000, 9000, 12500]
    alone = sum(counted_step(model, [n], target) for n in mixed)
    assert formula(mixed) == pytest.approx(alone, rel=1e-6)
    assert counted_step(model, mixed, target) > 1.1 * formula(mixed)


def test_encoder_flops_match_the_counter_alone(ts):
    """The encoder term on its own (its matmuls dominate the check above at this size)."""
    from transformers import AutoConfig, AutoModel

    _, enc_hf, _ = ts.experiment_config("tiny", "baseline")
    hf = AutoConfig.for_model(**enc_hf)
    hf._attn_implementation = "eager"
    model = AutoModel.from_config(hf).eval()
    wave = torch.randn(2, 24000)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(wave)
    assert 2 * ts.encoder_flops(enc_hf, 24000) == pytest.approx(counter.get_total_flops(), rel=1e-3)


def test_bucketed_and_random_batches_hold_the_same_audio(ts):
    project, base = ts.clip_lengths("project", 8, 10.0), ts.clip_lengths("baseline", 8, 10.0)
    assert sum(project) == pytest.approx(80 * ts.SR, abs=8) and sum(base) == pytest.approx(80 * ts.SR, abs=8)
    assert max(project) / min(project) < 1.15  # bucketed: little padding
    assert max(base) / min(base) > 2  # random: much
    assert ts.clip_lengths("baseline+bucketing", 8, 10.0) == project


def test_each_ablation_adds_one_feature_to_the_baseline(ts):
    assert ts.features("project") == set(ts.FEATURES) and ts.features("baseline") == set()
    for f in ts.FEATURES:
        assert ts.features(f"baseline+{f}") == {f} and f"baseline+{f}" in ts.CONFIGS
    base, bf16 = ts.experiment_config("tiny", "baseline")[0], ts.experiment_config("tiny", "baseline+bf16_encoder")[0]
    assert base.model.encoder.dtype == "float32" and bf16.model.encoder.dtype == "auto"
    assert base.model.llm.attn_implementation == "sdpa"  # the library default, not eager
    assert ts.datasheet_peak("NVIDIA H100 80GB HBM3") == 989.0 and ts.datasheet_peak("NVIDIA H100 PCIe") == 756.0
    assert ts.datasheet_peak("NVIDIA H200") == 989.0 and ts.datasheet_peak(None) is None


@pytest.mark.slow
def test_train_step_script_writes_its_json(tmp_path):
    out = tmp_path / "train_step.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "train_step.py"),
            "--size",
            "tiny",
            "--cpu",
            "--configs",
            "project,baseline,baseline+target_logits,qlora",
            "--steps",
            "1",
            "--warmup",
            "1",
            "--seconds",
            "2",
            "--batch",
            "2",
            "--matmul-n",
            "256",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    project, base = res["configs"]["project"], res["configs"]["baseline"]
    assert project["samples_per_s"] > 0 and 0 < project["mfu"] and project["mfu_datasheet"] is None  # CPU
    assert base["encoder_dtype"] == "torch.float32" and base["llm"]["attn"] == project["llm"]["attn"] == "sdpa"
    assert project["flops_per_step"]["total"] > 0 and project["peak_rss_gb"] > 0
    assert "skipped" in res["configs"]["qlora"]  # no GPU here: said, not faked
    assert set(res["speedup_vs_baseline"]) == {"project", "baseline+target_logits"}


def test_cli_startup_script_writes_its_json(tmp_path):
    out = tmp_path / "cli.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "cli_startup.py"), "--repeat", "1", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert set(result["help_seconds"]) == {
        "explainable_ser.fit",
        "explainable_ser.evaluate",
        "explainable_ser.predict",
        "explainable_ser.compare",
        "explainable_ser.crossval",
    }
    assert all(v["median"] > 0 for v in result["help_seconds"].values())


def test_predict_script_times_both_modes_on_the_same_files(exported, trained_run, tmp_path):
    """benchmarks/predict.py on the tiny export: both modes explain every file, agree, write JSON."""
    _, clip = trained_run
    out = tmp_path / "predict.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "predict.py"),
            "--model",
            str(exported),
            str(clip.parents[1]),
            "--n",
            "4",
            "--batch-seconds",
            "20",
            "--out",
            str(out),
            "--keep",
            str(tmp_path / "lines"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["n_files"] == 4 and set(res["modes"]) == {"batch1", "bucketed"}
    assert res["modes"]["batch1"]["n_batches"] == 4 and res["modes"]["bucketed"]["n_batches"] < 4
    for mode in res["modes"].values():
        assert mode["n_explained"] == 4 and mode["exit_status"] == 0 and mode["utt_per_s"] > 0
    agree = res["agreement"]
    assert agree["n_compared"] == 4 and agree["identical_emotion"] == 4 and agree["max_abs_score_diff"] < 1e-3
    assert len((tmp_path / "lines" / "bucketed.jsonl").read_text().splitlines()) == 4
    assert res["provenance"]["load_average_start"] and res["provenance"]["commit"]


def benchmark_module(name: str):
    """A script under benchmarks/ imported as a module (the folder is no package)."""
    import importlib

    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)


def test_eval_cost_script_times_both_variants_and_compares_rows(trained_run, tmp_path):
    eval_cost = benchmark_module("eval_cost")
    run_dir, _ = trained_run
    out = tmp_path / "eval_cost.json"
    assert (
        eval_cost.main(
            [
                "--ckpt",
                str(run_dir / "stage2" / "final.ckpt"),
                "--limit",
                "2",
                "--repeats",
                "1",
                "--out",
                str(out),
                "trainer.precision=bf16-mixed",
            ]
        )
        == 0
    )
    res = json.loads(out.read_text())
    assert res["precision"] == "bf16-mixed" and res["rows_identical"] is True
    assert res["n_rows"] == 2 * (2 + 2)  # 2 clips: asr + ser_sed, then ser_sed with each stream zeroed
    assert set(res["passes"]) == {"rows", "descriptor", "content"}
    assert len(res["seconds"]["cast_once"]) == 1 and res["speedup"] > 0


def test_warmstart_ablation_script_writes_its_json(tmp_path):
    """The descriptor warm start's levers on the tiny offline stack: one row per variant."""
    from data_modules.synthcraft import generate

    from conftest import TINY_LLM

    generate(tmp_path / "corpus", n_train=16, n_dev=4, n_test=1, seed=2, progress=False)
    out = tmp_path / "ws.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "warmstart_ablation.py"),
            *TINY_LLM,
            f"data.corpora.0.dir={tmp_path / 'corpus'}",
            "training.warm_start.batch_size=8",
            "--only",
            "paper block, 5 passes (the earlier demo)",
            "+ utterance context + field heads, 5 passes",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    assert list(res["variants"]) == [
        "paper block, 5 passes (the earlier demo)",
        "+ utterance context + field heads, 5 passes",
    ]
    plain, heads = res["variants"].values()
    assert plain["dev_field_head_accuracy"] == {} and heads["dev_field_head_accuracy"]
    assert set(plain["dev_field_accuracy"]) >= {"gender", "pitch", "emotion"}
    assert res["n_train"] == 16 and res["n_dev"] == 4 and res["load_average_end"]


def test_a_device_check_part_over_its_limit_is_stopped_with_its_children(tmp_path):
    dc = load_script("device_check")
    pid_file = tmp_path / "child.pid"
    # a part that starts a child of its own (as train_step.py does) and outlives its limit
    cmd = ["bash", "-c", f"sleep 60 & echo $! > {pid_file}; wait"]
    with open(tmp_path / "log.txt", "w") as log:
        res = dc.run_part("slow", cmd, tmp_path / "slow.json", log, timeout=2)
    assert res["failed"] == "timeout" and "timed out after 2 s" in res["error"][-1]
    assert json.loads((tmp_path / "slow.json").read_text())["failed"] == "timeout"
    child = int(pid_file.read_text())
    import os
    import time

    for _ in range(50):  # the kill is asynchronous; the child is gone within moments
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the part's child {child} survived its limit")


def test_long_recording_script_finds_each_clip_as_a_piece(trained_run, tmp_path):
    """Test clips joined with pauses through predict: one piece per clip, boundaries close."""
    long_recording = benchmark_module("long_recording")
    run_dir, clip = trained_run
    out = tmp_path / "long.json"
    assert (
        long_recording.main(
            [
                "--ckpt",
                str(run_dir),
                "--clips",
                str(clip.parents[2]),
                "--seconds",
                "4",
                "--work",
                str(tmp_path / "work"),
                "--out",
                str(out),
                "data.max_clip_seconds=3",
            ]
        )
        == 0
    )
    res = json.loads(out.read_text())
    assert res["n_clips"] >= 2 and res["n_pieces"] == res["n_clips"] and res["one_piece_per_clip"]
    assert res["boundaries_within_0.15s"] == res["n_clips"]
    assert res["recording"]["n_pieces"] == res["n_pieces"] and res["recording"]["duration"] > 3
