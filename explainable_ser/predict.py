"""Explain audio files: ``python -m explainable_ser.predict --ckpt PATH AUDIO... [key=value ...]``.

Prints one JSON line per file: the transcript (``asr``), the descriptor caption and emotion
(``ser_sed``), the attributes read back from the caption, and the per-class scores of the
emotion (the model's probability of ``Emotion: {label}`` after its own caption). ``emotion``
is the generated one (``emotion_source: generated``) or, when the generated text names no
known label, the best-scoring label (``emotion_source: scores``). Audio in any format
soundfile reads, any rate (resampled to 16 kHz), multichannel downmixed. Config overrides
(``key=value``, YAML files) go among the arguments as in ``fit`` and ``evaluate``. With a
Whisper encoder (the demo) each file's spoken language is identified (``language``) and a
language the model was not trained on is warned about (``warnings``; ``--language-id``).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from explainable_ser.config import ConfigError
from explainable_ser.prompts import caption_attributes, get_task, parse_output

if TYPE_CHECKING:
    import torch

_EMOTION_PREFIX = re.compile(r"emotion\s*:", re.IGNORECASE)


def load_audio(path: str, data_cfg) -> torch.Tensor:
    """Through the data module's own loader: same downmix, resampling and validity checks."""
    # Loaded here, not at the top: `--help` and argument errors answer without torch and lhotse.
    import soundfile as sf
    import torch

    from data_modules.datamodule import SpeechBatchDataset
    from data_modules.records import make_cut

    if Path(path).stat().st_size == 0:  # soundfile would say "Format not recognised"
        raise ValueError("empty file (0 bytes)")
    info = sf.info(path)
    cut = make_cut(Path(path).stem, path, sampling_rate=info.samplerate, num_samples=info.frames,
                   corpus="files", split="predict")
    audio, reason = SpeechBatchDataset(data_cfg).load(cut)
    if reason is not None:
        raise ValueError(reason)
    return torch.from_numpy(audio)


def explain(model, wave: torch.Tensor, labels: list[str], max_new_tokens: int = 64,
            num_beams: int = 1) -> dict:
    """Transcript, caption, emotion and per-class emotion scores for one waveform [T]."""
    import torch

    with torch.no_grad():
        return _explain(model, wave, labels, max_new_tokens, num_beams)


def _explain(model, wave, labels, max_new_tokens: int, num_beams: int) -> dict:
    import torch

    device = next(model.parameters()).device
    w, lens = wave[None].to(device), torch.tensor([wave.numel()], device=device)
    asr = model.generate(w, lens, get_task("asr"), max_new_tokens=max_new_tokens, num_beams=num_beams)[0]
    # An SSL baseline (Table 2 Sys.1-3) writes no caption: it answers the emotion task alone.
    task = get_task("ser_sed" if getattr(model, "has_descriptor", True) else "ser")
    raw = model.generate(w, lens, task, max_new_tokens=max_new_tokens, num_beams=num_beams)[0]
    parsed = parse_output(raw, tuple(labels))
    m = _EMOTION_PREFIX.search(raw)
    prefix = (raw[: m.start()] if m else raw).strip()
    scores = model.label_scores(w, lens, task, [prefix], labels)[0]
    # The generated text names an emotion, or none the labels know: the scores still rank them,
    # so the answer is the best-scoring label and `emotion_source` says which it is.
    best = labels[int(torch.as_tensor(scores).argmax())]
    return {
        "transcript": parse_output(asr)["transcript"],
        "caption": parsed["caption"],
        "emotion": parsed["emotion"] or best,
        "emotion_source": "generated" if parsed["emotion"] else "scores",
        "emotion_scores": {lab: round(float(s), 4) for lab, s in zip(labels, scores)},
        "attributes": caption_attributes(parsed["caption"]),
        "raw": {"asr": asr, task.name: raw},
    }


