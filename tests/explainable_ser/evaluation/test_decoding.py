"""Decoding under bf16 autocast with the frozen weights cast once (explainable_ser.evaluation.decoding)."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from explainable_ser.evaluation.decoding import (
    decode_batch,
    decode_precision,
    frozen_weights_cast,
)
from explainable_ser.model.build import build_model
from explainable_ser.model.prompts import get_task

from conftest import TINY_CONCEPTS, tiny_config, waves


class CountCopies(TorchDispatchMode):
    """Counts dtype conversions (``aten._to_copy``): autocast makes one per fp32 weight per call."""

    def __init__(self):
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._to_copy.default:
            self.n += 1
        return func(*args, **(kwargs or {}))


@pytest.fixture
def tied(tiny_tokenizer, seeded):
    """The tiny stack under bf16-mixed with the LM head tied to the input embedding and frozen
    (as in the packaged SmolLM2), trainable weights perturbed (zero LoRA would hide a change)."""
    cfg = tiny_config(
        "model.llm.hf_config.tie_word_embeddings=true",
        "model.llm.lora.modules_to_save=[]",
        "trainer.precision=bf16-mixed",
        "eval.max_new_tokens=8",
    )
    model = build_model(cfg.model, tiny_tokenizer)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    llm = model.llm
    assert llm.get_output_embeddings().weight is llm.get_input_embeddings().weight
    assert not llm.get_output_embeddings().weight.requires_grad
    wave, lens = waves([16000, 12000, 8000])
    return cfg, model.eval(), wave, lens


def test_cast_once_gives_the_same_logits_with_fewer_conversions(tied):
    cfg, model, wave, lens = tied
    llm = model.llm
    before = {n: (p, p.dtype) for n, p in model.named_parameters()}

    def logits():
        speech = model.speech_tokens(wave, lens, sample_content=False, sample_descriptor=False, zero_descriptor=False)
        embeds, mask, _ = model.build_inputs(speech, get_task("ser_sed"), None, left_pad=True)
        with CountCopies() as count:
            out = llm(inputs_embeds=embeds, attention_mask=mask).logits
        return out, count.n

    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        want, copies_autocast = logits()
    with torch.no_grad(), decode_precision(cfg, torch.device("cpu"), model):
        frozen = [m.weight for m in llm.modules() if isinstance(m, torch.nn.Linear) and not m.weight.requires_grad]
        assert frozen and all(w.dtype == torch.bfloat16 for w in frozen)
        assert llm.get_output_embeddings().weight.dtype == torch.bfloat16  # the head's own copy
        assert llm.get_input_embeddings().weight.dtype == torch.float32  # the lookup is no autocast op
        got, copies_cast = logits()
    assert torch.equal(got, want)
    # one conversion fewer per frozen layer (q/k/v/o, the MLP, the head): autocast's per-call casts
    assert copies_autocast - copies_cast == len(frozen), (copies_autocast, copies_cast, len(frozen))
    # every parameter is back, the same object in its own dtype, and the head is tied again
    assert {n: (p, p.dtype) for n, p in model.named_parameters()} == before
    assert llm.get_output_embeddings().weight is llm.get_input_embeddings().weight


def test_decoded_rows_are_identical_with_and_without_the_cast(tied):
    cfg, model, wave, lens = tied
    records = [{"id": f"u{i}"} for i in range(len(lens))]
    tasks = ["asr", "ser_sed"]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        want = decode_batch(model, wave, lens, records, tasks, cfg)
    with torch.no_grad(), decode_precision(cfg, torch.device("cpu"), model):
        got = decode_batch(model, wave, lens, records, tasks, cfg)
    assert got == want and len(got) == 6


def test_trainable_and_already_cast_weights_are_left_alone():
    lin = torch.nn.Linear(4, 3)
    frozen = torch.nn.Linear(4, 3).requires_grad_(False)
    half = torch.nn.Linear(4, 3).to(torch.bfloat16).requires_grad_(False)
    net = torch.nn.Sequential(lin, frozen, half)
    w_lin, w_frozen, w_half = lin.weight, frozen.weight, half.weight
    with frozen_weights_cast(net, torch.bfloat16):
        assert lin.weight is w_lin and half.weight is w_half
        assert frozen.weight is not w_frozen and frozen.weight.dtype == torch.bfloat16
        assert torch.equal(frozen.weight, w_frozen.to(torch.bfloat16))
    assert frozen.weight is w_frozen and frozen.weight.dtype == torch.float32


def test_full_precision_runs_decode_without_autocast_or_casts(trained_run):
    from explainable_ser.training.assembly import load_trained

    run_dir, _ = trained_run
    cfg, _, module, _ = load_trained(run_dir / "stage2" / "final.ckpt", [], with_data=False)
    assert cfg.trainer.precision == "32-true"
    with decode_precision(cfg, torch.device("cpu"), module.model):
        assert not torch.is_autocast_enabled("cpu")
        assert all(p.dtype == torch.float32 for p in module.model.parameters())


def test_concept_cues_are_the_sure_ones_deviations_first_at_most_max():
    from explainable_ser.evaluation.decoding import concept_cues

    classes = {
        "evidence.pitch": ["high", "normal", "low"],
        "evidence.volume": ["high", "normal", "low"],
        "evidence.speed": ["fast", "normal", "slow"],
        "evidence.tremor": ["yes", "no"],  # no measured cue of that name: never stated
        "gender": ["female", "male"],  # not a measured cue
    }
    probs = {
        "evidence.pitch": torch.tensor([[0.05, 0.93, 0.02], [0.5, 0.3, 0.2]]),
        "evidence.volume": torch.tensor([[0.91, 0.05, 0.04], [0.1, 0.6, 0.3]]),
        "evidence.speed": torch.tensor([[0.02, 0.03, 0.95], [0.3, 0.3, 0.4]]),
        "evidence.tremor": torch.tensor([[0.99, 0.01], [0.99, 0.01]]),
        "gender": torch.tensor([[0.99, 0.01], [0.99, 0.01]]),
    }
    got = concept_cues(probs, classes, min_confidence=0.9, max_cues=3)
    # deviations (slow, high volume) surest first, then the usual pitch
    assert [(c["cue"], c["direction"]) for c in got[0]] == [("speed", "slow"), ("volume", "high"), ("pitch", "normal")]
    assert [c["confidence"] for c in got[0]] == pytest.approx([0.95, 0.91, 0.93])
    assert [(c["cue"], c["direction"]) for c in got[1]] == [("volume", "normal")]  # none sure: the surest alone
    two = concept_cues(probs, classes, min_confidence=0.9, max_cues=2)
    assert [c["cue"] for c in two[0]] == ["speed", "volume"]
    with pytest.raises(ValueError, match="no concept head is on a measured cue.*evidence.tremor, gender"):
        concept_cues({f: probs[f] for f in ("evidence.tremor", "gender")}, classes, 0.9, 3)


def test_a_concept_led_rationale_opens_with_the_heads_cues_and_the_model_writes_on(tiny_tokenizer, seeded):
    from data_modules.evidence import rationale_opening, rng_for
    from explainable_ser.evaluation.grounding import parse_cues

    cfg = tiny_config(TINY_CONCEPTS, "eval.max_new_tokens=4", "eval.concept_rationale=0.0")
    model = build_model(cfg.model, tiny_tokenizer).eval()
    wave, lens = waves([32000, 20000])
    records = [{"id": "a"}, {"id": "b"}]
    with torch.no_grad():
        rows = decode_batch(model, wave, lens, records, ["asr", "rat_ser"], cfg)
        sp = model.speech_tokens(wave, lens, sample_content=False, sample_descriptor=False, zero_descriptor=False)
        probs = model.concept_probs(sp)
    asr, rat = rows[:2], rows[2:]
    assert all("concept_cues" not in r for r in asr)  # only a task whose answer begins with the rationale
    for i, (row, rec) in enumerate(zip(rat, records)):
        cues = row["concept_cues"]
        assert len(cues) == 2  # both heads, every cue at least as sure as 0.0
        for c in cues:
            p = probs[f"evidence.{c['cue']}"][i]
            assert c["confidence"] == pytest.approx(float(p.max()), abs=1e-4)
        opening = "Rationale: " + rationale_opening(cues, rng_for(rec["id"]))
        assert [(c["cue"], c["direction"]) for c in parse_cues(opening)] == [(c["cue"], c["direction"]) for c in cues]
        # read back through the tokenizer (the tiny one lowercases and drops unknown words)
        seen = model.tokenizer.decode(model.prompts.text_ids(opening), skip_special_tokens=True)
        assert row["raw"].startswith(seen) and len(seen) > len("rationale")
