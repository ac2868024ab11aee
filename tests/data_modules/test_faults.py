"""Fault injection: bad input at run time is skipped with a counted, logged reason and every
good utterance is still trained on.

One manifest mixes a tiny SynthCraft's training clips with 17 kinds of bad input: 14 the data
pipeline skips (corrupt, truncated FLAC/WAV, empty, silent, NaN, inf, too long, too short, a
declared rate that is not the file's, a missing file, invalid UTF-8, a shell-command source, no
supervision) and 3 a task skips (empty transcript, unknown emotion label, a target longer than
the LLM's context), plus clips at other, correctly declared rates (8 kHz, 44.1 kHz, stereo),
which must be resampled and kept. A real two-stage ``fit`` runs over it; then every bad id
must be in ``skipped.jsonl`` with its reason, the counts in TensorBoard (``skipped/<reason>``),
and every good id in a batch that was trained on.

Wrong sample rate: a clip whose manifest declares its true rate (8 kHz, 44.1 kHz) is resampled
to 16 kHz and trained on; a clip whose manifest declares another rate than its file has is
skipped (``audio_decode_failed: sample_rate_mismatch``), since its duration and offsets cannot
be trusted either.

Bad UTF-8 reaches a record as lone surrogates (``\\udcff``: how Python decodes an undecodable
byte with ``surrogateescape``, and what a JSON manifest line carries when a tool escaped such
bytes); the record is skipped (``invalid_utf8_text``) rather than crashing the tokenizer. Raw
undecodable bytes in a ``.jsonl.gz`` line are the manifest reader's business:
:func:`test_raw_invalid_utf8_in_a_manifest_line_is_not_fatal`.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter, defaultdict
from pathlib import Path

import lightning as L
import numpy as np
import soundfile as sf
import soxr
from lhotse import CutSet

from data_modules.batches import SpeechBatchDataset
from data_modules.config import DataConfig
from data_modules.records import make_cut, manifest_path
from data_modules.synthcraft import generate

from conftest import TINY_LLM

SR = 16000
CORPUS = "faulty"

# id -> the reason it must be skipped with (a reason ending in ":" is a prefix). All are
# skipped by the data pipeline before the model sees them, in every stage.
BAD_AUDIO = {
    "bad-corrupt": "audio_decode_failed:",  # garbled FLAC frames
    "bad-truncated-flac": "audio_decode_failed:",  # FLAC cut to a third
    "bad-truncated-wav": "audio_decode_failed: truncated",  # WAV with half its data
    "bad-empty": "empty_audio",  # 0-sample WAV
    "bad-silent": "silent_audio",  # all zeros
    "bad-nan": "non_finite_audio",  # float WAV with NaNs
    "bad-inf": "non_finite_audio",  # float WAV with an inf
    "bad-too-long": "too_long",  # 60 s > data.max_clip_seconds
    "bad-too-short": "too_short",  # 0.1 s < data.min_clip_seconds
    "bad-rate-mismatch": "audio_decode_failed: sample_rate_mismatch",  # 44.1 kHz file, 16 kHz declared
    "bad-missing-file": "audio_decode_failed: missing_file",  # no such file
    "bad-utf8": "invalid_utf8_text",  # transcript with \udcff
    "bad-shell-command": "unsafe_audio_source",  # lhotse "command" source
    "bad-no-supervision": "missing_supervision",  # manifest line without a supervision
}
# Usable audio, unusable for one task: skipped for that task only, trained on for the other.
TASK_SKIPS = {
    "task-empty-transcript": ("stage1", "missing_field_for_asr"),
    "task-unknown-emotion": ("stage2", "unknown_emotion_for_ser_sed"),
    "task-overlong-transcript": ("stage1", "sequence_too_long_for_asr"),  # > the LLM's context
}
# Good clips at other rates (declared correctly): resampled, trained on.
RESAMPLED = ("good-8khz", "good-44khz", "good-stereo")
PWNED = "pwned-by-manifest"  # the shell command source would create this file


def _matches(reason: str, expected: str) -> bool:
    return reason.startswith(expected) if expected.endswith(":") else reason == expected


def build_faulty_corpus(root: Path) -> dict:
    """SynthCraft clips + the bad ones, as the manifests of corpus ``faulty`` in ``root/faulty``.

    Returns ``{"dir", "good" (trained-on ids), "bad" (id -> reason)}``.
    """
    sc = root / "synthcraft"
    generate(sc, n_train=24, n_dev=6, n_test=6, seed=3, progress=False)
    good_cuts = list(CutSet.from_file(manifest_path(sc, "synthcraft", "train")))
    out, audio = root / CORPUS, root / CORPUS / "audio"
    audio.mkdir(parents=True)
    ref = good_cuts[0]
    src = Path(ref.recording.sources[0].source)
    wave, _ = sf.read(src, dtype="float32")
    n = len(wave)
    rec = {
        "transcript": ref.supervisions[0].text,
        "caption": ref.supervisions[0].custom["caption"],
        "emotion": ref.supervisions[0].custom["emotion"],
        "corpus": CORPUS,
        "split": "train",
    }
    cuts = []

    def add(utt_id, path, sr=SR, num_samples=n, **fields):
        cuts.append(make_cut(utt_id, path, sampling_rate=sr, num_samples=num_samples, **{**rec, **fields}))
        return cuts[-1]

    flac = src.read_bytes()
    garbled = bytearray(flac)
    for k in range(200, len(garbled), 7):
        garbled[k] = (garbled[k] * 31 + 7) % 256
    (audio / "corrupt.flac").write_bytes(bytes(garbled))
    add("bad-corrupt", audio / "corrupt.flac")
    (audio / "truncated.flac").write_bytes(flac[: len(flac) // 3])
    add("bad-truncated-flac", audio / "truncated.flac")
    sf.write(audio / "truncated.wav", wave, SR)
    data = (audio / "truncated.wav").read_bytes()
    (audio / "truncated.wav").write_bytes(data[: len(data) // 2])
    add("bad-truncated-wav", audio / "truncated.wav")
    sf.write(audio / "empty.wav", np.zeros(0, np.float32), SR)
    add("bad-empty", audio / "empty.wav", num_samples=0)
    sf.write(audio / "silent.wav", np.zeros(n, np.float32), SR)
    add("bad-silent", audio / "silent.wav")
    nan = wave.copy()
    nan[1000:1100] = np.nan
    sf.write(audio / "nan.wav", nan, SR, subtype="FLOAT")
    add("bad-nan", audio / "nan.wav")
    inf = wave.copy()
    inf[500] = np.inf
    sf.write(audio / "inf.wav", inf, SR, subtype="FLOAT")
    add("bad-inf", audio / "inf.wav")
    long = np.tile(wave, 60 * SR // n + 1)[: 60 * SR]
    sf.write(audio / "long.wav", long, SR)
    add("bad-too-long", audio / "long.wav", num_samples=len(long))
    sf.write(audio / "short.wav", wave[: SR // 10], SR)
    add("bad-too-short", audio / "short.wav", num_samples=SR // 10)
    w44 = soxr.resample(wave, SR, 44100)
    sf.write(audio / "44khz.wav", w44, 44100)
    add("bad-rate-mismatch", audio / "44khz.wav")  # declared 16 kHz, n samples
    add("bad-missing-file", audio / "does-not-exist.flac")
    add("bad-utf8", src, transcript="the dog SURROGATE found a ball")
    cmd = add("bad-shell-command", src)
    cmd.recording.sources[0].type = "command"
    cmd.recording.sources[0].source = f"touch {root / PWNED}; cat {src}"
    add("bad-no-supervision", src).supervisions = []

    add("task-empty-transcript", src, transcript="")
    add("task-unknown-emotion", src, emotion="bored")
    add("task-overlong-transcript", src, transcript="la " * 3000)
    add("good-44khz", audio / "44khz.wav", sr=44100, num_samples=len(w44))
    w8 = soxr.resample(wave, SR, 8000)
    sf.write(audio / "8khz.wav", w8, 8000)
    add("good-8khz", audio / "8khz.wav", sr=8000, num_samples=len(w8))
    sf.write(audio / "stereo.wav", np.stack([wave, 0.5 * wave], axis=1), SR)
    add("good-stereo", audio / "stereo.wav")

    mixed = good_cuts + cuts
    np.random.default_rng(0).shuffle(mixed)
    # Written by hand: lhotse cannot write a lone surrogate, a tool escaping undecodable bytes
    # (json.dumps with ensure_ascii) can; "SURROGATE" becomes the JSON escape \udcff.
    with gzip.open(manifest_path(out, CORPUS, "train"), "wt", encoding="utf-8") as f:
        for cut in mixed:
            f.write(json.dumps(cut.to_dict()).replace("SURROGATE", "\\udcff") + "\n")
    CutSet.from_file(manifest_path(sc, "synthcraft", "dev")).to_file(manifest_path(out, CORPUS, "dev"))
    good = {c.id for c in good_cuts} | set(RESAMPLED) | set(TASK_SKIPS)
    return {"dir": out, "good": good, "bad": dict(BAD_AUDIO), "root": root}


def test_dataset_skips_each_kind_with_its_reason(tmp_path):
    """The collation step alone (fast): every bad kind skipped with its reason, the rest kept."""
    corpus = build_faulty_corpus(tmp_path)
    cuts = CutSet.from_file(manifest_path(corpus["dir"], CORPUS, "train"))
    batch = SpeechBatchDataset(DataConfig())[cuts]
    skipped = {s["id"]: s["reason"] for s in batch["skipped"]}
    assert set(skipped) == set(BAD_AUDIO), "exactly the bad clips are skipped"
    for utt_id, expected in BAD_AUDIO.items():
        assert _matches(skipped[utt_id], expected), (utt_id, skipped[utt_id])
    assert set(batch["ids"]) == corpus["good"]
    lens = dict(zip(batch["ids"], batch["wave_lens"].tolist()))
    n = lens["good-stereo"]
    assert abs(lens["good-8khz"] - n) <= 2 and abs(lens["good-44khz"] - n) <= 2, (
        "clips at other rates are resampled to 16 kHz"
    )
    assert not (tmp_path / PWNED).exists(), "a manifest's shell command is never run"


def test_unsafe_sources_are_refused_before_decoding(tmp_path):
    ds = SpeechBatchDataset(DataConfig())

    def cut(path, kind="file"):
        c = make_cut("u", path, sampling_rate=SR, num_samples=SR, corpus="t", split="x", transcript="a b")
        c.recording.sources[0].type = kind
        return c

    marker = tmp_path / "ran"
    assert ds.load(cut(f"touch {marker}", "command")) == (None, "unsafe_audio_source")
    assert ds.load(cut(f"pipe:touch {marker}", "url")) == (None, "unsafe_audio_source")
    # lhotse reads .sph through `sph2pipe ... PATH` with shell=True (and legacy .opus via ffmpeg)
    assert ds.load(cut(f"/x/a;touch {marker};.sph")) == (None, "unsafe_audio_source")
    assert ds.load(cut(f"/x/a' ; touch {marker}; '.opus")) == (None, "unsafe_audio_source")
    assert not marker.exists()
    # a plain path of those formats is not refused (it fails to decode here: no such file)
    assert ds.load(cut("/x/plain_name-1.sph"))[1] == "audio_decode_failed: missing_file"


def test_raw_invalid_utf8_in_a_manifest_line_is_not_fatal(tmp_path):
    """A manifest line with raw undecodable bytes must skip (or repair, counted) that line,
    not stop the epoch: lhotse's reader decodes ``.jsonl.gz`` strictly, so this is for
    ``read_split`` (decode lines with ``errors="surrogateescape"``: the record then carries
    lone surrogates and :class:`SpeechBatchDataset` skips it as ``invalid_utf8_text``)."""
    from data_modules.config import CorpusSpec
    from data_modules.streaming import read_split

    good = [
        make_cut(
            f"u{i}",
            tmp_path / "x.flac",
            sampling_rate=SR,
            num_samples=SR,
            corpus="t",
            split="train",
            transcript=f"t{i}RAWBYTE",
        )
        for i in range(3)
    ]
    path = manifest_path(tmp_path, "t", "train")
    with gzip.open(path, "wb") as f:
        for i, c in enumerate(good):
            line = json.dumps(c.to_dict()).encode()
            f.write((line.replace(b"RAWBYTE", b"\xff\xfe") if i == 1 else line) + b"\n")
    spec = CorpusSpec(name="t", dir=str(tmp_path))
    cuts = list(read_split(spec, "train"))
    ds = SpeechBatchDataset(DataConfig())
    reasons = {c.id: ds.text_problem(c) for c in cuts}
    assert reasons.get("u0") is None and reasons.get("u2") is None
    assert reasons.get("u1", "invalid_utf8_text") == "invalid_utf8_text"


# ------------------------------------------------------------------ the real training run
class TrainedIds(L.Callback):
    """The ids of every batch that reached the training step, per stage."""

    def __init__(self):
        self.seen: dict[str, set[str]] = defaultdict(set)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.seen[pl_module.stage.name].update(batch["ids"])


def _scalars(run_dir: Path, stage: str) -> dict[str, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard" / stage))
    acc.Reload()
    return {tag: acc.Scalars(tag)[-1].value for tag in acc.Tags()["scalars"]}


def test_fit_over_faulty_manifest_skips_reports_and_trains_on_every_good_clip(tmp_path):
    from explainable_ser.config import load_config
    from explainable_ser.training.recipe import run

    corpus = build_faulty_corpus(tmp_path / "data")
    run_dir = tmp_path / "run"
    cfg = load_config(
        [
            *TINY_LLM,
            f"run_dir={run_dir}",
            "eval.run_after_fit=false",
            f"data.corpora.0.name={CORPUS}",
            f"data.corpora.0.dir={corpus['dir']}",
            "data.corpora.0.test_split=null",
            "data.max_duration=12",
            "data.num_buckets=2",
            "training.stages.0.epochs=1",
            "training.stages.1.epochs=1",
            "training.stages.1.tasks=[ser_sed]",
            "trainer.enable_progress_bar=false",
            "trainer.log_every_n_steps=1",
            "trainer.limit_val_batches=1",
            "eval.val_decode_limit=0",
            "trainer.checkpoint_every_n_steps=0",
        ]
    )
    trained = TrainedIds()
    run(cfg, extra_callbacks=[trained])

    rows = [json.loads(line) for line in (run_dir / "skipped.jsonl").read_text().splitlines()]
    by_stage: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        by_stage[r["stage"]][r["id"]].append(r["reason"])
    for stage in ("stage1", "stage2"):
        logged = by_stage[stage]
        # every bad clip: once per epoch, with its reason, never in a trained batch
        for utt_id, expected in BAD_AUDIO.items():
            assert len(logged[utt_id]) == 1 and _matches(logged[utt_id][0], expected), (
                stage,
                utt_id,
                logged.get(utt_id),
            )
        assert not set(BAD_AUDIO) & trained.seen[stage]
        # task-level skips: only in the stage whose task needs the missing/unknown field
        for utt_id, (skip_stage, reason) in TASK_SKIPS.items():
            assert logged.get(utt_id, []) == ([reason] if stage == skip_stage else []), (stage, utt_id)
        # every good utterance reached a training step, and was not skipped there
        assert corpus["good"] <= trained.seen[stage], corpus["good"] - trained.seen[stage]
        really_trained = trained.seen[stage] - set(logged)
        assert corpus["good"] - {u for u, (s, _) in TASK_SKIPS.items() if s == stage} <= really_trained

    # counts in TensorBoard, per reason (cumulative over the run)
    stage1 = _scalars(run_dir, "stage1")
    expected = Counter(r["reason"] for r in rows if r["stage"] == "stage1")
    for reason, count in expected.items():
        assert stage1.get(f"skipped/{reason}") == count, (reason, stage1.get(f"skipped/{reason}"))
    stage2 = _scalars(run_dir, "stage2")
    for reason, count in Counter(r["reason"] for r in rows).items():
        assert stage2.get(f"skipped/{reason}") == count, reason
    assert len(expected) >= 10, "at least ten distinct skip reasons are counted"
    assert not (tmp_path / "data" / PWNED).exists()
    assert (run_dir / "stage2" / "final.ckpt").exists()


def test_non_finite_gradient_skips_the_optimiser_step(tmp_path):
    """A finite loss with a NaN gradient (sqrt at 0) must leave the weights untouched, be
    counted, and training must go on (with the default gradient clipping on)."""
    import torch

    from explainable_ser.training.callbacks import GradientGuard

    class Probe(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(3))
            self.skip_counts = Counter()
            self.nothing_trained = False
            self.history = []

        def training_step(self, batch, batch_idx):
            loss = ((self.w - batch[0]) ** 2).sum()
            if batch_idx == 1:  # finite loss, NaN gradient
                loss = loss + torch.sqrt((self.w * 0).sum())
            return loss

        def on_train_batch_end(self, outputs, batch, batch_idx):
            self.history.append(self.w.detach().clone())

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=0.1, weight_decay=0.01)

    data = torch.utils.data.DataLoader(torch.zeros(4, 3), batch_size=1)
    probe = Probe()
    L.Trainer(
        max_steps=4,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        gradient_clip_val=1.0,
        default_root_dir=tmp_path,
        callbacks=[GradientGuard()],
    ).fit(probe, data)
    w = probe.history
    assert probe.skip_counts["non_finite_grad"] == 1
    assert torch.equal(w[1], w[0]), "the step with the NaN gradient changed nothing"
    assert not torch.equal(w[2], w[1]) and torch.isfinite(w[3]).all(), "training went on"
