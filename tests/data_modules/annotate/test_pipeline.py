"""The annotator over a manifest: the CLI writes manifests whose captions are ser_sed targets,
corpus captions are kept unless overwritten, and annotated attributes serve as
attribute-accuracy references."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from lhotse import CutSet

from data_modules.annotate.bins import BinningConfig, assign_bins, compute_stats
from data_modules.annotate.cli import main
from data_modules.annotate.pipeline import annotate_manifest
from data_modules.captions import render_caption
from data_modules.datamodule import CorpusSpec, DataConfig, SpeechDataModule
from data_modules.records import make_cut, manifest_path, record_of
from explainable_ser.evaluation.emotion import attribute_accuracy
from explainable_ser.model.prompts import caption_attributes, get_task, render_target

from conftest import harmonic

SR = 16000


# --------------------------------------------------------------- the CLI and ser_sed targets
def _write(path: Path, audio: np.ndarray) -> int:
    sf.write(path, np.clip(audio, -1, 32767 / 32768), SR, subtype="PCM_16", format="FLAC")
    return audio.size


@pytest.fixture(scope="module")
def captionless(synthcraft_measured, tmp_path_factory):
    """An IEMOCAP-like corpus ``fakecorp``: 12 SynthCraft clips stripped of caption, attributes
    and gender, plus a silent, a 50 ms and a clipped clip."""
    cuts = synthcraft_measured[0][:12]
    root = tmp_path_factory.mktemp("fakecorp")
    new = []
    for cut in cuts:
        rec = record_of(cut)
        new.append(
            make_cut(
                cut.id,
                cut.recording.sources[0].source,
                sampling_rate=SR,
                num_samples=cut.recording.num_samples,
                corpus="fakecorp",
                split="test",
                transcript=rec["transcript"],
                emotion=rec["emotion"],
                speaker=rec["speaker"],
            )
        )
    bad = {
        "bad-silent": np.zeros(SR, np.float32),
        "bad-short": harmonic(150, 0.05),
        "bad-clipped": np.clip(harmonic(150, 1.5, amp=4.0), -1, 1),
    }
    for utt_id, audio in bad.items():
        n = _write(root / f"{utt_id}.flac", audio)
        new.append(
            make_cut(
                utt_id,
                root / f"{utt_id}.flac",
                sampling_rate=SR,
                num_samples=n,
                corpus="fakecorp",
                split="test",
                transcript="the dog slept",
                emotion="neutral",
                speaker="bad-speaker",
            )
        )
    path = manifest_path(root, "fakecorp", "test")
    CutSet.from_cuts(new).to_file(path)
    return path


def test_cli_annotates_a_corpus_without_captions(captionless, tmp_path, capsys):
    out = manifest_path(tmp_path / "annotated", "fakecorp", "test")
    stats_path, report_path = tmp_path / "stats.json", tmp_path / "report.json"
    rc = main(
        [
            "--manifest",
            str(captionless),
            "--out",
            str(out),
            "--save-stats",
            str(stats_path),
            "--workers",
            "2",
            "--no-progress",
            "--report",
            str(report_path),
            "--min-speaker-utterances",
            "2",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "annotated 15 utterances" in printed and "utterances/s" in printed

    records = {c.id: (record_of(c), c.supervisions[0].custom) for c in CutSet.from_file(out)}
    assert len(records) == 15
    for utt_id, (rec, custom) in records.items():
        measured = rec["attributes"]["measured"]
        if utt_id.startswith("bad-"):
            continue
        assert custom["caption_source"] == "annotator"
        assert rec["caption"] == custom["annotated_caption"]
        parsed = caption_attributes(rec["caption"])
        for key in ("gender", "pitch", "volume"):
            assert parsed[key] == rec["attributes"][key] == measured["bins"][key]
        # Not caption_attributes for the speed: its pattern takes the first "normal" before
        # "pace", e.g. "normal pitch ... at a slow pace" reads back as a normal pace.
        assert f"at a {measured['bins']['speed']} pace" in rec["caption"]
        assert rec["attributes"]["speed"] == measured["bins"]["speed"]
        assert measured["gender_source"] in ("speaker_f0", "utterance_f0")
        assert measured["null_reasons"] == {}

    silent, short, clipped = (records[f"bad-{k}"][0] for k in ("silent", "short", "clipped"))
    for rec, reason in ((silent, "silent_audio"), (short, "too_short")):
        assert rec["caption"] is None
        assert rec["attributes"]["measured"]["null_reasons"] == dict.fromkeys(
            ("pitch", "volume", "speed", "gender"), reason
        )
        assert all(rec["attributes"][k] is None for k in ("pitch", "volume", "speed"))
    assert clipped["attributes"]["volume"] is None and clipped["caption"] is None
    assert clipped["attributes"]["measured"]["null_reasons"] == {"volume": "clipped_audio"}
    assert clipped["attributes"]["pitch"] is not None

    report = json.loads(report_path.read_text())
    assert report["utterances"] == 15 and report["fully_annotated"] == 12
    assert report["null"]["volume"] == {"silent_audio": 1, "too_short": 1, "clipped_audio": 1}
    assert report["null"]["pitch"] == {"silent_audio": 1, "too_short": 1}
    assert report["captions"] == {"annotator": 12, "None": 3}
    assert report["utterances_per_second"] > 0

    # The saved stats bin another run on the same scale.
    again = tmp_path / "again" / "fakecorp_cuts_test.jsonl.gz"
    assert (
        main(
            [
                "--manifest",
                str(captionless),
                "--out",
                str(again),
                "--reference-stats",
                str(stats_path),
                "--workers",
                "1",
                "--no-progress",
                "--min-speaker-utterances",
                "2",
            ]
        )
        == 0
    )
    for cut in CutSet.from_file(again):
        assert record_of(cut)["attributes"]["measured"]["bins"] == records[cut.id][0]["attributes"]["measured"]["bins"]


def test_annotated_directory_gives_ser_sed_targets(captionless, tmp_path):
    """A CorpusSpec pointing at the annotated directory is all it takes."""
    out_dir = tmp_path / "annotated"
    annotate_manifest(
        captionless,
        manifest_path(out_dir, "fakecorp", "test"),
        workers=1,
        progress=False,
        cfg=BinningConfig(min_speaker_utterances=2),
    )
    task = get_task("ser_sed")

    def targets(directory):
        cfg = DataConfig(
            corpora=[
                CorpusSpec(name="fakecorp", dir=str(directory), train_split=None, val_split=None, test_split="test")
            ]
        )
        dm = SpeechDataModule(cfg)
        out, skipped = {}, []
        for batch in dm.test_dataloader():
            out.update({r["id"]: render_target(task, r) for r in batch["records"]})
            skipped += [s["reason"] for s in batch["skipped"]]
        return out, sorted(skipped)

    before, _ = targets(captionless.parent)
    assert all(t is None for t in before.values())  # no caption: no ser_sed target
    after, skipped = targets(out_dir)
    assert skipped == ["silent_audio", "too_short"]  # the data module's own checks
    assert after.pop("bad-clipped") is None  # no volume, so no caption
    assert len(after) == 12
    for target in after.values():
        assert target.startswith("Description: ") and "\nEmotion: " in target


def test_corpus_captions_are_kept_unless_overwritten(synthcraft_measured, tmp_path):
    cuts, measured, metas, _ = synthcraft_measured
    stats = compute_stats(measured, metas)
    src = tmp_path / "synthcraft_cuts_dev.jsonl.gz"
    CutSet.from_cuts(cuts[:6]).to_file(src)
    for overwrite in (False, True):
        out = tmp_path / str(overwrite) / "synthcraft_cuts_dev.jsonl.gz"
        annotate_manifest(src, out, reference_stats=stats, overwrite_captions=overwrite, workers=1, progress=False)
        for old, new in zip(cuts[:6], CutSet.from_file(out)):
            before, after = record_of(old), record_of(new)
            custom = new.supervisions[0].custom
            bins = after["attributes"]["measured"]["bins"]
            assert caption_attributes(custom["annotated_caption"])["pitch"] == bins["pitch"]
            assert after["attributes"]["gender"] == before["attributes"]["gender"]  # corpus's
            assert after["attributes"]["emphasis"] == before["attributes"]["emphasis"]
            assert f'"{before["attributes"]["emphasis"]}"' in custom["annotated_caption"]
            if overwrite:
                assert after["caption"] == custom["annotated_caption"]
                assert custom["caption_source"] == "annotator"
                assert all(after["attributes"][k] == bins[k] for k in ("pitch", "volume", "speed"))
            else:
                assert after["caption"] == before["caption"]
                assert custom["caption_source"] == "corpus"
                assert all(after["attributes"][k] == before["attributes"][k] for k in ("pitch", "volume", "speed"))


def test_measured_attributes_are_attribute_accuracy_references(synthcraft_measured):
    """attribute_accuracy takes reference dicts: annotated attributes are such dicts, and a
    null (unmeasurable) attribute is left out rather than scored."""
    _, measured, metas, _ = synthcraft_measured
    assigned = assign_bins(measured, metas, compute_stats(measured, metas), BinningConfig())
    refs = [dict(a["bins"]) for a in assigned[:10]]
    refs[0]["volume"] = None  # e.g. clipped audio
    hyps = [caption_attributes(render_caption({**r, "volume": r["volume"] or "high"}, template=1)) for r in refs]
    hyps[1]["pitch"] = "low" if refs[1]["pitch"] != "low" else "high"
    result = attribute_accuracy(refs, hyps)
    assert result["n"] == {"gender": 10, "pitch": 10, "volume": 9, "speed": 10, "emphasis": 0}
    assert result["accuracy"]["volume"] == 1.0 and result["accuracy"]["pitch"] == 0.9
    assert result["accuracy"]["emphasis"] is None
