"""The model: frozen speech encoder -> two disentanglement branches -> adapters -> LLM (LoRA).

Reads top to bottom, one utterance batch at a time:

    wave [B, T] --encoder--> layers [L, B, F, D], frame_lens [B]
      (optional second encoder for the descriptor branch: its layers [L', B, F', D'] resampled
       in time to the content encoder's F frames, so both streams have N tokens)
      content branch:    weighted sum -> VIB -> z_con [B, F, Z] -> adapter -> S_con [B, N, H]
      descriptor branch: weighted sum -> VIB -> z_des [B, F, Z] -> adapter -> S_des [B, N, H]
      (optional, not in the paper: utterance mean/std of the VIB's hidden frames appended to
       each frame before mu/sigma, model.branch.utterance_context)
      (optional, not in the paper: S_sum [B, H], the mean of S_des over its N tokens, placed
       after S_des, model.branch.summary_token)
      (optional, not in the paper: S_cpt [B, K, H], one token per concept, its value's word
       embeddings mixed by a linear head on that mean, model.branch.concepts)
    prompt: <head> S_con <mid> S_des [S_sum] [S_cpt] <tail: instruction + assistant header> <target> <eot>
      --LLM--> per-utterance cross-entropy on the target tokens only
    objective (:meth:`ExplainableSER.loss`): CE summed over target tokens + beta * KL of the
      trained branches (KL per utterance: mean over frames, or summed: training.kl_reduction)

No Lightning and no data-module imports: this file is plain PyTorch + transformers + peft.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from explainable_ser.model.bottleneck import Adapter, DisentanglementBlock
from explainable_ser.model.prompts import FIELD_PREFIX, PromptBuilder, Task

IGNORE = -100  # label value outside the target


class Branch(nn.Module):
    """One stream: disentanglement block + downsampling adapter."""

    def __init__(self, num_layers: int, in_dim: int, llm_dim: int, cfg, utterance_context: bool = False):
        super().__init__()
        self.block = DisentanglementBlock(
            num_layers,
            in_dim,
            cfg.hidden_dim,
            cfg.latent_dim,
            variational=cfg.variational,
            utterance_context=utterance_context,
        )
        self.adapter = Adapter(self.block.out_dim, cfg.adapter_dim, llm_dim, k=cfg.downsample)

    def forward(self, layers, frame_lens, sample: bool):
        z, kl = self.block(layers, frame_lens, sample)  # [B, F, Z], [B]
        tokens, n_tokens = self.adapter(z, frame_lens)  # [B, N, H], [B]
        return tokens, n_tokens, kl


def token_mean(tokens: torch.Tensor, n_tok: torch.Tensor) -> torch.Tensor:
    """[B, N, H] tokens, [B] real tokens each -> [B, H] mean over each utterance's real tokens."""
    valid = torch.arange(tokens.shape[1], device=tokens.device)[None] < n_tok.to(tokens.device)[:, None]
    valid = valid[..., None].to(tokens.dtype)  # [B, N, 1]
    return (tokens * valid).sum(1) / valid.sum(1).clamp(min=1)


def heads_cross_entropy(logits: dict[str, torch.Tensor], labels: dict) -> torch.Tensor | None:
    """Classifier heads' loss: per field the cross-entropy of its logits [B, C] on the labelled
    rows (``labels``: field -> [B] indices, ``IGNORE`` where unknown), averaged over the fields
    that have a label; ``None`` when none has."""
    per = []
    for f, y in labels.items():
        y = torch.as_tensor(y, dtype=torch.long, device=logits[f].device)
        if bool((y != IGNORE).any()):
            per.append(F.cross_entropy(logits[f].float(), y, ignore_index=IGNORE))
    return torch.stack(per).mean() if per else None