def language_check(cfg, choice: str, device):
    """``(LanguageID or None, training languages or None)`` for ``--language-id``."""
    name = choice
    if choice == "auto":
        enc = cfg.model.encoder
        name = enc.name_or_path if enc.kind == "whisper" and enc.name_or_path else "off"
    if name == "off":
        return None, None
    from explainable_ser.language_id import LanguageID, training_languages

    trained_on = training_languages(cfg.data)
    if trained_on is None:
        print("note: the run's training manifests are not here: the spoken language is reported, "
              "not compared", file=sys.stderr)
    return LanguageID(name, device, cfg.model.encoder.trust_remote_code), trained_on


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m explainable_ser.predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="exit status: 0 every file explained; 1 some files could not "
                                            "be read (their JSON line has an 'error'); 2 a bad argument, "
                                            "config or checkpoint, or no audio file exists")
    parser.add_argument("--ckpt", required=True, help="checkpoint, e.g. runs/demo/stage2/final.ckpt")
    parser.add_argument("inputs", nargs="+", metavar="AUDIO|OVERRIDE",
                        help="audio files, and YAML files or key=value overrides (as in fit and evaluate)")
    parser.add_argument("--language-id", default="auto", metavar="WHISPER|auto|off",
                        help="check the spoken language with a Whisper checkpoint and warn when the "
                             "model was trained on another; auto (default): the run's encoder when it "
                             "is a Whisper, else off")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="overrides, the older spelling (same as key=value among the arguments)")
    args = parser.parse_args(argv)
    # An argument is an override when it is key=value or a YAML file, unless a file of that name exists.
    is_override = [a.endswith((".yaml", ".yml")) or ("=" in a and not Path(a).is_file())
                   for a in args.inputs]
    args.audio = [a for a, o in zip(args.inputs, is_override) if not o]
    overrides = [a for a, o in zip(args.inputs, is_override) if o] + list(args.set)
    if not args.audio:
        parser.error("no audio file given (only overrides)")
    missing = [path for path in args.audio if not Path(path).is_file()]
    if len(missing) == len(args.audio):  # nothing to do: say so before loading any model
        print(f"error: audio file{'s' if len(missing) > 1 else ''} not found: {', '.join(missing)}",
              file=sys.stderr)
        return 2
    if not Path(args.ckpt).is_file():  # said before the model stack loads (seconds)
        print(f"error: checkpoint not found: {args.ckpt}", file=sys.stderr)
        return 2
    from explainable_ser.assembly import load_trained

    try:
        cfg, _, module, _ = load_trained(args.ckpt, overrides, with_data=False)
    except (ConfigError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    model = module.model.eval()
    try:
        lid, trained_on = language_check(cfg, args.language_id, next(model.parameters()).device)
    except Exception as err:  # an English-only Whisper, an unreachable registry ...: go on without
        print(f"note: no language check ({type(err).__name__}: {err})", file=sys.stderr)
        lid, trained_on = None, None
    status = 0
    for path in args.audio:
        try:
            wave = load_audio(path, cfg.data)
        except Exception as err:  # one unreadable file must not stop the others
            reason = "file not found" if path in missing else f"{type(err).__name__}: {err}"
            print(json.dumps({"file": path, "error": reason}))
            print(f"error: {path}: {reason}", file=sys.stderr)
            status = 1
            continue
        out = explain(model, wave, list(cfg.training.labels), cfg.eval.max_new_tokens, cfg.eval.num_beams)
        if lid is not None:
            code, prob = lid(wave)
            out["language"] = {"detected": code, "probability": round(prob, 3),
                               "training": sorted(trained_on) if trained_on else None}
            if trained_on and code not in trained_on and prob >= 0.5:
                warning = (f"Whisper hears '{code}' (p={prob:.2f}) but the model was trained on "
                           f"{sorted(trained_on)} speech: its output is unlikely to mean anything here")
                out["warnings"] = [warning]
                print(f"warning: {path}: {warning}", file=sys.stderr)
        print(json.dumps({"file": path, **out}, ensure_ascii=False))
    return status


if __name__ == "__main__":
    sys.exit(main())
