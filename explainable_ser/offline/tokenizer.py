"""The offline word-level tokenizer, for a randomly initialised LLM.

A ``tokenizers`` WordLevel model trained on the corpus text, carrying Llama-3's special tokens
and a Llama-3-style chat template, wrapped as a ``PreTrainedTokenizerFast`` so the rest of the
code sees the same API as with Llama's. It is saved with ``save_pretrained`` into the run
directory and reloaded with ``AutoTokenizer`` like a real one.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from explainable_ser.model.prompts import FIELD_PREFIX, SYSTEM_PROMPT, TASKS

# Llama-3's special tokens (ids differ in the offline tokenizer; names are what matters).
LLAMA3_SPECIALS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|finetune_right_pad_id|>",
]
UNK = "<unk>"

# Llama-3 layout without the date lines and tool branches of the real template.
LLAMA3_STYLE_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    " + message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{%- endif %}"
)


def prompt_texts(system_prompt: str = SYSTEM_PROMPT) -> list[str]:
    """Every fixed string the prompts use, so their words are in the vocabulary."""
    texts = [system_prompt, "system user assistant", *FIELD_PREFIX.values()]
    texts += [t.instruction for t in TASKS.values()]
    return texts


def build_word_tokenizer(
    corpus_texts: Iterable[str], min_frequency: int = 1, system_prompt: str = SYSTEM_PROMPT
) -> PreTrainedTokenizerFast:
    """A lowercase word-level tokenizer over ``corpus_texts`` plus the prompt strings (with the
    configured ``system_prompt``, ``model.system_prompt``)."""
    tok = Tokenizer(models.WordLevel(unk_token=UNK))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()  # words and punctuation runs
    trainer = trainers.WordLevelTrainer(special_tokens=[UNK, *LLAMA3_SPECIALS], min_frequency=min_frequency)
    tok.train_from_iterator(list(corpus_texts) + prompt_texts(system_prompt), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|begin_of_text|>",
        eos_token="<|eot_id|>",
        pad_token="<|finetune_right_pad_id|>",
        unk_token=UNK,
    )
    fast.chat_template = LLAMA3_STYLE_TEMPLATE
    return fast
