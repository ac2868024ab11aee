"""Building the network (explainable_ser.model.build): trainable sets, frozen parts, encoder dtypes,
compiled branches, a second encoder."""

from __future__ import annotations

import pytest
import torch

from explainable_ser.model.build import build_model
from explainable_ser.model.prompts import get_task, render_target
from explainable_ser.training.stages import apply_trainable, trainable_names

from conftest import REC, tiny_config, waves

STAGE1 = {"content", "lora"}
STAGE2 = {"descriptor", "lora"}


def test_trainable_parameter_names_per_stage(tiny_tokenizer):
    m = build_model(tiny_config().model, tiny_tokenizer)
    s1, s2 = trainable_names(m, sorted(STAGE1)), trainable_names(m, sorted(STAGE2))
    content = {n for n, _ in m.named_parameters() if n.startswith("content.")}
    descriptor = {n for n, _ in m.named_parameters() if n.startswith("descriptor.")}
    lora = {n for n, _ in m.named_parameters() if "lora_" in n}
    saved = {n for n, _ in m.named_parameters() if "modules_to_save" in n}
    expected_content = {
        "content.block.layer_logits",
        "content.block.encoder.0.weight",
        "content.block.encoder.0.bias",
        "content.block.encoder.2.weight",
        "content.block.encoder.2.bias",
        "content.block.mu.weight",
        "content.block.mu.bias",
        "content.block.sigma.weight",
        "content.block.sigma.bias",
        "content.adapter.proj.0.weight",
        "content.adapter.proj.0.bias",
        "content.adapter.proj.2.weight",
        "content.adapter.proj.2.bias",
    }
    assert content == expected_content
    # 2 layers x 7 projections (q, k, v, o, gate, up, down) x (A, B) LoRA matrices
    projections = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    expected_lora = {
        f"llm.base_model.model.model.layers.{i}.{'self_attn' if p[0] in 'qkvo' else 'mlp'}.{p}.lora_{ab}.default.weight"
        for i in range(2)
        for p in projections
        for ab in "AB"
    }
    assert lora == expected_lora
    # the demo's random LLM also trains its embeddings and head (peft modules_to_save)
    assert saved == {
        "llm.base_model.model.model.embed_tokens.modules_to_save.default.weight",
        "llm.base_model.model.lm_head.modules_to_save.default.weight",
    }
    assert s1 == content | lora | saved
    assert s2 == descriptor | lora | saved
    assert not any(n.startswith("encoder.") for n in s1 | s2)


def test_frozen_weights_unchanged_after_a_step(tiny_tokenizer, seeded):
    m = build_model(tiny_config().model, tiny_tokenizer).train()
    names = apply_trainable(m, sorted(STAGE1))
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2)
    wave, lens = waves([32000, 20000])
    task = get_task("asr")
    out = m(wave, lens, task, [render_target(task, REC)] * 2, zero_descriptor=True)
    (out["ce"].mean() + out["kl_content"].mean()).backward()
    opt.step()
    for n, p in m.named_parameters():
        if n in names:
            continue
        assert torch.equal(p, before[n]), f"frozen parameter {n} changed"
    changed = [n for n in names if not torch.equal(dict(m.named_parameters())[n], before[n])]
    assert "content.block.layer_logits" in changed and any("lora_B" in n for n in changed)


def test_encoder_stays_in_eval_mode(tiny_tokenizer):
    m = build_model(tiny_config(hubert=True).model, tiny_tokenizer)
    m.train()
    assert not m.encoder.training and not any(mod.training for mod in m.encoder.modules())
    assert m.content.training
    m.eval()
    m.train()  # a validation pass then back to training
    assert not m.encoder.training


def test_encoder_dtype_is_applied_to_hf_weights(tiny_tokenizer, seeded):
    cfg = tiny_config("model.encoder.dtype=bfloat16", hubert=True)
    m = build_model(cfg.model, tiny_tokenizer)
    assert {p.dtype for p in m.encoder.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in m.content.parameters()} == {torch.float32}  # branches train in fp32
    wave, lens = waves([16000, 12000])
    layers, frames = m.encode(wave, lens)  # fp32 audio in, the branches' fp32 layers out
    assert layers.dtype == torch.float32 and not layers.is_inference()
    # "auto" follows the device: fp32 on CPU, bf16 on a GPU.
    auto = build_model(tiny_config(hubert=True).model, tiny_tokenizer)
    assert {p.dtype for p in auto.encoder.parameters()} == {torch.float32}
    # A whole training step without autocast: the branches get fp32 layers, not bf16 ones.
    m.train()
    apply_trainable(m, sorted(STAGE1))
    task = get_task("asr")
    out = m(wave, lens, task, [render_target(task, REC)] * 2, zero_descriptor=True)
    (out["ce"].mean() + out["kl_content"].mean()).backward()
    assert torch.isfinite(out["ce"]).all() and m.content.block.layer_logits.grad is not None
    assert m.generate(wave, lens, task, max_new_tokens=3)  # and decoding, under no_grad


