"""Human evaluation: export a blinded sheet -> fill it (scripted raters) -> aggregate."""

from __future__ import annotations

import csv
import json

import pytest

from explainable_ser.analysis.rating import CRITERIA, SheetError, aggregate, export, read_sheet
from explainable_ser.human_eval import main

from conftest import save_tiny_instruct


@pytest.fixture(scope="module")
def two_systems(tmp_path_factory):
    """Two systems' predictions on a 6-clip SynthCraft test split, each in a run directory."""
    from data_modules.synthcraft import generate
    from explainable_ser.config import load_config, to_yaml

    tmp = tmp_path_factory.mktemp("heval")
    corpus = tmp / "corpus"
    generate(corpus, n_train=2, n_dev=1, n_test=6, seed=3, progress=False)
    from lhotse import CutSet

    from data_modules.records import manifest_path, record_of

    records = [record_of(c) for c in CutSet.from_file(manifest_path(corpus, "synthcraft", "test"))]
    systems = {}
    for name in ("captioner", "rationaliser"):
        run = tmp / name
        run.mkdir()
        (run / "config.yaml").write_text(to_yaml(load_config(["offline", f"data.corpora.0.dir={corpus}"])))
        rows = []
        for rec in records:
            row = {
                "id": rec["id"],
                "task": "ser_sed",
                "emotion": rec["emotion"],
                "caption": f"A {rec['attributes']['gender']} speaker.",
                "emotion_ref": rec["emotion"],
                "attributes_ref": rec["attributes"],
                "transcript_ref": rec["transcript"],
            }
            if name == "rationaliser":
                row["rationale"] = f"The voice sounds {rec['emotion']}."
            rows.append(row)
            rows.append({"id": rec["id"], "task": "asr", "transcript": rec["transcript"]})
        (run / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        systems[name] = run / "predictions.jsonl"
    return systems, [r["id"] for r in records]


def fill(sheet, out, key, rater, scores, blank_item=None):
    """A scripted rater: system -> rating for every criterion (one item left blank)."""
    with open(sheet, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        system = key["items"][r["item"]]["system"]
        for c in CRITERIA:
            r[c] = "" if r["item"] == blank_item else str(scores[system][c])
        r["rater"] = rater
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return out


def test_round_trip_export_fill_aggregate(two_systems, tmp_path):
    systems, ids = two_systems
    out = tmp_path / "round1"
    res = export(systems, out, n=5, seed=0)
    assert res["n_items"] == 10 and res["n_utterances"] == 5
    key_path = tmp_path / "round1.key.json"
    assert res["key"] == str(key_path) and not (out / "round1.key.json").exists()  # kept apart
    key = json.loads(key_path.read_text())
    sheet = (out / "sheet.csv").read_text()
    for word in ("captioner", "rationaliser", *ids):  # blinded: no system, no utterance id
        assert word not in sheet
    rows = list(csv.DictReader(open(out / "sheet.csv")))
    assert {r["audio"] for r in rows} == {f"audio/{p.name}" for p in (out / "audio").iterdir()}
    assert len(list((out / "audio").iterdir())) == 5
    by_system = {key["items"][r["item"]]["system"]: r["explanation"] for r in rows}
    assert by_system["rationaliser"].startswith("The voice sounds")  # auto: the rationale
    assert by_system["captioner"].startswith("A ")  # no rationale: the caption
    order = [key["items"][r["item"]]["system"] for r in rows]
    assert order != sorted(order) and order != sorted(order, reverse=True)  # shuffled, not grouped
    assert export(systems, tmp_path / "again", n=5, seed=0)["n_items"] == 10
    assert (tmp_path / "again" / "sheet.csv").read_text() == (out / "sheet.csv").read_text()  # seeded

    good = {c: 4 for c in CRITERIA}
    poor = {"plausibility": 2, "grounding": 1, "faithfulness": 3}
    scores = {"captioner": poor, "rationaliser": good}
    blank = next(r["item"] for r in rows if key["items"][r["item"]]["system"] == "captioner")
    a = fill(out / "sheet.csv", tmp_path / "a.csv", key, "ann", scores)
    b = fill(out / "sheet.csv", tmp_path / "b.csv", key, "bob", scores, blank_item=blank)
    summary = aggregate([a, b], key_path)["human"]
    assert summary["raters"] == ["ann", "bob"]
    rat, cap = summary["systems"]["rationaliser"], summary["systems"]["captioner"]
    assert rat["plausibility"]["mean"] == 4.0 and rat["plausibility"]["n_items"] == 5
    assert rat["plausibility"]["ci95"] == [4.0, 4.0]  # every item 4: no spread
    assert cap["grounding"]["mean"] == 1.0 and cap["grounding"]["n_ratings"] == 9
    assert cap["grounding"]["n_blank"] == 1
    assert summary["alpha"] == {c: 1.0 for c in CRITERIA}  # the raters agree everywhere

    # a disagreeing rater lowers alpha below 1 and moves the mean: (2 + 2 + 5) / 3 per item
    scores_c = {"captioner": {c: 5 for c in CRITERIA}, "rationaliser": {c: 1 for c in CRITERIA}}
    c = fill(out / "sheet.csv", tmp_path / "c.csv", key, "cat", scores_c)
    three = aggregate([a, b, c], key_path)["human"]
    assert three["alpha"]["plausibility"] < 0.5
    assert three["systems"]["rationaliser"]["plausibility"]["mean"] == pytest.approx(3.0)

    # the judge's sheets are kept apart from the human figures
    auto = fill(out / "sheet.csv", tmp_path / "judge.csv", key, "automatic: llm-judge x", scores_c)
    mixed = aggregate([a, b, auto], key_path)
    assert mixed["human"]["raters"] == ["ann", "bob"]
    assert mixed["automatic"]["automatic: llm-judge x"]["systems"]["captioner"]["grounding"]["mean"] == 5.0


def test_bad_cells_and_reuse_are_named(two_systems, tmp_path, capsys):
    systems, _ = two_systems
    export(systems, tmp_path / "s", n=2, seed=1)
    key = json.loads((tmp_path / "s.key.json").read_text())
    rows = list(csv.DictReader(open(tmp_path / "s" / "sheet.csv")))
    rows[1]["grounding"] = "6"
    bad = tmp_path / "bad.csv"
    with open(bad, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with pytest.raises(SheetError, match=r"bad.csv line 3: grounding is '6', not an integer from 1 to 5"):
        read_sheet(bad, key)
    assert (
        main(
            [
                "export",
                "--predictions",
                *(f"{k}={v}" for k, v in systems.items()),
                "--n",
                "2",
                "--out",
                str(tmp_path / "s"),
            ]
        )
        == 2
    )
    assert "exists: pick a new folder" in capsys.readouterr().err
    assert main(["export", "--predictions", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "t")]) == 2
    assert "predictions file not found" in capsys.readouterr().err


def test_llm_judge_fills_the_sheet_as_an_automatic_rater(two_systems, tmp_path, capsys):
    from explainable_ser.analysis.rating import judge_prompt
    from explainable_ser.model.teacher import InstructLM

    systems, _ = two_systems
    export(systems, tmp_path / "s", n=3, seed=0)
    key_path = tmp_path / "s.key.json"
    judge_dir = save_tiny_instruct(tmp_path / "judge", "score 1 2 3 4 5 the voice sounds speaker a")
    out = tmp_path / "judged.csv"
    assert (
        main(
            [
                "judge",
                str(tmp_path / "s" / "sheet.csv"),
                "--key",
                str(key_path),
                "--judge",
                str(judge_dir),
                "--out",
                str(out),
                "--batch-size",
                "4",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert "6 rows rated by automatic: llm-judge" in capsys.readouterr().err
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 6 and {r["rater"] for r in rows} == {f"automatic: llm-judge {judge_dir} (rubric v2)"}
    key = json.loads(key_path.read_text())
    lm = InstructLM.load(str(judge_dir), device="cpu")
    for r in rows[:2]:  # each cell is the judge's most probable digit for that row's prompt
        for c in CRITERIA:
            probs = lm.choose([judge_prompt(lm, c, r, key["items"][r["item"]])], ["1", "2", "3", "4", "5"])[0]
            assert r[c] == max(probs, key=probs.get)
    summary = aggregate([out], key_path)
    assert summary["human"] is None  # no human sheet given
    auto = summary["automatic"][rows[0]["rater"]]["systems"]
    assert set(auto) == {"captioner", "rationaliser"} and auto["captioner"]["grounding"]["n_items"] == 3

    # a judge whose vocabulary has no token for the digits cannot score: the error names it
    no_digits = save_tiny_instruct(tmp_path / "nodigits", "score the voice sounds")
    assert (
        main(
            [
                "judge",
                str(tmp_path / "s" / "sheet.csv"),
                "--key",
                str(key_path),
                "--judge",
                str(no_digits),
                "--out",
                str(tmp_path / "x.csv"),
                "--device",
                "cpu",
            ]
        )
        == 2
    )
    assert f"choice '1' has no token of its own in {no_digits}'s vocabulary" in capsys.readouterr().err


EVIDENCE = {
    "pitch": {
        "direction": "high",
        "value": 240.0,
        "unit": "Hz",
        "reference": 180.0,
        "deviation": 5.0,
        "delta_unit": "semitones",
    },
    "volume": {
        "direction": "high",
        "value": -15.0,
        "unit": "LUFS",
        "reference": -20.0,
        "deviation": 5.0,
        "delta_unit": "dB",
    },
}


def test_the_sheet_shows_measurements_and_ratings_meet_the_measurement_check(two_systems, tmp_path):
    """Each row shows the clip's measurements beside the explanation; a rater's grounding scores
    are compared with the measurement check of the same items."""
    import shutil

    systems, ids = two_systems
    run = tmp_path / "evidential"
    shutil.copytree(systems["rationaliser"].parent, run)
    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    for i, row in enumerate(r for r in rows if r["task"] == "ser_sed"):
        row["attributes_ref"] = {**row["attributes_ref"], "evidence": EVIDENCE}
        row["rationale"] = "A high pitch and a loud voice." if i % 2 else "A low pitch and a loud voice."
    (run / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "sheet"
    export({"evidential": run / "predictions.jsonl"}, out, n=6, seed=0, explanation="rationale")
    key = json.loads((tmp_path / "sheet.key.json").read_text())
    with open(out / "sheet.csv", newline="") as f:
        sheet = list(csv.DictReader(f))
    assert {r["measurements"] for r in sheet} == {
        "pitch 240 Hz (usual 180 Hz: high); volume -15 LUFS (+5.0 dB from usual: high)"
    }
    # a rater who gives 5 where every cue is confirmed and 2 where one is not
    for r in sheet:
        verdicts = [c["verdict"] for c in key["items"][r["item"]]["cue_check"]]
        r.update({c: "3" for c in CRITERIA}, grounding="5" if set(verdicts) == {"right"} else "2", rater="ann")
    with open(tmp_path / "ann.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(sheet[0]))
        w.writeheader()
        w.writerows(sheet)
    got = aggregate([tmp_path / "ann.csv"], tmp_path / "sheet.key.json")["agreement_with_measurements"]["ann"]
    assert got["n_items"] == 6 and got["binary_agreement"] == 1.0 and got["spearman_rho"] == pytest.approx(1.0)
    assert got["measured_all_confirmed"] == 0.5
