"""The device check in a simulation of the GPU machines' image, on CPU.

An environment holding only the image's packages (``benchmarks/device_image/packages.txt``,
linked by ``benchmarks/device_image/make_env.py``), the registry off (``PIP_NO_INDEX=1``), and
the wheels ``benchmarks/device_wheels.py`` fetches (for this interpreter's version here; 3.12
for the machine): the check's dry run must pass end to end, as on the machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def image_python(tmp_path_factory) -> str:
    dest = tmp_path_factory.mktemp("image") / "env"
    subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "device_image" / "make_env.py"), str(dest)],
        check=True,
        capture_output=True,
        text=True,
    )
    return str(dest / "bin" / "python")


def image_env(tmp: Path, python: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(
        PIP_NO_INDEX="1",
        CUDA_VISIBLE_DEVICES="",
        PYTHON=python,
        TMPDIR=str(tmp),
        PATH=f"{Path(python).parent}{os.pathsep}{env.get('PATH', '')}",
    )
    return env


def test_the_simulated_image_has_its_packages_and_lacks_the_others(tmp_path, image_python):
    env = image_env(tmp_path, image_python)
    ok = subprocess.run(
        [image_python, "-c", "import torch, transformers, peft, lightning, yaml, sklearn, tqdm"],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert ok.returncode == 0, ok.stderr[-1500:]
    for missing in ("omegaconf", "lhotse", "soundfile", "jiwer", "explainable_ser"):
        proc = subprocess.run(
            [image_python, "-c", f"import {missing}"], env=env, capture_output=True, text=True, cwd=tmp_path
        )
        assert f"No module named '{missing}'" in proc.stderr, missing


@pytest.mark.slow
def test_device_check_dry_run_passes_in_the_simulated_image(tmp_path, image_python):
    wheels, prefix, out = tmp_path / "wheels", tmp_path / "prefix", tmp_path / "out"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    fetch = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "device_wheels.py"),
            "--python-version",
            version,
            "--dest",
            str(wheels),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert fetch.returncode == 0, fetch.stderr[-2000:]
    manifest = json.loads((wheels / "manifest.json").read_text())
    assert manifest["total_mib"] < 40  # with the repository, well inside the 64 MiB that travels
    env = image_env(tmp_path, image_python)
    env.update(DRY_RUN="1", OUT=str(out), WHEELS=str(wheels), PREFIX=str(prefix))
    proc = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "device_check.sh")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    summary = json.loads((out / "summary.json").read_text())
    assert proc.returncode == 0, (summary["parts"], proc.stderr[-2000:])
    assert set(summary["parts"].values()) == {"ok"}
    assert set(summary["train_step"]) == {"project", "baseline", "baseline+bucketing"}
    assert all(v["samples_per_s"] for v in summary["train_step"].values())
    assert summary["fit"]["n_utterances"] == 2
    assert json.loads((out / "decode.json").read_text())["identical_outputs"] is True  # fp32 on CPU
    assert len([p for p in out.rglob("*") if p.is_file()]) <= 8