def test_encoder_outputs_feed_backward_although_encoded_under_inference_mode(tiny_tokenizer, seeded):
    m = build_model(tiny_config(hubert=True).model, tiny_tokenizer).train()
    apply_trainable(m, sorted(STAGE1))
    wave, lens = waves([16000, 9000])
    task = get_task("asr")
    out = m(wave, lens, task, [render_target(task, REC)] * 2, zero_descriptor=True)
    (out["ce"].mean() + out["kl_content"].mean()).backward()
    assert m.content.block.layer_logits.grad is not None
    assert all(p.grad is None for p in m.encoder.parameters())


@pytest.mark.slow
def test_compiled_branches_keep_names_and_outputs(tiny_tokenizer):
    torch.manual_seed(0)
    eager = build_model(tiny_config().model, tiny_tokenizer).eval()
    torch.manual_seed(0)
    compiled = build_model(tiny_config("model.compile=true").model, tiny_tokenizer).eval()
    assert [n for n, _ in eager.named_parameters()] == [n for n, _ in compiled.named_parameters()]
    wave, lens = waves([16000, 11000])
    task = get_task("ser_sed")
    targets = [render_target(task, REC)] * 2
    from torch._dynamo.utils import counters

    counters.clear()
    a = eager(wave, lens, task, targets, sample_content=False, sample_descriptor=False)
    b = compiled(wave, lens, task, targets, sample_content=False, sample_descriptor=False)
    # Both branches ran through dynamo (one graph: the two modules share their code).
    assert counters["stats"]["unique_graphs"] >= 1 and counters["stats"]["calls_captured"] > 0
    torch.testing.assert_close(a["ce"], b["ce"], rtol=1e-4, atol=1e-4)


def test_a_second_encoder_feeds_the_descriptor_branch_with_equal_token_counts(tiny_tokenizer, seeded):
    """fbank (content) + a tiny HuBERT (descriptor): different layers and widths, same tokens."""
    from explainable_ser.config import EncoderConfig

    from conftest import HUBERT_FIELDS

    cfg = tiny_config()
    cfg.model.descriptor_encoder = EncoderConfig(kind="hf", name_or_path=None, hf_config=dict(HUBERT_FIELDS))
    m = build_model(cfg.model, tiny_tokenizer).eval()
    assert m.descriptor.block.layer_logits.numel() == m.descriptor_encoder.num_layers == 3
    assert m.content.block.layer_logits.numel() == m.encoder.num_layers
    wave, lens = waves([16000, 24321, 8000])
    sp = m.speech_tokens(wave, lens, sample_content=False, sample_descriptor=False, zero_descriptor=False)
    assert sp.content.shape == sp.descriptor.shape
    layers, frame_lens = m.encode(wave, lens)
    assert sp.n_tokens.tolist() == (frame_lens // cfg.model.branch.downsample).tolist()
    # both streams feed the LLM; the second encoder never trains
    out = m(wave, lens, get_task("ser_sed"), [render_target(get_task("ser_sed"), REC)] * 3)
    out["ce"].sum().backward()
    assert all(p.grad is None for p in m.descriptor_encoder.parameters())
    assert m.descriptor.block.layer_logits.grad is not None
    m.train()
    assert not m.descriptor_encoder.training


def test_descriptor_frames_are_resampled_to_the_content_frames(tiny_tokenizer):
    """A stand-in second encoder at half the frame rate: each utterance's real frames are
    stretched linearly onto its content frame count, padding stays zero."""
    from torch import nn

    class HalfRate(nn.Module):
        num_layers, hidden_size = 1, 1

        def forward(self, wave, wave_lens):
            n = wave_lens // 640  # 25 frames/s
            f = int(n.max())
            ramp = torch.arange(f, dtype=torch.float32)[None, :, None].expand(len(n), f, 1)
            return ramp[None].clone(), n  # [1, B, F', 1]: frame index as the feature

    m = build_model(tiny_config().model, tiny_tokenizer).eval()
    m.descriptor_encoder = HalfRate()
    wave, lens = waves([32000, 16000])
    layers, frame_lens = m.encode(wave, lens)
    out = m.descriptor_layers(wave, lens, layers, frame_lens)  # [1, B, F, 1]
    assert out.shape[:3] == (1, 2, layers.shape[2])
    for i in range(2):
        f_c, f_d = int(frame_lens[i]), int(lens[i]) // 640
        want = torch.nn.functional.interpolate(
            torch.arange(f_d, dtype=torch.float32)[None, None], size=f_c, mode="linear", align_corners=False
        )[0, 0]
        assert torch.allclose(out[0, i, :f_c, 0], want)
        assert torch.all(out[0, i, f_c:] == 0)
    assert out[0, 0, : int(frame_lens[0]), 0].max() > 40  # 50 real frames at 25 Hz, stretched
