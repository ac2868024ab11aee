"""Hypothesis fuzz of the config loader: on any override, YAML text or structured YAML it returns a
config or raises :class:`~explainable_ser.config.ConfigError`, never anything else (config
overrides 700 cases, YAML text 250, structured YAML 250). The corpus readers' fuzz is
tests/data_modules/test_readers_fuzz.py."""

from __future__ import annotations

import tempfile
from pathlib import Path

import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from explainable_ser.config import ConfigError, ExperimentConfig, load_config, to_yaml

from conftest import FAST, write_raw


# --------------------------------------------------------------------------------- config
def _config_keys() -> list[str]:
    """Every dotted key of the schema (list items as ``.0``), plus a few unknown ones."""
    from omegaconf import OmegaConf

    keys = []

    def walk(node, prefix):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        elif isinstance(node, list) and node and isinstance(node[0], dict):
            walk(node[0], f"{prefix}0.")
        keys.append(prefix[:-1])

    walk(OmegaConf.to_container(OmegaConf.structured(ExperimentConfig())), "")
    return sorted(k for k in keys if k) + [
        "nope",
        "data.nope",
        "training.stages.9.lr",
        "trainer..devices",
        " seed ",
        "data.corpora.x.dir",
    ]


KEYS = _config_keys()
SCALARS = st.one_of(
    st.integers(-(10**12), 10**12).map(str),
    st.floats(allow_nan=True).map(repr),
    st.sampled_from(
        [
            "true",
            "false",
            "null",
            "~",
            "???",
            "${seed}",
            "${nope}",
            "${",
            "[",
            "]",
            "{",
            "[1, 2",
            "{a: 1}",
            "[a, b]",
            "'quoted'",
            '"dq',
            "1e999",
            "-.inf",
            ".nan",
            "0x1F",
            "!!python/object:os.system ls",
            "&a x",
            "*a",
            "|",
            ">",
            "---",
            "- a",
            "a: b: c",
            "\t",
            "",
            " ",
        ]
    ),
    st.text(max_size=30),
)
OVERRIDES = st.one_of(
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(KEYS), SCALARS),
    st.builds(lambda k, v: f"{k}={v}", st.text(max_size=20), SCALARS),
    st.text(max_size=40),
)


@settings(max_examples=700, **FAST)
@given(st.lists(OVERRIDES, max_size=4))
@example(["run_dir=???"])
@example(["name=${nope}"])
@example(["seed=1.5", "seed=3"])
@example(["=3"])
@example(["a\x00b=1"])
@example(["nope.yaml"])
def test_config_overrides_raise_only_config_error(args):
    try:
        cfg = load_config(args)
    except ConfigError as err:
        assert str(err) and "\n" not in str(err) and len(str(err)) < 600, str(err)
        return
    assert_round_trips(cfg)


@settings(max_examples=250, **FAST)
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200)))
@example("a: [\n")
@example(b"\xff\xfe: 1\n")
@example("name: ${nope}\n")
@example("- 1\n- 2\n")
@example("data: 3\n")
@example("!!python/object/apply:os.system ['echo pwned']\n")
@example("a: &x [*x]\n")
@example("[" * 2000)
def test_config_yaml_text_raises_only_config_error(scratch, text):
    path = write_raw(scratch, "fuzz.yaml", text)
    try:
        cfg = load_config([str(path)])
    except ConfigError as err:
        assert str(path) in str(err) or "key" in str(err), str(err)
        assert "\n" not in str(err)
        return
    assert_round_trips(cfg)


def assert_round_trips(cfg) -> None:
    """What a run writes as its config.yaml loads back to the same configuration."""
    text = to_yaml(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(text, encoding="utf-8")
        assert to_yaml(load_config([str(path)])) == text


def _nested(keys: list[str], value):
    out: dict = {}
    for key in keys:
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            nxt = node.get(part)
            if not isinstance(nxt, dict):
                nxt = node[part] = {}
            node = nxt
        node[parts[-1]] = value
    return out


YAML_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=12)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6,
)


@settings(max_examples=250, **FAST)
@given(
    st.lists(st.tuples(st.lists(st.sampled_from(KEYS), min_size=1, max_size=3), YAML_VALUES), min_size=1, max_size=3)
)
def test_structured_config_yaml_raises_only_config_error(scratch, layers):
    paths = []
    for i, (keys, value) in enumerate(layers):
        text = yaml.safe_dump(_nested(keys, value), allow_unicode=True)
        paths.append(str(write_raw(scratch, f"layer{i}.yaml", text)))
    try:
        cfg = load_config(paths)
    except ConfigError:
        return
    assert_round_trips(cfg)
