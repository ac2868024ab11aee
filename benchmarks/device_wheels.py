"""Fetch the wheels that the device check imports and the GPU machines' image lacks.

    python benchmarks/device_wheels.py                        # -> .device_wheels/ (CPython 3.12)
    python benchmarks/device_wheels.py --python-version 3.11 --dest /tmp/wh   # for this machine

The lent GPU machine reaches no registry and has its own Python (3.12, torch 2.11, transformers
5.17, lightning 2.6, ...: ``benchmarks/device_image/packages.txt``). What the check needs beyond
that is listed in :data:`WHEELS`, each at the version installed here (so the device runs what
the tests ran), downloaded with ``--no-deps`` for manylinux x86_64: no dependency resolution
happens on either side. A pure-Python package published only as a source archive is built into
a wheel here. The folder is git-ignored and travels with the working tree
(``carry: [".device_wheels"]``); ``benchmarks/device_check.sh`` installs it with
``pip install --no-index --no-deps --target``. Prints the folder's size (the tree that travels
may hold 64 MiB in all).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# distribution -> what in the check imports it (found by running the check's dry run with only
# the image's packages installed, tests/test_device_image.py, and listing the modules loaded;
# lhotse's own audioread and cffi's pycparser are not loaded on this path)
WHEELS = {
    "omegaconf": "every config load (explainable_ser.config)",
    "antlr4-python3-runtime": "omegaconf's grammar for ${...} interpolations in configs",
    "lhotse": "the data module: manifests, cuts, bucketing samplers",
    "intervaltree": "imported by lhotse at start-up",
    "cytoolz": "imported by lhotse at start-up",
    "soundfile": "reading and writing audio (data_modules.audio, SynthCraft)",
    "cffi": "_cffi_backend, which soundfile's binding to libsndfile loads",
    "soxr": "resampling (data_modules.audio)",
    "jiwer": "WER (explainable_ser.evaluation.asr)",
    "rapidfuzz": "jiwer's edit distance",
    "espeakng-loader": "the espeak-ng library and voices SynthCraft speaks with",
}
# Not carried: pycocoevalcap (its wheel is ~100 MiB of Java jars, more than the tree may hold).
# Without it the caption metrics of metrics.json are null with the reason, as without Java.


def installed_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        raise SystemExit(
            f"{dist} is not installed here; install the project first "
            f"(pip install -c constraints.txt -e .) so its version can be pinned"
        ) from None


def fetch(dist: str, version: str, dest: Path, python_version: str, platforms: list[str]) -> Path:
    """One wheel: a binary from the registry, else one built here from the source archive (pure
    Python only: a package with compiled parts must have a wheel for the target)."""
    before = set(dest.glob("*.whl"))
    plat = [a for p in platforms for a in ("--platform", p)]
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "-q",
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        python_version,
        "--implementation",
        "cp",
        *plat,
        "-d",
        str(dest),
        f"{dist}=={version}",
    ]
    if subprocess.run(cmd, capture_output=True, text=True).returncode != 0:
        with tempfile.TemporaryDirectory() as tmp:
            build = subprocess.run(
                [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", tmp, f"{dist}=={version}"],
                capture_output=True,
                text=True,
            )
            built = list(Path(tmp).glob("*.whl"))
            if build.returncode != 0 or not built or not built[0].name.endswith("-none-any.whl"):
                raise SystemExit(
                    f"{dist}=={version}: no wheel for CPython {python_version} "
                    f"{'/'.join(platforms)} and no pure-Python build:\n{build.stderr[-800:]}"
                )
            target = dest / built[0].name
            target.write_bytes(built[0].read_bytes())
    new = sorted(set(dest.glob("*.whl")) - before)
    if new:
        return new[0]
    # already there from an earlier call
    stem = dist.replace("-", "_").lower()
    return next(p for p in dest.glob("*.whl") if p.name.lower().startswith(f"{stem}-{version}"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dest", default=str(REPO / ".device_wheels"), help="folder for the wheels (git-ignored)")
    ap.add_argument("--python-version", default="3.12", help="the target interpreter (the image's: 3.12)")
    ap.add_argument(
        "--platform",
        action="append",
        default=None,
        help="pip platform tags (default: manylinux 2014 and 2_17 to 2_35, x86_64)",
    )
    args = ap.parse_args(argv)
    platforms = args.platform or [
        "manylinux2014_x86_64",
        *(f"manylinux_2_{v}_x86_64" for v in (17, 27, 28, 31, 34, 35)),
    ]
    dest = Path(args.dest)
    dest.mkdir(parents=True, exist_ok=True)
    wheels = {}
    for dist, why in WHEELS.items():
        version = installed_version(dist)
        path = fetch(dist, version, dest, args.python_version, platforms)
        wheels[dist] = {"version": version, "wheel": path.name, "bytes": path.stat().st_size, "for": why}
        print(f"  {path.name:<70} {path.stat().st_size / 2**20:6.1f} MiB  ({why})", file=sys.stderr)
    total = sum(w["bytes"] for w in wheels.values())
    manifest = {
        "python_version": args.python_version,
        "platforms": platforms,
        "wheels": wheels,
        "total_mib": round(total / 2**20, 2),
    }
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=2))
    print(f"[device_wheels] {len(wheels)} wheels, {total / 2**20:.1f} MiB in {dest}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
