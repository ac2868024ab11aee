"""Tokenizers: the real one from ``from_pretrained`` (hub, local directory or ``pkg:NAME``).

The offline word-level tokenizer for a random LLM is :mod:`explainable_ser.offline.tokenizer`.
"""

from __future__ import annotations

from transformers import AutoTokenizer

from explainable_ser.offline.pretrained import resolve


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False):
    """The real path: a hub name, a local directory (e.g. a run's saved tokenizer) or a
    ``pkg:`` packaged model."""

    tok = AutoTokenizer.from_pretrained(resolve(name_or_path), trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        # Llama-3 has no pad token; its reserved fine-tune pad token is the usual choice.
        pad = "<|finetune_right_pad_id|>"
        tok.pad_token = pad if pad in tok.get_vocab() else tok.eos_token
    return tok
