"""Rationales as data: the teacher loop (a tiny random instruct model), resume, checks, counts."""

from __future__ import annotations

import json

import pytest
from lhotse import CutSet

from data_modules.rationales import check, main
from data_modules.records import make_cut, manifest_path, read_progress, record_of

from conftest import save_tiny_instruct

REC = {
    "id": "u1",
    "emotion": "sad",
    "attributes": {"gender": "male", "pitch": "low", "volume": "low", "speed": "slow", "emphasis": "door"},
}


def test_contradicting_cues_and_emotions_are_flagged():
    assert check("His low, quiet voice and slow pace sound sad.", REC, ["sad", "happy"]) == []
    flags = check("She speaks with a high pitch and sounds cheerful.", REC, ["neutral", "happy", "sad"])
    assert flags == [
        "gender: says female, the record says male",
        "pitch: says high, the record says low",
        "emotion: names happy, the label is sad",
    ]
    assert check('emphasizing the word "window"', REC, ["sad"]) == ["emphasis: says 'window', the record says 'door'"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A tiny random instruct model directory: what --teacher takes, like any hub checkpoint."""
    return save_tiny_instruct(
        tmp_path_factory.mktemp("teacher"),
        "the speaker sounds sad happy calm because her voice is low high slow fast",
        max_positions=512,
    )


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    from data_modules.synthcraft import generate

    corpus = tmp_path_factory.mktemp("rcorpus")
    generate(corpus, n_train=6, n_dev=1, n_test=1, seed=5, progress=False)
    cuts = list(CutSet.from_file(manifest_path(corpus, "synthcraft", "train")))
    src = cuts[0].recording
    extra = make_cut(
        "no-label",
        src.sources[0].source,
        sampling_rate=src.sampling_rate,
        num_samples=src.num_samples,
        corpus="synthcraft",
        split="train",
        transcript="hello",
    )
    path = corpus / "with_unlabelled.jsonl.gz"
    CutSet.from_cuts([*cuts, extra]).to_file(path)
    return path


def run(manifest, out, teacher, *extra):
    return main(
        [
            "--manifest",
            str(manifest),
            "--out",
            str(out),
            "--teacher",
            str(teacher),
            "--batch-size",
            "4",
            "--max-new-tokens",
            "12",
            "--no-progress",
            *extra,
        ]
    )


def test_generate_resume_and_report(manifest, teacher, tmp_path):
    out = tmp_path / "out.jsonl.gz"
    assert run(manifest, out, teacher, "--flagged", "keep") == 0
    report = json.loads((tmp_path / "out.jsonl.gz.report.json").read_text())
    assert report["n_records"] == 7 and report["failures"].get("no_emotion") == 1
    assert report["n_generated_this_run"] == 6
    assert report["kept"] + report["flagged"] + report["failures"].get("empty_rationale", 0) == 6
    assert (tmp_path / "out.jsonl.gz.prompt.txt").read_text().startswith("You explain why")
    first = {r["id"]: r for r in map(record_of, CutSet.from_file(out))}
    assert first["no-label"]["rationale"] is None
    failures = [json.loads(x) for x in (tmp_path / "out.jsonl.gz.failures.jsonl").read_text().splitlines()]
    assert {"id": "no-label", "reason": "no_emotion"} in failures

    # an interruption: the last three rationales lost, the last kept line cut in half
    progress = tmp_path / "out.jsonl.gz.progress.jsonl"
    lines = progress.read_text().splitlines(keepends=True)
    progress.write_text("".join(lines[:3]) + lines[3][:10])
    assert len(read_progress(progress)) == 3
    assert run(manifest, out, teacher, "--flagged", "keep") == 0
    report = json.loads((tmp_path / "out.jsonl.gz.report.json").read_text())
    assert report["n_generated_this_run"] == 3  # only the missing ones
    again = {r["id"]: r for r in map(record_of, CutSet.from_file(out))}
    assert {k: r["rationale"] for k, r in again.items()} == {k: r["rationale"] for k, r in first.items()}


def test_flagged_rationales_are_dropped_by_default(manifest, teacher, tmp_path):
    out = tmp_path / "drop.jsonl.gz"
    assert run(manifest, out, teacher) == 0
    report = json.loads((tmp_path / "drop.jsonl.gz.report.json").read_text())
    cuts = list(CutSet.from_file(out))
    rejected = [c for c in cuts if "rationale_rejected" in (c.supervisions[0].custom or {})]
    assert len(rejected) == report["flagged"]
    assert all(record_of(c)["rationale"] is None for c in rejected)


def test_a_missing_manifest_and_a_bad_prompt_are_named(tmp_path, manifest, teacher, capsys):
    assert main(["--manifest", str(tmp_path / "nope.jsonl.gz"), "--out", str(tmp_path / "o")]) == 2
    assert "manifest not found" in capsys.readouterr().err
    bad = tmp_path / "prompt.txt"
    bad.write_text("system line\nno placeholder here")
    assert run(manifest, tmp_path / "o.jsonl.gz", teacher, "--prompt-file", str(bad)) == 2
    assert "must contain {emotion}" in capsys.readouterr().err
