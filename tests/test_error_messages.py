"""Every configuration key that an error message names exists in the schema.

The messages are read from the source: the strings of every ``raise ...(...)``, every
``print(..., file=sys.stderr)`` and every ``parser.error(...)`` in the packages."""

from __future__ import annotations

import ast
import dataclasses
import re
import typing
from pathlib import Path

import pytest

from explainable_ser.config import ExperimentConfig

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("explainable_ser", "data_modules")
KEY = re.compile(r"\b(?:data|model|training|trainer|eval)\.[A-Za-z_][A-Za-z_0-9]*(?:\.[A-Za-z_0-9]+)*")


def _strings(node: ast.AST) -> list[str]:
    """The literal text of every string in ``node``; an f-string's fields read as ``0``."""
    out = []
    for sub in ast.walk(node):
        if isinstance(sub, ast.JoinedStr):
            out.append("".join(v.value if isinstance(v, ast.Constant) else "0" for v in sub.values))
        elif isinstance(sub, ast.Constant) and isinstance(sub.value, str):
            out.append(sub.value)
    return out


def _is_stderr_print(call: ast.Call) -> bool:
    return (
        isinstance(call.func, ast.Name)
        and call.func.id == "print"
        and any(k.arg == "file" and ast.unparse(k.value) == "sys.stderr" for k in call.keywords)
    )


def error_messages() -> list[tuple[str, int, str]]:
    found = []
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Raise) and node.exc is not None:
                    texts = _strings(node.exc)
                elif isinstance(node, ast.Call) and (
                    _is_stderr_print(node) or (isinstance(node.func, ast.Attribute) and node.func.attr == "error")
                ):
                    texts = _strings(node)
                else:
                    continue
                found += [(str(path.relative_to(ROOT)), node.lineno, t) for t in texts]
    return found


def key_exists(key: str) -> bool:
    """Walk the dataclass schema; a list of dataclasses takes an index, a dict any key."""
    hint: typing.Any = ExperimentConfig
    for part in key.split("."):
        origin = typing.get_origin(hint)
        if origin is list:
            if not part.isdigit():
                return False
            hint = typing.get_args(hint)[0]
            continue
        if origin is dict:
            hint = typing.get_args(hint)[1]
            continue
        if not dataclasses.is_dataclass(hint):
            return False  # a key below a plain value
        hints = typing.get_type_hints(hint)
        if part not in hints:
            return False
        hint = hints[part]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if typing.get_origin(hint) in (typing.Union, __import__("types").UnionType) and len(args) == 1:
            hint = args[0]  # X | None
    return True


MESSAGES = error_messages()
KEYS = sorted({(m.group(0).rstrip("."), f"{path}:{line}") for path, line, text in MESSAGES for m in KEY.finditer(text)})


def test_the_reader_finds_the_messages_that_name_keys():
    assert len(MESSAGES) > 100
    assert len(KEYS) > 10
    assert key_exists("training.stages.1.lr_scale") and key_exists("data.corpora.0.test_split")
    assert not key_exists("data.max_clip_duration") and not key_exists("training.stages.x")


@pytest.mark.parametrize("key, where", KEYS, ids=[f"{k}@{w}" for k, w in KEYS])
def test_a_key_named_in_an_error_message_exists(key, where):
    assert key_exists(key), f"{where} names {key}, which the config schema does not have"
