"""The model stack on tiny random configs: splicing, masking, counts, losses, freezing."""

from __future__ import annotations

import pytest
import torch

from explainable_ser.model.bottleneck import gaussian_kl
from explainable_ser.model.build import build_model
from explainable_ser.model.prompts import get_task, render_target
from explainable_ser.model.ser import IGNORE
from explainable_ser.training.stages import apply_trainable, group_of

from conftest import REC, TINY_CONCEPTS, tiny_config, waves


@pytest.fixture(params=["fbank", "hubert"])
def model(request, tiny_tokenizer, seeded):
    cfg = tiny_config(hubert=request.param == "hubert")
    return build_model(cfg.model, tiny_tokenizer).eval()


def test_speech_token_counts_follow_the_encoder_lengths(tiny_tokenizer):
    cfg = tiny_config(hubert=True)
    m = build_model(cfg.model, tiny_tokenizer)
    samples = torch.tensor([16000, 24321, 8000])
    wave, lens = waves(samples.tolist())
    sp = m.speech_tokens(wave, lens, sample_content=False, sample_descriptor=False, zero_descriptor=False)
    frames = torch.div(samples - 400, 320, rounding_mode="floor") + 1  # HuBERT's conv stack
    assert sp.n_tokens.tolist() == (frames // 5).tolist()
    assert sp.content.shape[1] == int(frames.max()) // 5


def test_batched_loss_equals_one_by_one(model):
    task = get_task("ser_sed")
    wave, lens = waves([48000, 30000, 17000])
    target = render_target(task, REC)
    batched = model(wave, lens, task, [target] * 3, sample_content=False, sample_descriptor=False)
    for i in range(3):
        single = model(
            wave[i : i + 1, : lens[i]], lens[i : i + 1], task, [target], sample_content=False, sample_descriptor=False
        )
        torch.testing.assert_close(batched["ce"][i], single["ce"][0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(batched["kl_content"][i], single["kl_content"][0], rtol=1e-4, atol=1e-5)


def test_labels_are_masked_outside_the_target(model, tiny_tokenizer):
    task = get_task("asr")
    wave, lens = waves([32000, 16000])
    sp = model.speech_tokens(wave, lens, sample_content=False, sample_descriptor=False, zero_descriptor=False)
    target = model.prompts.target_ids(render_target(task, REC))
    embeds, mask, labels = model.build_inputs(sp, task, [target, target])
    head, mid, tail = model.prompts.pieces(task)
    for i in range(2):
        n = int(sp.n_tokens[i])
        prompt_len = len(head) + len(mid) + len(tail) + 2 * n
        row = labels[i][mask[i].bool()]
        assert (row[:prompt_len] == IGNORE).all()
        assert row[prompt_len:].tolist() == target  # target and its end-of-turn token only
        assert target[-1] == tiny_tokenizer.convert_tokens_to_ids("<|eot_id|>")
    assert (labels[1][~mask[1].bool()] == IGNORE).all()  # padding never labelled


def test_speech_tokens_sit_at_the_slots(model):
    task = get_task("ser")
    wave, lens = waves([32000])
    sp = model.speech_tokens(wave, lens, sample_content=False, sample_descriptor=False, zero_descriptor=False)
    embeds, _, _ = model.build_inputs(sp, task, None)
    head, mid, _ = model.prompts.pieces(task)
    n = int(sp.n_tokens[0])
    torch.testing.assert_close(embeds[0, len(head) : len(head) + n], sp.content[0, :n])
    d0 = len(head) + n + len(mid)
    torch.testing.assert_close(embeds[0, d0 : d0 + n], sp.descriptor[0, :n])


def test_zeroed_descriptor_removes_the_branch_but_keeps_the_positions(model):
    """Stage 1 and the counterfactual: nothing of the descriptor branch reaches the LLM, while
    the prompt keeps its layout (the content tokens and the target stay where they were)."""
    wave, lens = waves([32000, 20000])
    task = get_task("ser_sed")
    targets = [render_target(task, REC)] * 2
    kw = dict(sample_content=False, sample_descriptor=False)
    with torch.no_grad():
        zeroed = model(wave, lens, task, targets, zero_descriptor=True, **kw)
        live = model(wave, lens, task, targets, zero_descriptor=False, **kw)
        for p in model.descriptor.parameters():  # another descriptor branch altogether
            p.add_(torch.randn_like(p))
        zeroed_other = model(wave, lens, task, targets, zero_descriptor=True, **kw)
        sp = model.speech_tokens(wave, lens, zero_descriptor=True, **kw)
        e_zero, _, lab_zero = model.build_inputs(sp, task, [model.prompts.target_ids(t) for t in targets])
        sp_live = model.speech_tokens(wave, lens, zero_descriptor=False, **kw)
        e_live, _, lab_live = model.build_inputs(sp_live, task, [model.prompts.target_ids(t) for t in targets])
    torch.testing.assert_close(zeroed_other["ce"], zeroed["ce"], rtol=0, atol=0)
    assert not torch.allclose(live["ce"], zeroed["ce"]), "un-zeroed, the descriptor tokens count"
    assert e_zero.shape == e_live.shape and torch.equal(lab_zero, lab_live)


def test_kl_matches_closed_form():
    torch.manual_seed(1)
    mu, sigma = torch.randn(2, 7, 4), torch.rand(2, 7, 4) + 0.1
    lens = torch.tensor([7, 3])
    ours = gaussian_kl(mu, sigma, lens)
    ref = torch.distributions.kl_divergence(
        torch.distributions.Normal(mu, sigma), torch.distributions.Normal(0.0, 1.0)
    ).sum(-1)
    expected = torch.stack([ref[0].sum(), ref[1, :3].sum()])  # valid frames only
    torch.testing.assert_close(ours, expected)


@pytest.mark.parametrize("reduction", ["frame_mean", "sum"])
def test_objective_weighs_the_kl_as_configured(model, reduction):
    """L = mean_b CE_b + beta * sum over trained branches of mean_b KL_b, KL_b computed here by
    hand from the branch's own mu and sigma, per frame mean or summed."""
    task = get_task("asr")
    wave, lens = waves([48000, 17000])
    targets = [REC["transcript"]] * 2
    beta = 0.25
    res = model.loss(wave, lens, task, targets, beta=beta, trained=["content"], sample=False, kl_reduction=reduction)
    ce = model(wave, lens, task, targets, sample_content=False, sample_descriptor=False)["ce"]
    layers, frames = model.encode(wave, lens)
    block = model.content.block
    x = torch.einsum("l,lbfd->bfd", block.layer_weights(), layers)
    h = block.encoder(x)
    mu, sigma = block.mu(h), torch.nn.functional.softplus(block.sigma(h)) + 1e-5
    per_frame = (0.5 * (mu**2 + sigma**2 - 1 - 2 * sigma.log())).sum(-1)  # [B, F]
    kl = [per_frame[i, : frames[i]].sum() for i in range(2)]
    if reduction == "frame_mean":
        kl = [k / frames[i] for i, k in enumerate(kl)]
    expected = ce.mean() + beta * torch.stack(kl).mean()
    torch.testing.assert_close(res["loss"], expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(res["kl"]["content"], torch.stack(kl).mean(), rtol=1e-5, atol=1e-5)
    assert frames[0] > 2 * frames[1], "the two reductions differ only if clip lengths differ"


def test_objective_names_a_bad_kl_reduction(model):
    wave, lens = waves([16000])
    with pytest.raises(ValueError, match="kl_reduction must be"):
        model.loss(wave, lens, get_task("asr"), ["a"], beta=0.1, trained=["content"], sample=False, kl_reduction="mean")


def test_sampling_only_in_training_mode(model):
    wave, lens = waves([32000])
    kw = dict(sample_descriptor=False, zero_descriptor=False)
    a = model.speech_tokens(wave, lens, sample_content=True, **kw).content
    b = model.speech_tokens(wave, lens, sample_content=True, **kw).content
    c = model.speech_tokens(wave, lens, sample_content=False, **kw).content
    d = model.speech_tokens(wave, lens, sample_content=False, **kw).content
    assert not torch.equal(a, b)  # reparameterised samples differ
    torch.testing.assert_close(c, d)  # z = mu at inference


def test_generate_batched_equals_single(model):
    wave, lens = waves([40000, 18000, 26000])
    task = get_task("asr")
    batched = model.generate(wave, lens, task, max_new_tokens=6)
    singles = [model.generate(wave[i : i + 1, : lens[i]], lens[i : i + 1], task, max_new_tokens=6)[0] for i in range(3)]
    assert batched == singles


@pytest.mark.parametrize("task_name", ["asr_ser_rat", "rat_ser"])
def test_label_scores_whatever_the_field_order(model, task_name):
    """The probability of each label after the answer's prefix (a transcript, a rationale)
    is the softmax of the candidates' negated summed CE: the prefix's share cancels out."""
    task = get_task(task_name)
    wave, lens = waves([9000, 12000])
    labels = ["neutral", "happy", "sad", "angry"]
    prefixes = ["Transcript: the dog found a red ball", "Rationale: a low slow voice"]
    got = model.label_scores(wave, lens, task, prefixes, labels)
    assert got.shape == (2, 4) and torch.allclose(got.sum(1), torch.ones(2))
    for i in range(2):
        ce = torch.stack(
            [
                model(
                    wave[i : i + 1, : lens[i]],
                    lens[i : i + 1],
                    task,
                    [f"{prefixes[i]}\nEmotion: {lab}"],
                    sample_content=False,
                    sample_descriptor=False,
                )["ce"][0]
                for lab in labels
            ]
        )
        assert torch.allclose(got[i], torch.softmax(-ce, 0), atol=1e-5)


# -- the splice without host syncs -------------------------------------------------------------
def per_utterance_reference(model, speech, task, targets, left_pad=False):
    """The splice and loss as first written (a loop over utterances, boolean-mask selection):
    the vectorised :meth:`ExplainableSER.splice` must give the same numbers."""
    head, mid, tail = model.prompts.pieces(task)
    ref = speech.content
    e_head, e_mid, e_tail = (model.embed_ids(p, ref) for p in (head, mid, tail))
    seqs, labels = [], []
    for i in range(ref.shape[0]):
        n = int(speech.n_tokens[i])
        parts = [e_head, speech.content[i, :n], e_mid, speech.descriptor[i, :n], e_tail]
        lab = [IGNORE] * (len(head) + len(mid) + len(tail) + 2 * n)
        if targets is not None:
            parts.append(model.embed_ids(targets[i], ref))
            lab = lab + list(targets[i])
        seqs.append(torch.cat(parts, dim=0))
        labels.append(torch.tensor(lab, dtype=torch.long))
    max_len = max(s.shape[0] for s in seqs)
    embeds = ref.new_zeros(len(seqs), max_len, ref.shape[2])
    mask = torch.zeros(len(seqs), max_len, dtype=torch.long)
    lab_t = torch.full((len(seqs), max_len), IGNORE, dtype=torch.long)
    for i, (s, lab) in enumerate(zip(seqs, labels)):
        sl = slice(max_len - s.shape[0], max_len) if left_pad else slice(0, s.shape[0])
        embeds[i, sl], mask[i, sl], lab_t[i, sl] = s, 1, lab
    return embeds, mask, lab_t


def reference_ce(model, wave, lens, task, texts):
    sp = model.speech_tokens(wave, lens, sample_content=False, sample_descriptor=False, zero_descriptor=False)
    embeds, mask, labels = per_utterance_reference(model, sp, task, [model.prompts.target_ids(t) for t in texts])
    hidden = model.decoder_hidden(embeds, mask)
    nxt = labels[:, 1:]
    sel = nxt != IGNORE
    tok = torch.nn.functional.cross_entropy(model.lm_head(hidden[:, :-1][sel]).float(), nxt[sel], reduction="none")
    return torch.zeros(len(texts)).index_add_(0, sel.nonzero()[:, 0], tok)


def test_vectorised_splice_equals_the_per_utterance_one(model):
    task = get_task("ser_sed")
    wave, lens = waves([48000, 30000, 17000])
    sp = model.speech_tokens(wave, lens, sample_content=False, sample_descriptor=False, zero_descriptor=False)
    targets = [model.prompts.target_ids(render_target(task, REC))[: 5 + 4 * i] for i in range(3)]
    for tg, left in ((targets, False), (None, True), (None, False)):
        got = model.build_inputs(sp, task, tg, left_pad=left)
        want = per_utterance_reference(model, sp, task, tg, left_pad=left)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
        assert (got[2] is None) if tg is None else torch.equal(got[2], want[2])


def test_vectorised_loss_and_gradients_equal_the_per_utterance_ones(tiny_tokenizer, seeded):
    cfg = tiny_config(hubert=True)
    model = build_model(cfg.model, tiny_tokenizer)
    apply_trainable(model, ["descriptor", "lora"])
    model.eval()  # no dropout, so both passes see the same function
    task = get_task("ser_sed")
    wave, lens = waves([48000, 30000, 17000, 20500])
    full = render_target(task, REC)
    texts = [full, full[:20], full[:35], "sad"]
    params = [p for p in model.parameters() if p.requires_grad]
    new = model(wave, lens, task, texts, sample_content=False, sample_descriptor=False)["ce"]
    g_new = torch.autograd.grad(new.sum(), params, allow_unused=True)
    old = reference_ce(model, wave, lens, task, texts)
    g_old = torch.autograd.grad(old.sum(), params, allow_unused=True)
    torch.testing.assert_close(new, old, rtol=1e-6, atol=1e-6)
    assert sum(g is not None for g in g_new) > 10
    for a, b in zip(g_new, g_old):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("batch", [2, 8])
def test_host_syncs_per_step_do_not_grow_with_the_batch(batch):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))
    from host_syncs import HostSyncCounter, tiny_step

    _, step = tiny_step(batch)
    step()
    with HostSyncCounter() as counter:
        step()
    ours = {k: v for k, v in counter.counts.items()}
    # one read of the token counts per batch (ours); the rest is transformers' own mask checks
    assert ours.get("Tensor.tolist", 0) == 1
    assert "aten.nonzero.default" not in ours and "aten.index.Tensor (boolean mask)" not in ours
    assert counter.total <= 5, ours


def test_summary_token_is_the_mean_descriptor_token_after_the_others(tiny_tokenizer, seeded):
    cfg = tiny_config("model.branch.summary_token=true")
    model = build_model(cfg.model, tiny_tokenizer).eval()
    plain = build_model(tiny_config().model, tiny_tokenizer).eval()
    plain.load_state_dict(model.state_dict())  # the same weights: the switch adds none
    task = get_task("ser_sed")
    wave, lens = waves([32000, 20000])
    kw = dict(sample_content=False, sample_descriptor=False)
    with torch.no_grad():
        sp = model.speech_tokens(wave, lens, zero_descriptor=False, **kw)
        embeds, mask, _ = model.build_inputs(sp, task, None)
        sp_plain = plain.speech_tokens(wave, lens, zero_descriptor=False, **kw)
        embeds_plain, mask_plain, _ = plain.build_inputs(sp_plain, task, None)
        zeroed = model.speech_tokens(wave, lens, zero_descriptor=True, **kw)
        cf = model.generate_from(sp, task, max_new_tokens=2, zero_descriptor=True)
        want_cf = model.generate_from(zeroed, task, max_new_tokens=2)
    head, mid, tail = model.prompts.pieces(task)
    for i in range(2):
        n = int(sp.n_tokens[i])
        torch.testing.assert_close(sp.summary[i, 0], sp.descriptor[i, :n].mean(0))  # padding left out
        at = len(head) + n + len(mid) + n  # right after the descriptor tokens
        torch.testing.assert_close(embeds[i, at], sp.summary[i, 0])
        assert int(mask[i].sum()) == int(mask_plain[i].sum()) + 1
        torch.testing.assert_close(embeds[i, at + 1 : at + 1 + len(tail)], embeds_plain[i, at : at + len(tail)])
    assert sp_plain.summary is None
    assert torch.count_nonzero(zeroed.summary) == 0  # zeroed with the stream (stage 1, counterfactual)
    assert cf == want_cf


def test_value_weight_counts_the_value_tokens_that_many_times(tiny_tokenizer, seeded):
    """``ce_weighted`` = the plain per-token CEs with the value tokens' own CE times the weight,
    token for token against an independent per-utterance computation; the plain ``ce`` is
    unchanged, and a target without values is not touched."""
    cfg = tiny_config(hubert=True)
    model = build_model(cfg.model, tiny_tokenizer).eval()
    task = get_task("ser_sed")
    wave, lens = waves([48000, 30000, 17000])
    full = render_target(task, REC)
    texts = [full, "the dog found a red ball", full[: full.index("pitch") + 5]]  # all, none, two values
    kw = dict(sample_content=False, sample_descriptor=False)
    plain = model(wave, lens, task, texts, **kw)
    out = model(wave, lens, task, texts, value_weight=4.0, **kw)
    torch.testing.assert_close(out["ce"], plain["ce"])
    sp = model.speech_tokens(wave, lens, zero_descriptor=False, **kw)
    ids = [model.prompts.target_ids(t) for t in texts]
    embeds, mask, labels = per_utterance_reference(model, sp, task, ids)
    hidden = model.decoder_hidden(embeds, mask)
    for i, t in enumerate(texts):
        sel = labels[i, 1:] != IGNORE
        tok = torch.nn.functional.cross_entropy(
            model.lm_head(hidden[i, :-1][sel]).float(), labels[i, 1:][sel], reduction="none"
        )
        w = torch.tensor([4.0 if v else 1.0 for v in model.prompts.value_mask(t)])
        torch.testing.assert_close(out["ce_weighted"][i], (tok * w).sum(), rtol=1e-5, atol=1e-5)
    assert sum(model.prompts.value_mask(texts[2])) == 2 and not any(model.prompts.value_mask(texts[1]))
    torch.testing.assert_close(out["ce_weighted"][1], out["ce"][1])
    assert (out["ce_weighted"][[0, 2]] > out["ce"][[0, 2]]).all()
    loss = model.loss(wave, lens, task, texts, beta=0.0, trained=["descriptor"], sample=False, value_weight=4.0)
    torch.testing.assert_close(loss["loss"], out["ce_weighted"].mean())
    torch.testing.assert_close(loss["ce"], plain["ce"].mean())


def test_concept_tokens_mix_their_words_by_a_head_on_the_mean_descriptor_token(tiny_tokenizer, seeded):
    cfg = tiny_config(TINY_CONCEPTS)
    model = build_model(cfg.model, tiny_tokenizer).eval()
    cpt = model.descriptor.concepts
    assert cpt.classes == {"evidence.volume": ["high", "normal", "low"], "evidence.speed": ["fast", "slow"]}
    assert {n for n, _ in cpt.named_parameters()} and all(
        group_of(f"descriptor.concepts.{n}") == "concepts" for n, _ in cpt.named_parameters()
    )  # a group of their own: a stage trains them only when it names them
    emb = model.llm.get_input_embeddings().weight
    task = get_task("rat_ser")
    wave, lens = waves([32000, 20000])
    kw = dict(sample_content=False, sample_descriptor=False)
    with torch.no_grad():
        sp = model.speech_tokens(wave, lens, zero_descriptor=False, **kw)
        embeds, mask, _ = model.build_inputs(sp, task, None)
        zeroed = model.speech_tokens(wave, lens, zero_descriptor=True, **kw)
    assert sp.summary.shape == (2, 2, emb.shape[1])
    head, mid, tail = model.prompts.pieces(task)
    for i in range(2):
        n = int(sp.n_tokens[i])
        mean = sp.descriptor[i, :n].mean(0)
        p = cpt.heads[0](mean).softmax(-1)  # volume: high, normal, low
        words = torch.stack(
            [
                emb[tiny_tokenizer(" " + w, add_special_tokens=False)["input_ids"]].mean(0)
                for w in ("high", "red", "low")
            ]
        )
        torch.testing.assert_close(sp.summary[i, 0], p @ words)
        at = len(head) + n + len(mid) + n  # right after the descriptor tokens, in field order
        torch.testing.assert_close(embeds[i, at : at + 2], sp.summary[i])
        assert int(mask[i].sum()) == len(head) + len(mid) + len(tail) + 2 * n + 2
    assert torch.count_nonzero(zeroed.summary) == 0
    # the LLM's loss reaches the heads through the mixed words
    model.train()
    apply_trainable(model, ["concepts"])
    out = model(wave, lens, task, ["Rationale: high volume, the speaker is angry.\nEmotion: angry"] * 2)
    out["ce"].sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in cpt.parameters())
    assert all(p.grad is None for n, p in model.descriptor.named_parameters() if not n.startswith("concepts."))


def test_a_forced_prefix_opens_the_answer_and_greedy_decoding_goes_on_from_it(model):
    task = get_task("rat_ser")
    wave, lens = waves([32000, 20000])
    prefixes = ["Rationale: high volume, the speaker is", "Rationale:"]  # two lengths: left padding
    with torch.no_grad():
        sp = model.speech_tokens(wave, lens, sample_content=False, sample_descriptor=False, zero_descriptor=False)
        got = model.generate_from(sp, task, max_new_tokens=1, prefixes=prefixes)
        for i, prefix in enumerate(prefixes):
            ids = model.prompts.text_ids(prefix)
            one = model.speech_tokens(
                wave[i : i + 1, : lens[i]],
                lens[i : i + 1],
                sample_content=False,
                sample_descriptor=False,
                zero_descriptor=False,
            )
            embeds, mask, _ = model.build_inputs(one, task, [ids])  # the prompt, then the prefix as a target
            hidden = model.decoder_hidden(embeds, mask)
            nxt = int(model.lm_head(hidden[0, -1:]).argmax(-1))  # the next token after the prefix
            want = model.tokenizer.decode(ids + [nxt], skip_special_tokens=True)
            assert got[i] == want


def test_the_concept_loss_is_the_heads_cross_entropy_on_the_known_labels(tiny_tokenizer, seeded):
    model = build_model(tiny_config(TINY_CONCEPTS).model, tiny_tokenizer).train()
    apply_trainable(model, ["descriptor", "concepts", "lora"])
    task = get_task("rat_ser")
    wave, lens = waves([32000, 20000])
    texts = ["Rationale: high volume, the speaker is angry.\nEmotion: angry"] * 2
    labels = {"evidence.volume": torch.tensor([0, IGNORE]), "evidence.speed": torch.tensor([IGNORE, IGNORE])}
    kw = dict(beta=0.0, trained=["descriptor"], sample=False)
    plain = model.loss(wave, lens, task, texts, **kw)
    got = model.loss(wave, lens, task, texts, concept_labels=labels, concept_weight=3.0, **kw)
    sp = model.speech_tokens(wave, lens, sample_content=False, sample_descriptor=False, zero_descriptor=False)
    logits = model.descriptor.concepts(sp.descriptor, sp.n_tokens)["evidence.volume"]
    want = -logits[0].log_softmax(-1)[0]  # the one known label; speed has none and is left out
    torch.testing.assert_close(got["concept_ce"], want)
    torch.testing.assert_close(got["loss"], plain["loss"] + 3.0 * want)
    assert "concept_ce" not in plain
    # the speed head (no known label) gets only the LLM's gradient, the volume head more
    heads = model.descriptor.concepts.heads
    plain["loss"].backward()
    before = [p.grad.clone() for h in heads for p in h.parameters()]
    model.zero_grad()
    got["loss"].backward()
    after = [p.grad for h in heads for p in h.parameters()]
    assert not torch.allclose(after[0], before[0]) and not torch.allclose(after[1], before[1])
    torch.testing.assert_close(after[2:], before[2:])
