"""Make a Python environment that holds only the GPU machines' image packages, on this machine.

    python benchmarks/device_image/make_env.py DEST      # then DEST/bin/python, no registry

A venv without system packages whose site-packages links (symlinks, nothing is copied) every
installed distribution named in ``packages.txt`` here, and what those distributions require in
their installed versions (recursively: the local versions are newer than the image's and bring
their own dependencies; versions are not simulated). Anything else the device check imports
must come from the carried wheels (``benchmarks/device_wheels.py``), as on the machine. Names of
the list that are not installed here (CUDA libraries, JAX, ...) are listed in
``DEST/missing.txt``; nothing the check uses is among them on a machine with the project
installed.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

from packaging.requirements import Requirement

HERE = Path(__file__).resolve().parent


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def image_packages(path: Path = HERE / "packages.txt") -> set[str]:
    names = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(norm(re.split(r"[=<>~!\[ ]", line, maxsplit=1)[0]))
    return names


def closure(packages: set[str]) -> tuple[dict[str, importlib.metadata.Distribution], set[str]]:
    """Installed distributions of ``packages`` plus their requirements (no extras); the missing names."""
    installed = {norm(d.metadata["Name"]): d for d in importlib.metadata.distributions()}
    found, missing, todo = {}, set(), list(packages)
    while todo:
        name = todo.pop()
        if name in found or name in missing:
            continue
        dist = installed.get(name)
        if dist is None:
            missing.add(name)
            continue
        found[name] = dist
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(norm(req.name))
    return found, missing


def make(dest: Path) -> dict:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--clear", str(dest)], check=True)
    site = Path(
        subprocess.run(
            [str(dest / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    system = Path(sysconfig.get_paths()["purelib"])
    dists, missing = closure(image_packages())
    linked = set()
    for dist in dists.values():
        for f in dist.files or []:
            top = f.parts[0]
            if top in ("..", "__pycache__") or top.endswith(".pth") or top in linked:
                continue
            source = system / top
            if source.exists():
                (site / top).symlink_to(source)
                linked.add(top)
    (dest / "missing.txt").write_text("".join(f"{m}\n" for m in sorted(missing)))
    return {
        "python": str(dest / "bin" / "python"),
        "distributions": len(dists),
        "links": len(linked),
        "missing": len(missing),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dest", type=Path, help="folder of the new environment (replaced)")
    info = make(ap.parse_args(argv).dest)
    print(
        f"[device_image] {info['python']}: {info['distributions']} distributions linked "
        f"({info['missing']} of the list not installed here)",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
