"""A long recording whose every piece's truth is known: SynthCraft clips joined with pauses,
explained by ``predict`` as a user would, each piece scored against its clip.

    python benchmarks/long_recording.py --ckpt runs/demo/stage2/final.ckpt [--seconds 120]
        [--clips data/synthcraft] [--own runs/demo/predictions.jsonl]
        [--out benchmarks/results/long_recording.json]

Takes test clips in order until the recording lasts ``--seconds``, with a pause of 0.6 to 1.2 s
(seeded) before each and silence at the end, writes it as a WAV, runs
``python -m explainable_ser.predict --ckpt ... --out ...`` on it (a subprocess, timed), and
writes per piece: its start and end against the clip's, the emotion against the clip's label
and, given ``--own`` (a run's ``predictions.jsonl`` on the same clips), against the model's
own answer for the clip alone; plus totals (pieces found, boundaries within 0.15 s, emotion
accuracy, agreement with the clip's own answers, wall seconds).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from explainable_ser.training import provenance


def build_recording(clips_dir: Path, seconds: float, seed: int = 0):
    """``(audio, truth)``: test clips joined with pauses until ``seconds``; truth per clip."""
    import soundfile as sf
    from lhotse import CutSet

    cuts = CutSet.from_file(clips_dir / "synthcraft_cuts_test.jsonl.gz")
    rng = np.random.default_rng(seed)
    sr, parts, truth, pos = 16000, [], [], 0
    for cut in cuts:
        if pos / sr >= seconds:
            break
        audio, rate = sf.read(cut.recording.sources[0].source, dtype="float32")
        assert rate == sr, f"{cut.id}: {rate} Hz"
        gap = np.zeros(int(rng.uniform(0.6, 1.2) * sr), dtype=np.float32)
        parts += [gap, audio]
        sup = cut.supervisions[0]
        truth.append(
            {
                "id": cut.id,
                "start": (pos + gap.size) / sr,
                "end": (pos + gap.size + audio.size) / sr,
                "emotion": sup.custom.get("emotion") if sup.custom else None,
            }
        )
        pos += gap.size + audio.size
    parts.append(np.zeros(sr, dtype=np.float32))
    return np.concatenate(parts), truth


def score(pieces: list[dict], truth: list[dict], own: dict[str, dict]) -> list[dict]:
    """Each clip with the piece that overlaps it most (or none)."""
    out = []
    for t in truth:
        best = max(pieces, key=lambda p: min(p["end"], t["end"]) - max(p["start"], t["start"]), default=None)
        overlap = 0.0 if best is None else min(best["end"], t["end"]) - max(best["start"], t["start"])
        row = {"id": t["id"], "start": round(t["start"], 2), "end": round(t["end"], 2), "emotion_ref": t["emotion"]}
        if best is not None and overlap > 0:
            row.update(
                piece=best["piece"],
                piece_start=best["start"],
                piece_end=best["end"],
                boundary_error=round(max(abs(best["start"] - t["start"]), abs(best["end"] - t["end"])), 3),
                emotion=best["emotion"],
                caption=best.get("caption"),
            )
            if t["id"] in own:
                row["emotion_alone"] = own[t["id"]].get("emotion")
                row["caption_alone"] = own[t["id"]].get("caption")
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", required=True, help="a trained run's checkpoint, stage or run directory")
    ap.add_argument("--clips", default="data/synthcraft", help="a SynthCraft directory (its test cuts)")
    ap.add_argument("--seconds", type=float, default=120.0, help="length of the recording (default 120)")
    ap.add_argument("--own", default=None, help="predictions.jsonl of the run on the same clips (optional)")
    ap.add_argument("--work", default="runs/long_recording", help="where the WAV and predict's output go")
    ap.add_argument("--out", default="benchmarks/results/long_recording.json")
    ap.add_argument("overrides", nargs="*", help="key=value overrides for predict")
    args = ap.parse_args(argv)
    import soundfile as sf

    info = provenance.start()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    audio, truth = build_recording(Path(args.clips), args.seconds)
    wav, lines = work / "recording.wav", work / "predict.jsonl"
    sf.write(str(wav), audio, 16000)
    lines.unlink(missing_ok=True)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "explainable_ser.predict",
            "--ckpt",
            args.ckpt,
            str(wav),
            *args.overrides,
            "--out",
            str(lines),
            "--no-progress",
            "--language-id",
            "off",
        ],
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
        return proc.returncode
    rows = [json.loads(line) for line in lines.read_text().splitlines()]
    pieces = [r for r in rows if "recording" in r]
    summary = next(r for r in rows if "file" in r)
    own = {}
    if args.own:
        own = {
            r["id"]: r for r in map(json.loads, Path(args.own).read_text().splitlines()) if r.get("task") == "ser_sed"
        }
    clips = score(pieces, truth, own)
    found = [c for c in clips if "piece" in c]
    one_each = len({c["piece"] for c in found}) == len(found) == len(pieces)
    agree = [c for c in found if "emotion_alone" in c]
    res = {
        **provenance.finish(info),
        "ckpt": args.ckpt,
        "recording_seconds": round(audio.size / 16000, 2),
        "n_clips": len(truth),
        "n_pieces": len(pieces),
        "one_piece_per_clip": one_each,
        "boundaries_within_0.15s": sum(c["boundary_error"] <= 0.15 for c in found),
        "emotion_accuracy": round(sum(c["emotion"] == c["emotion_ref"] for c in found) / max(1, len(found)), 4),
        "emotion_equal_to_alone": (
            round(sum(c["emotion"] == c["emotion_alone"] for c in agree) / len(agree), 4) if agree else None
        ),
        "caption_equal_to_alone": (
            round(sum(c["caption"] == c["caption_alone"] for c in agree) / len(agree), 4) if agree else None
        ),
        "predict_wall_seconds": round(wall, 1),
        "recording": {k: v for k, v in summary.items() if k != "pieces"},
        "clips": clips,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(
        f"{res['recording_seconds']} s, {len(truth)} clips -> {len(pieces)} pieces "
        f"({res['boundaries_within_0.15s']} boundaries within 0.15 s); emotion accuracy "
        f"{res['emotion_accuracy']}, equal to the clip alone {res['emotion_equal_to_alone']}; "
        f"predict {wall:.1f} s -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
