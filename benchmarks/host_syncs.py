"""Count the host synchronisations of one training step (forward + backward), by batch size.

    python benchmarks/host_syncs.py [--batches 2,8] [--out benchmarks/results/host_syncs.json]

On a GPU every read of a device value by the host (``.item()``, ``int(t)``, ``bool(t)``,
``.tolist()``, ``.cpu()``) and every operation whose output size depends on the data
(``nonzero``, boolean-mask indexing, ``masked_select``, ``unique``) makes the CPU wait until
the GPU queue drains: a stall between kernels. CPU tensors never wait, but the same operations
are dispatched there, so they can be counted on CPU: :class:`HostSyncCounter` counts them at the
ATen level (a ``TorchDispatchMode``) plus the Python-level ``tolist`` / ``numpy`` reads, which
ATen does not see. The step is the tiny paper-shaped stack of ``benchmarks/train_step.py``
(stage 2: descriptor branch + LoRA, task ``ser_sed``) on clips of different lengths. A step
whose count grows with the batch size has a per-utterance sync.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from collections import Counter
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

REPO = Path(__file__).resolve().parents[1]

# ATen operations that need a device value on the host (or an output size that depends on data).
SYNC_OPS = {
    "aten._local_scalar_dense.default": "item() / int() / float() / bool() of a tensor",
    "aten.nonzero.default": "nonzero (also behind boolean-mask indexing)",
    "aten.nonzero_static.default": "nonzero_static",
    "aten.masked_select.default": "masked_select",
    "aten._unique2.default": "unique",
    "aten.unique_consecutive.default": "unique_consecutive",
    "aten.repeat_interleave.Tensor": "repeat_interleave with tensor repeats",
    "aten.equal.default": "torch.equal",
    "aten.is_nonzero.default": "truth value of a one-element tensor",
}


class HostSyncCounter(TorchDispatchMode):
    """Counts host syncs: ATen ops of :data:`SYNC_OPS`, ``aten.index`` / ``index_put`` with a
    boolean mask, and calls of ``Tensor.tolist`` / ``Tensor.numpy`` (patched while active)."""

    def __init__(self):
        super().__init__()
        self.counts: Counter = Counter()
        self._saved: dict = {}

    def __enter__(self):
        for name in ("tolist", "numpy"):
            original = getattr(torch.Tensor, name)
            self._saved[name] = original

            def counted(t, *a, _name=name, _orig=original, **kw):
                self.counts[f"Tensor.{_name}"] += 1
                return _orig(t, *a, **kw)

            setattr(torch.Tensor, name, counted)
        return super().__enter__()

    def __exit__(self, *exc):
        for name, original in self._saved.items():
            setattr(torch.Tensor, name, original)
        return super().__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        if name in SYNC_OPS:
            self.counts[name] += 1
        elif name.startswith(("aten.index.Tensor", "aten.index_put")):
            indices = args[1] if len(args) > 1 else ()
            if any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices):
                self.counts[f"{name} (boolean mask)"] += 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def tiny_step(batch: int, seed: int = 0):
    """A tiny stage-2 stack and a function running one forward + backward on ``batch`` clips."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import train_step as ts

    from explainable_ser.model.prompts import get_task

    cfg, _, _ = ts.experiment_config("tiny", "project")
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as tmp:
        model, _ = ts.build(cfg, "cpu", 600, Path(tmp))
    rng = random.Random(seed)
    lengths = [rng.randint(8000, 24000) for _ in range(batch)]
    wave, lens = torch.randn(batch, max(lengths)) * 0.1, torch.tensor(lengths)
    targets = [" ".join(f"w{j}" for j in range(rng.randint(4, 12))) for _ in range(batch)]
    task = get_task("ser_sed")

    def step():
        out = model.loss(wave, lens, task, targets, beta=cfg.training.beta, trained=["descriptor"], sample=True)
        out["loss"].backward()
        return out

    return model, step


def count(batch: int) -> dict:
    _, step = tiny_step(batch)
    step()  # first call: lazy initialisation is not the steady state
    with HostSyncCounter() as counter:
        step()
    return {"total": counter.total, "by_op": dict(sorted(counter.counts.items()))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", default="2,8", help="comma-separated batch sizes")
    ap.add_argument("--out", default="benchmarks/results/host_syncs.json")
    args = ap.parse_args(argv)
    res = {f"batch{b}": count(int(b)) for b in args.batches.split(",")}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
