"""Export: peft's adapter format, one-call loading, equal outputs, the merged LLM."""

from __future__ import annotations

import json

import pytest
import torch

from explainable_ser.export import main
from explainable_ser.serving.bundle import ExportError, export, load_exported, verify
from explainable_ser.serving.inference import Explainer


def test_the_export_is_self_describing(exported):
    for name in (
        "README.md",
        "explainable_ser.json",
        "config.yaml",
        "branches.safetensors",
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
        "tokenizer/tokenizer.json",
        "merged_llm/config.json",
        "metrics.json",
        "base_models/llm/config.json",
        "verification.json",
    ):
        assert (exported / name).exists(), name
    info = json.loads((exported / "explainable_ser.json").read_text())
    assert info["base_models"]["llm"] == {"name_or_path": None, "copied_to": "base_models/llm"}
    assert info["labels"] == ["neutral", "happy", "sad", "angry"]
    card = (exported / "README.md").read_text()
    assert "| UA (unweighted accuracy) | 0.500 |" in card and "| WER | 0.250 |" in card
    adapter_cfg = json.loads((exported / "adapter" / "adapter_config.json").read_text())
    assert adapter_cfg["peft_type"] == "LORA" and adapter_cfg["base_model_name_or_path"] == "base_models/llm"


def test_one_call_loading_gives_the_checkpoints_outputs(trained_run, exported):
    import explainable_ser

    run_dir, clip = trained_run
    from_ckpt = Explainer.from_checkpoint(run_dir / "stage2" / "final.ckpt")
    from_dir = explainable_ser.from_pretrained(exported, device="cpu")
    assert from_dir.explain(clip) == from_ckpt.explain(clip)
    assert from_dir.explain(clip, zero_descriptor=True) == from_ckpt.explain(clip, zero_descriptor=True)
    assert from_dir.layer_weights() == from_ckpt.layer_weights()
    ckpt_state = torch.load(run_dir / "stage2" / "final.ckpt", weights_only=True)["state_dict"]
    own = from_dir.model.state_dict()
    for key, value in ckpt_state.items():  # every trained tensor came back, bit for bit
        assert torch.equal(own[key.removeprefix("model.")], value), key


def test_plain_peft_and_the_merged_llm_reproduce_the_model(exported):
    rep = json.loads((exported / "verification.json").read_text())
    assert rep["plain_peft_max_abs_logit_diff"] < 1e-5
    assert rep["logit_scale"] > 0.1  # the comparison is over real numbers, not zeros
    assert rep["merged_max_abs_logit_diff"] < 1e-3 and rep["merged_same_text"]


def test_the_adapter_is_not_a_no_op(exported):
    """Plain peft agrees with our loader; the base LLM alone does not (the adapter matters)."""
    from transformers import AutoModelForCausalLM

    cfg, model = load_exported(exported, device="cpu")
    ids = model.tokenizer(cfg.model.system_prompt, return_tensors="pt")["input_ids"]
    base = AutoModelForCausalLM.from_pretrained(str(exported / "base_models" / "llm"), trust_remote_code=False)
    with torch.no_grad():
        diff = (base(input_ids=ids).logits - model.llm(input_ids=ids).logits).abs().max()
    assert diff > 1e-2


def test_bf16_export_loads_close(trained_run, tmp_path):
    run_dir, _ = trained_run
    out = export(run_dir / "stage2" / "final.ckpt", tmp_path / "bf16", dtype="bf16")
    from safetensors.torch import load_file

    assert {v.dtype for v in load_file(str(out / "branches.safetensors")).values()} == {torch.bfloat16}
    rep = verify(out)
    assert rep["plain_peft_max_abs_logit_diff"] < 1e-5  # both read the same bf16-rounded adapter


def test_bad_targets_and_directories_are_named(trained_run, exported, tmp_path, capsys):
    run_dir, _ = trained_run
    with pytest.raises(ExportError, match="not an exported model directory"):
        load_exported(tmp_path)
    assert main(["--ckpt", str(run_dir / "stage2" / "final.ckpt"), "--out", str(exported)]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert main(["--ckpt", str(tmp_path / "none.ckpt"), "--out", str(tmp_path / "x")]) == 2
    broken = tmp_path / "broken"
    import shutil

    shutil.copytree(exported, broken)
    shutil.rmtree(broken / "base_models")
    with pytest.raises(ExportError, match="folder is missing"):
        load_exported(broken)
