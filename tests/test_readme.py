"""The README is the user manual: what it tells a newcomer to run must run, what its layout
names must exist, and it must stay short and free of lab-notebook dating.

Each command is checked with ``--help`` only, whatever arguments the README gives it: the point
is that the module exists and parses its arguments, not that the example's data is here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

# The repository root found from this file, not from sys.path: adding tests/ to the path could
# shadow the installed packages.
ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
TEXT = README.read_text(encoding="utf-8")
MAX_LINES = 300
# .ci/run runs "the README's test command": it must stay word for word.
TEST_COMMAND = 'pip install -c constraints.txt -e ".[dev,app]" && python -m pytest -q'
MAIN_COMMAND = "python -m explainable_ser.fit"

FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)
# The project's own modules only (pip and pytest are not ours to check). The lookahead drops a
# placeholder such as `explainable_ser.<verb>` instead of shortening it to a real-looking name.
MODULE = re.compile(r"python -m\s+((?:explainable_ser|data_modules)(?:\.\w+)*)(?![\w.<])")


def fenced_blocks(text: str) -> list[str]:
    return FENCE.findall(text)


def readme_modules(text: str) -> list[str]:
    found = {m for block in fenced_blocks(text) for m in MODULE.findall(block)}
    return sorted(found)


def runnable_modules() -> list[str]:
    """Modules of the two packages that run as ``python -m``: the README must name each."""
    found = []
    for package in ("explainable_ser", "data_modules"):
        for path in sorted((ROOT / package).rglob("*.py")):
            source = path.read_text(encoding="utf-8")
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__main__":  # a package's __main__.py runs as `python -m package`
                found.append(".".join(parts[:-1]))
            elif re.search(r"""^if __name__ == ["']__main__["']""", source, re.M):
                found.append(".".join(parts))
    return found


def layout_block(text: str) -> str:
    match = re.search(r"^## Layout\s*\n.*?^```[^\n]*\n(.*?)^```", text, re.M | re.S)
    assert match, "README.md has no '## Layout' section with a fenced block"
    return match.group(1)


# A line indented this far only continues the description of the entry above it.
CONTINUATION_INDENT = 8
PATH_TOKEN = re.compile(r"^[A-Za-z0-9_][\w.-]*(?:/[\w.-]+)*/?$")
FILE_SUFFIXES = {".py", ".yaml", ".yml", ".md", ".json", ".txt", ".ipynb", ".sh", ".toml", ".cfg"}


def _is_path(token: str) -> bool:
    return bool(PATH_TOKEN.match(token)) and ("/" in token or Path(token).suffix in FILE_SUFFIXES)


def layout_paths(block: str) -> list[str]:
    """Every file or directory the layout block names, relative to the repository root.

    An entry at indent 0 is a top-level directory; names at a small indent are inside the last
    top-level directory (several names on one line are several entries). Path-like words in a
    description (``corpora/``, ``ser.py``, ``benchmarks/results/``) are inside their entry,
    unless they start with a top-level name, in which case they are from the root.
    """
    lines = [line for line in block.splitlines() if line.strip()]
    tops = {line.split()[0].rstrip("/") for line in lines if not line.startswith(" ")}
    paths: list[str] = []
    top = Path()
    entry = Path()
    for line in lines:
        indent = len(line) - len(line.lstrip(" "))
        if indent >= CONTINUATION_INDENT:
            description = line.strip()
        else:
            # names end at the first run of two spaces; the description follows
            head, _, description = line.strip().partition("  ")
            names = head.split()
            base = Path() if indent == 0 else top
            for name in names:
                paths.append((base / name).as_posix() + ("/" if name.endswith("/") else ""))
            if indent == 0:
                top = Path(names[0])
                entry = top
            else:
                entry = base / names[-1] if names[-1].endswith("/") else base
        for word in description.split():
            token = word.strip("(),;:")
            if not _is_path(token):
                continue
            base = Path() if token.split("/")[0] in tops else entry
            paths.append((base / token).as_posix() + ("/" if token.endswith("/") else ""))
    return list(dict.fromkeys(paths))


MODULES = readme_modules(TEXT)
LAYOUT = layout_paths(layout_block(TEXT))


def test_readme_is_short():
    n = len(TEXT.splitlines())
    assert n <= MAX_LINES, f"README.md has {n} lines; at most {MAX_LINES} (measurements go to RESULTS.md)"


def test_readme_has_no_issue_numbers_or_dates_relative_to_today():
    issues = re.findall(r"(?<![\w&/])#\d+\b", TEXT)
    assert not issues, f"issue references in README.md: {issues}"
    relative = re.findall(r"\b(?:today|yesterday)\b", TEXT, re.I)
    assert not relative, f"'today'/'yesterday' in README.md: {relative}"


def test_readme_gives_the_two_fresh_machine_commands():
    blocks = fenced_blocks(TEXT)
    assert any(TEST_COMMAND in block for block in blocks), (
        f"the test command that .ci/run relies on is not in a README code block: {TEST_COMMAND}"
    )
    main = re.compile(re.escape(MAIN_COMMAND) + r"\s*$", re.M)
    assert any(main.search(block) for block in blocks), (
        f"the main job with no arguments ({MAIN_COMMAND}) is not in a README code block"
    )


def test_readme_names_every_runnable_module():
    missing = sorted(set(runnable_modules()) - set(MODULES))
    assert MODULES, "no `python -m explainable_ser...` / `data_modules...` command in README code blocks"
    assert not missing, f"modules that run with `python -m` but the README does not show: {missing}"


@pytest.mark.parametrize("module", MODULES)
def test_readme_command_answers_help(module):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", module, "--help"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, f"python -m {module} --help exited {proc.returncode}:\n{proc.stderr[-2000:]}"
    assert proc.stdout.strip(), f"python -m {module} --help printed nothing"


@pytest.mark.parametrize("path", LAYOUT)
def test_readme_layout_path_exists(path):
    target = ROOT / path
    if path.endswith("/"):
        assert target.is_dir(), f"README's layout names {path}, which is not a directory here"
    else:
        assert target.is_file(), f"README's layout names {path}, which is not a file here"