class ConceptHeads(nn.Module):
    """One linear head per concept (a record field such as ``evidence.volume``) on the mean
    descriptor token, and the token each hands the LLM: its softmax over the concept's values
    mixing the embeddings of the words that spell them (``model.branch.concepts``)."""

    def __init__(self, dim: int, concepts: dict[str, dict[str, str]], embed: nn.Embedding, tokenizer):
        super().__init__()
        self.classes = {f: list(words) for f, words in concepts.items()}  # field -> values
        # module names cannot hold a dot (evidence.pitch): heads in field order
        self.heads = nn.ModuleList([nn.Linear(dim, len(v)) for v in concepts.values()])
        unk = getattr(tokenizer, "unk_token_id", None)
        for f, words in concepts.items():  # a word of several tokens: their mean embedding
            rows = []
            for w in words.values():
                ids = tokenizer(" " + w.strip(), add_special_tokens=False)["input_ids"]
                if not ids or (unk is not None and unk in ids):
                    raise ValueError(f"model.branch.concepts.{f}: the word {w!r} is not in the LLM's vocabulary")
                rows.append(embed.weight.detach()[ids].float().mean(0))
            # frozen LLM embeddings: a buffer (moves with the model, not saved)
            self.register_buffer(f"words_{len(self._buffers)}", torch.stack(rows), persistent=False)  # [C, H]

    def forward(self, tokens: torch.Tensor, n_tok: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits per concept: field -> [B, C]."""
        pooled = token_mean(tokens, n_tok)  # [B, H]
        return {f: head(pooled) for f, head in zip(self.classes, self.heads)}

    def tokens(self, tokens: torch.Tensor, n_tok: torch.Tensor) -> torch.Tensor:
        """[B, N, H] descriptor tokens -> [B, K, H], one word-mixture token per concept."""
        words = list(self._buffers.values())
        out = [logits.softmax(-1) @ w.to(logits.dtype) for logits, w in zip(self(tokens, n_tok).values(), words)]
        return torch.stack(out, dim=1)


@dataclass
class SpeechTokens:
    content: torch.Tensor  # [B, N, H]
    descriptor: torch.Tensor  # [B, N, H]
    n_tokens: torch.Tensor  # [B] real tokens per utterance (same for both streams)
    kl: dict[str, torch.Tensor]  # branch -> [B], summed over frames and latent dims
    frame_lens: torch.Tensor  # [B] encoder frames the KL sums over
    # [B, K, H] utterance-level tokens after S_des: the mean descriptor token
    # (model.branch.summary_token), then one per concept (model.branch.concepts)
    summary: torch.Tensor | None = None


class ExplainableSER(nn.Module):
    """Encoder, branches and LLM; the prompt builder knows the splice positions."""

    def __init__(self, encoder: nn.Module, llm: nn.Module, tokenizer, cfg, descriptor_encoder: nn.Module | None = None):
        super().__init__()
        self.encoder = encoder  # frozen, eval mode (see train())
        self.descriptor_encoder = descriptor_encoder  # None: the one encoder feeds both branches
        self.llm = llm  # peft-wrapped causal LM
        llm_dim = llm.get_input_embeddings().weight.shape[1]
        ctx = set(cfg.branch.utterance_context)
        self.content = Branch(encoder.num_layers, encoder.hidden_size, llm_dim, cfg.branch, "content" in ctx)
        des = descriptor_encoder or encoder
        self.descriptor = Branch(des.num_layers, des.hidden_size, llm_dim, cfg.branch, "descriptor" in ctx)
        self.tokenizer = tokenizer
        self.prompts = PromptBuilder(tokenizer, cfg.system_prompt)
        self.pad_id = tokenizer.pad_token_id
        self.summary_token = cfg.branch.summary_token
        if cfg.branch.concepts:  # inside the descriptor branch: saved and warm-started with it (group "concepts")
            self.descriptor.concepts = ConceptHeads(
                llm_dim, {f: dict(w) for f, w in cfg.branch.concepts.items()}, llm.get_input_embeddings(), tokenizer
            )

    def train(self, mode: bool = True):
        super().train(mode)
        self.encoder.eval()  # HF HuBERT masks time steps in train mode; it stays frozen
        if self.descriptor_encoder is not None:
            self.descriptor_encoder.eval()
        return self

    def layer_weights(self) -> dict[str, torch.Tensor]:
        """Each branch's softmax weights over the encoder's layers [L]."""
        return {b: getattr(self, b).block.layer_weights() for b in ("content", "descriptor")}

    # -- speech -> tokens ----------------------------------------------------------------------
    def encode(self, wave, wave_lens, encoder: nn.Module | None = None):
        """Frozen encoder: every layer [L, B, F, D] in the branches' dtype, real frame counts [B]."""
        # inference_mode skips autograd's version counters and views entirely (cheaper than
        # no_grad). Its outputs may not be saved for backward, so training gets a copy; the
        # copy also brings a bf16 encoder's layers to the branches' dtype (no autocast needed).
        with torch.inference_mode():
            layers, frame_lens = (encoder or self.encoder)(wave, wave_lens)
        dtype = self.content.block.layer_logits.dtype
        if torch.is_grad_enabled() or layers.dtype != dtype:
            layers = layers.to(dtype, copy=True)
        return layers, frame_lens.clone()

    def descriptor_layers(self, wave, wave_lens, layers, frame_lens):
        """The descriptor branch's input [L', B, F, D']: the content encoder's own layers, or
        the second encoder's resampled (linearly, each utterance's real frames onto its real
        content frame count) so both streams stay frame-aligned and give equal token counts."""
        if self.descriptor_encoder is None:
            return layers
        d_layers, d_lens = self.encode(wave, wave_lens, self.descriptor_encoder)  # [L', B, F', D']
        n_l, b, _, dim = d_layers.shape
        out = d_layers.new_zeros(n_l, b, layers.shape[2], dim)  # [L', B, F, D']
        for i in range(b):
            f_d, f_c = int(d_lens[i]), int(frame_lens[i])
            if f_d > 0 and f_c > 0:
                x = d_layers[:, i, :f_d].transpose(1, 2)  # [L', D', F'_i]
                out[:, i, :f_c] = F.interpolate(x, size=f_c, mode="linear", align_corners=False).transpose(1, 2)
        return out

    def speech_tokens(
        self,
        wave,
        wave_lens,
        *,
        sample_content: bool,
        sample_descriptor: bool,
        zero_descriptor: bool,
        zero_content: bool = False,
    ) -> SpeechTokens:
        layers, frame_lens = self.encode(wave, wave_lens)  # [L, B, F, D], [B]
        s_con, n_tok, kl_con = self.content(layers, frame_lens, sample_content)  # [B, N, H]
        d_layers = self.descriptor_layers(wave, wave_lens, layers, frame_lens)  # [L', B, F, D']
        s_des, _, kl_des = self.descriptor(d_layers, frame_lens, sample_descriptor)  # [B, N, H]
        if zero_descriptor:
            s_des = torch.zeros_like(s_des)  # stage 1: positions kept, information removed
        if zero_content:
            s_con = torch.zeros_like(s_con)  # probes: how much the model relies on the audio
        extra = []
        if self.summary_token:  # mean over each utterance's real tokens: [B, 1, H]
            extra.append(token_mean(s_des, n_tok)[:, None])
        if hasattr(self.descriptor, "concepts"):  # [B, K, H]
            extra.append(self.descriptor.concepts.tokens(s_des, n_tok).to(s_des.dtype))
        summary = torch.cat(extra, dim=1) if extra else None  # [B, K, H]
        if zero_descriptor and summary is not None:
            summary = torch.zeros_like(summary)  # the concepts too: no descriptor information
        return SpeechTokens(s_con, s_des, n_tok, {"content": kl_con, "descriptor": kl_des}, frame_lens, summary)

    # -- tokens + prompt -> LLM inputs ---------------------------------------------------------
    def embed_ids(self, ids: list[int], like: torch.Tensor) -> torch.Tensor:
        t = torch.tensor(ids, dtype=torch.long, device=like.device)
        return self.llm.get_input_embeddings()(t)  # [n, H]

    def build_inputs(self, speech: SpeechTokens, task: Task, targets: list[list[int]] | None, left_pad: bool = False):
        """Splice speech tokens into the prompt; pad; label only the targets.

        Returns inputs_embeds [B, L, H], attention_mask [B, L], labels [B, L] (or None).
        """
        embeds, mask, labels, _ = self.splice(speech, task, targets, left_pad)
        return embeds, mask, labels

    def splice(self, speech: SpeechTokens, task: Task, targets: list[list[int]] | None, left_pad: bool = False):
        """:meth:`build_inputs` plus ``picks`` (the target tokens' places, for the loss).

        The layout of every sequence (<head> S_con[:n] <mid> S_des[:n] [S_sum] <tail> <target>, padded) is
        worked out on the host from the token counts, read once per batch; the device then runs
        one gather. No per-utterance host read or data-dependent shape, so a GPU never waits.
        ``picks``: ``pos`` [T] flat positions in [B * L] whose hidden state predicts each target
        token, ``ids`` [T] those tokens, ``row`` [T] their utterance, ``count`` [B] per utterance.
        """
        head, mid, tail = self.prompts.pieces(task)
        emb_dtype = self.llm.get_input_embeddings().weight.dtype
        con, des = speech.content, speech.descriptor  # [B, N, H]
        b, n_max, h = con.shape
        dev = con.device
        n_tok = speech.n_tokens.tolist()  # the one host read of the step
        tgt = [list(t) for t in targets] if targets is not None else [[] for _ in range(b)]
        # one source table [S, H]: prompt pieces, every target token, both token streams, a zero row
        all_tgt = [t for ids in tgt for t in ids]
        o_mid, o_tail, o_tgt = len(head), len(head) + len(mid), len(head) + len(mid) + len(tail)
        o_con = o_tgt + len(all_tgt)
        o_des = o_con + b * n_max
        o_sum = o_des + b * n_max
        n_sum = speech.summary.shape[1] if speech.summary is not None else 0
        o_zero = o_sum + b * n_sum
        prompt = [len(head) + len(mid) + len(tail) + 2 * n + n_sum for n in n_tok]
        lengths = [p + len(t) for p, t in zip(prompt, tgt)]
        max_len = max(lengths)
        index = torch.full((b, max_len), o_zero, dtype=torch.long)
        labels = torch.full((b, max_len), IGNORE, dtype=torch.long)
        pos, row, ids = [], [], []
        k = o_tgt
        for i, (n, ln, t) in enumerate(zip(n_tok, lengths, tgt)):
            seq = [
                *range(len(head)),
                *range(o_con + i * n_max, o_con + i * n_max + n),
                *range(o_mid, o_tail),
                *range(o_des + i * n_max, o_des + i * n_max + n),
                *range(o_sum + i * n_sum, o_sum + (i + 1) * n_sum),
                *range(o_tail, o_tgt),
                *range(k, k + len(t)),
            ]
            k += len(t)
            start = max_len - ln if left_pad else 0
            index[i, start : start + ln] = torch.tensor(seq, dtype=torch.long)
            if t:
                first = start + prompt[i]  # where the target begins
                labels[i, first : first + len(t)] = torch.tensor(t, dtype=torch.long)
                pos += range(i * max_len + first - 1, i * max_len + first - 1 + len(t))
                row += [i] * len(t)
                ids += t
        words = head + mid + tail + all_tgt
        host = torch.cat(
            [
                index.view(-1),
                labels.view(-1),
                torch.tensor(words + pos + row + ids, dtype=torch.long),
                torch.tensor([len(t) for t in tgt], dtype=torch.long),
            ]
        )
        if dev.type == "cuda":
            host = host.pin_memory()
        host = host.to(dev, non_blocking=True)  # one copy for every index of the batch
        index, labels_d, words_d, t_pos, t_row, t_ids, count = host.split(
            [b * max_len, b * max_len, len(words), len(pos), len(pos), len(pos), b]
        )
        table = torch.cat(
            [
                self.llm.get_input_embeddings()(words_d).to(emb_dtype),
                con.reshape(b * n_max, h).to(emb_dtype),
                des.reshape(b * n_max, h).to(emb_dtype),
                *([speech.summary.reshape(b * n_sum, h).to(emb_dtype)] if n_sum else []),
                con.new_zeros(1, h, dtype=emb_dtype),
            ]
        )  # [S, H]
        embeds = table.index_select(0, index).view(b, max_len, h)  # [B, L, H]
        mask = (index != o_zero).long().view(b, max_len)  # [B, L]
        picks = {"pos": t_pos, "row": t_row, "ids": t_ids, "count": count}
        return embeds, mask, (labels_d.view(b, max_len) if targets is not None else None), picks

    # -- training loss -------------------------------------------------------------------------
    def forward(
        self,
        wave,
        wave_lens,
        task: Task,
        target_texts: list[str],
        *,
        sample_content: bool = True,
        sample_descriptor: bool = True,
        zero_descriptor: bool = False,
        zero_content: bool = False,
        value_weight: float = 1.0,
        concept_labels: dict | None = None,
    ) -> dict[str, torch.Tensor]:
        """Per-utterance losses [B]: ``ce`` summed over the target tokens (paper eq. 4),
        ``ce_per_token`` (its mean, for reading curves), ``kl_content``, ``kl_descriptor``
        (summed over frames and latent dims), ``frames`` (the encoder frames of each).
        ``value_weight`` != 1 (not in the paper) adds ``ce_weighted``: the same sum with the tokens
        that spell a value (:meth:`PromptBuilder.value_mask`) counted ``value_weight`` times.
        ``concept_labels`` (field -> [B] value indices, -100 where unknown; not in the paper) adds
        ``concept_ce``: the concept heads' cross-entropy, averaged over the fields that have one."""
        speech = self.speech_tokens(
            wave,
            wave_lens,
            sample_content=sample_content,
            sample_descriptor=sample_descriptor,
            zero_descriptor=zero_descriptor,
            zero_content=zero_content,
        )
        targets = [self.prompts.target_ids(t) for t in target_texts]
        embeds, mask, _, picks = self.splice(speech, task, targets)
        # Right padding: positions 0..L_i-1 are the same as for the utterance alone.
        hidden = self.decoder_hidden(embeds, mask)  # [B, L, H]
        # Logits only where a next token is labelled (saves the [B, L, V] tensor).
        logits = self.lm_head(hidden.reshape(-1, hidden.shape[-1]).index_select(0, picks["pos"]))  # [T, V]
        tok_ce = F.cross_entropy(logits.float(), picks["ids"], reduction="none")  # [T]
        ce = torch.zeros(embeds.shape[0], device=tok_ce.device).index_add_(0, picks["row"], tok_ce)  # [B]
        out = {
            "ce": ce,
            "ce_per_token": ce / picks["count"].clamp(min=1),
            "kl_content": speech.kl["content"],
            "kl_descriptor": speech.kl["descriptor"],
            "frames": speech.frame_lens,
            "n_tokens": speech.n_tokens,
        }
        if value_weight != 1.0:
            # weights [T] in the order of picks (utterance by utterance, token by token)
            w = torch.tensor([value_weight if v else 1.0 for t in target_texts for v in self.prompts.value_mask(t)])
            w = w.to(tok_ce.device, non_blocking=True)
            out["ce_weighted"] = torch.zeros_like(ce).index_add_(0, picks["row"], tok_ce * w)  # [B]
        if concept_labels is not None:
            got = heads_cross_entropy(self.descriptor.concepts(speech.descriptor, speech.n_tokens), concept_labels)
            out["concept_ce"] = got if got is not None else ce.sum() * 0.0
        return out

    def loss(
        self,
        wave,
        wave_lens,
        task: Task,
        target_texts: list[str],
        *,
        beta: float,
        trained: list[str],
        sample: bool,
        zero_descriptor: bool = False,
        zero_content: bool = False,
        kl_reduction: str = "frame_mean",
        value_weight: float = 1.0,
        concept_labels: dict | None = None,
        concept_weight: float = 0.0,
    ) -> dict:
        """The objective: ``L = CE + beta * KL``, the cross-entropy summed over each target's
        tokens (eq. 4) and averaged over the batch, plus the KL of each *trained* branch
        (``trained``: ``content`` and/or ``descriptor``), per utterance averaged over its frames
        (``kl_reduction="frame_mean"``) or summed (``"sum"``, eq. 2's per-sample KL), then
        averaged over the batch. ``sample``: z drawn from the trained branches' posteriors
        (training); otherwise z = mu. A frozen branch always gives z = mu, also in training.
        ``value_weight`` (not in the paper): the value tokens' CE counts that many times in the
        objective; the returned ``ce`` stays the plain sum. ``concept_weight`` times the concept
        heads' cross-entropy on ``concept_labels`` (:meth:`forward`) joins the objective too."""
        out = self(
            wave,
            wave_lens,
            task,
            target_texts,
            sample_content=sample and "content" in trained,
            sample_descriptor=sample and "descriptor" in trained,
            zero_descriptor=zero_descriptor,
            zero_content=zero_content,
            value_weight=value_weight,
            concept_labels=concept_labels,
        )
        ce = out["ce"].mean()  # summed over target tokens, averaged over utterances
        objective = out.get("ce_weighted", out["ce"]).mean()
        if kl_reduction not in ("frame_mean", "sum"):
            raise ValueError(f"kl_reduction must be 'frame_mean' or 'sum', got {kl_reduction!r}")
        per = out["frames"].clamp(min=1).float() if kl_reduction == "frame_mean" else 1.0  # [B]
        kl = {b: (out[f"kl_{b}"] / per).mean() for b in ("content", "descriptor")}  # scalars
        loss = objective + beta * sum(kl[b] for b in trained)
        res = {"loss": loss, "ce": ce, "ce_per_token": out["ce_per_token"].mean(), "kl": kl}
        if "concept_ce" in out:
            res["loss"] = loss + concept_weight * out["concept_ce"]
            res["concept_ce"] = out["concept_ce"]
        return res

    def decoder_hidden(self, embeds, mask):
        base = self.llm.get_base_model()
        return base.model(inputs_embeds=embeds, attention_mask=mask).last_hidden_state

    def lm_head(self, hidden):
        return self.llm.get_base_model().lm_head(hidden)

    @torch.no_grad()
    def label_scores(
        self, wave, wave_lens, task: Task, prefixes: list[str], labels: list[str], zero_descriptor: bool = False
    ) -> torch.Tensor:
        """Per-class probabilities [B, C] of ``Emotion: {label}`` after each utterance's prefix
        (``zero_descriptor``: with the descriptor tokens zeroed, the counterfactual).

        The prefix (e.g. the generated caption) is shared by all candidates, so the differences
        of the summed target cross-entropies are the labels' log-probabilities.
        """
        neg_ce = []
        for label in labels:
            targets = [f"{p}\n{FIELD_PREFIX['emotion']} {label}".strip() for p in prefixes]
            out = self.forward(
                wave,
                wave_lens,
                task,
                targets,
                sample_content=False,
                sample_descriptor=False,
                zero_descriptor=zero_descriptor,
            )
            neg_ce.append(-out["ce"])
        return torch.softmax(torch.stack(neg_ce, dim=1), dim=1)

    # -- inference -------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        wave,
        wave_lens,
        task: Task,
        *,
        max_new_tokens: int = 64,
        num_beams: int = 1,
        zero_descriptor: bool = False,
        zero_content: bool = False,
        prefixes: list[str] | None = None,
    ) -> list[str]:
        """Decode a batch (left-padded prompts, KV cache, greedy or beam search; ``prefixes``:
        as in :meth:`generate_from`)."""
        speech = self.speech_tokens(
            wave,
            wave_lens,
            sample_content=False,
            sample_descriptor=False,
            zero_descriptor=zero_descriptor,
            zero_content=zero_content,
        )
        return self.generate_from(speech, task, max_new_tokens=max_new_tokens, num_beams=num_beams, prefixes=prefixes)

    @torch.no_grad()
    def generate_from(
        self,
        speech: SpeechTokens,
        task: Task,
        *,
        max_new_tokens: int = 64,
        num_beams: int = 1,
        zero_descriptor: bool = False,
        zero_content: bool = False,
        prefixes: list[str] | None = None,
    ) -> list[str]:
        """Decode from speech tokens already computed: one encoder pass serves every task and
        the counterfactuals (a zeroed stream here equals one zeroed in :meth:`speech_tokens`).
        ``prefixes``: each answer begins with this text (its tokens after the prompt, as a
        target's would be); the model writes on from there, and the text returned includes it."""
        if zero_descriptor:
            speech = replace(
                speech,
                descriptor=torch.zeros_like(speech.descriptor),
                summary=None if speech.summary is None else torch.zeros_like(speech.summary),
            )
        if zero_content:
            speech = replace(speech, content=torch.zeros_like(speech.content))
        forced = [self.prompts.text_ids(p) for p in prefixes] if prefixes is not None else None
        embeds, mask, _ = self.build_inputs(speech, task, forced, left_pad=True)
        eot = self.prompts.eot_id
        out = self.llm.generate(
            inputs_embeds=embeds,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            num_beams=num_beams,
            do_sample=False,
            eos_token_id=eot,
            pad_token_id=self.pad_id,
        )
        texts = self.tokenizer.batch_decode(out, skip_special_tokens=True)
        if forced is None:
            return texts
        # decoded from the same tokens, so the prefix reads back as the model saw it
        return self.tokenizer.batch_decode(
            [ids + new.tolist() for ids, new in zip(forced, out)], skip_special_tokens=True
        )

    @torch.no_grad()
    def concept_probs(self, speech: SpeechTokens, zero_descriptor: bool = False) -> dict[str, torch.Tensor]:
        """The concept heads' probabilities (``model.branch.concepts``): field -> [B, C], in
        the order of ``self.descriptor.concepts.classes[field]`` (``zero_descriptor``: read from
        zeroed descriptor tokens, the counterfactual)."""
        if not hasattr(self.descriptor, "concepts"):
            raise ValueError("this model has no concept heads (model.branch.concepts is empty)")
        des = torch.zeros_like(speech.descriptor) if zero_descriptor else speech.descriptor
        return {f: logits.float().softmax(-1) for f, logits in self.descriptor.concepts(des, speech.n_tokens).items()}
