"""Which language a clip is spoken in, to flag audio unlike what a model was trained on.

A model trained on English speech answers Mandarin speech in English, with nothing in its
output to say so. :class:`LanguageID` runs Whisper's own language identification (the decoder's
first step after ``<|startoftranscript|>``, restricted to the language tokens) on any Whisper
checkpoint (a hub name, a local directory, or ``pkg:whisper-base``); :func:`training_languages`
reads the languages of a run's training records. ``predict`` compares the two.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

from data_modules.streaming import read_split
from explainable_ser.offline.pretrained import resolve


class LanguageID:
    """``(language code, probability)`` of a 16 kHz waveform, from a Whisper checkpoint."""

    def __init__(self, name_or_path: str, device: str | torch.device = "cpu", trust_remote_code: bool = False):

        path = resolve(name_or_path)
        model = WhisperForConditionalGeneration.from_pretrained(path, trust_remote_code=trust_remote_code)
        model.to(device)
        model.eval()
        self.model = model
        self.features = WhisperFeatureExtractor.from_pretrained(path, trust_remote_code=trust_remote_code)
        lang_to_id = _lang_to_id(path, self.model)
        if not lang_to_id:
            raise ValueError(
                f"{name_or_path} has no language tokens (an English-only Whisper cannot identify languages)"
            )
        self.codes = [token.strip("<|>") for token in lang_to_id]
        self.ids = torch.tensor(list(lang_to_id.values()), device=device)
        self.start = self.model.generation_config.decoder_start_token_id

    @torch.no_grad()
    def __call__(self, wave: torch.Tensor) -> tuple[str, float]:
        # Whisper identifies the language from its standard 30 s window (the first 30 s).
        feats = self.features(wave.float().cpu().numpy(), sampling_rate=16000, return_tensors="pt").input_features.to(
            self.ids.device
        )
        start = torch.tensor([[self.start]], device=self.ids.device)
        logits = self.model(input_features=feats, decoder_input_ids=start).logits[0, -1]  # [V]
        probs = torch.softmax(logits[self.ids].float(), dim=-1)  # over the language tokens only
        best = int(probs.argmax())
        return self.codes[best], float(probs[best])


def _lang_to_id(path: str, model) -> dict[str, int]:
    """Language token -> id: transformers keeps it in ``generation_config.json``, which older
    and converted checkpoints may only carry as a file."""
    found = getattr(model.generation_config, "lang_to_id", None)
    if found:
        return dict(found)
    file = Path(path) / "generation_config.json"
    return dict(json.loads(file.read_text()).get("lang_to_id") or {}) if file.is_file() else {}


def training_languages(data_cfg, per_corpus: int = 200) -> set[str] | None:
    """Languages of the first ``per_corpus`` training records of each corpus (metadata only);
    ``None`` when no training manifest is at hand (a model used away from its data)."""

    found: set[str] = set()
    seen_any = False
    for spec in data_cfg.corpora:
        if spec.train_split is None:
            continue
        try:
            cuts = read_split(spec, spec.train_split, metadata_only=True)
            for i, cut in enumerate(cuts):
                if i >= per_corpus:
                    break
                seen_any = True
                found.update(s.language.split("-")[0].lower() for s in cut.supervisions if s.language)
        except FileNotFoundError:
            continue
    return found if seen_any and found else None
