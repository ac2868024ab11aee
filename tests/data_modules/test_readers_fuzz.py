"""Hypothesis fuzz of the corpus readers' parsers: on any input they return a result or raise
BadInput (or iemocap.parse_vad's documented ValueError); line-level problems are counted in the
PrepareReport, never a crash with anything else."""

from __future__ import annotations

import json
import math
import string
from pathlib import Path

from hypothesis import example, given, settings
from hypothesis import strategies as st

from data_modules.corpora import emosec, iemocap, meld, speechcraft, speechcraft_labels
from data_modules.corpora.common import BadInput, PrepareReport
from data_modules.records import EMOTIONS

from conftest import FAST, write_raw

# --------------------------------------------------------------------------------- IEMOCAP
_SES = st.builds(
    lambda s, d, kind, spk, n: f"Ses0{s}{d}_{kind}_{spk}{n:03d}",
    st.integers(0, 6),
    st.sampled_from("FMX"),
    st.sampled_from(["impro01", "impro05a", "script01_1", "script02_2b", "x"]),
    st.sampled_from("FM"),
    st.integers(0, 1000),
)
_IDS = st.one_of(_SES, st.text(min_size=1, max_size=10))
_LABELS = st.one_of(st.sampled_from(["neu", "hap", "exc", "ang", "sad", "fru", "xxx", "Neu"]), st.text(max_size=5))
_NUMS = st.one_of(st.floats(allow_nan=True).map(str), st.integers(-9, 9).map(str), st.text(max_size=5))
_IEMOCAP_LINES = st.one_of(
    st.builds(
        lambda a, b, u, lab, v: f"[{a} - {b}]\t{u}\t{lab}\t[{', '.join(v)}]",
        _NUMS,
        _NUMS,
        _IDS,
        _LABELS,
        st.lists(_NUMS, max_size=4),
    ),
    st.builds(
        lambda who, labs, c: f"C-{who}:\t{'; '.join(labs)}\t({c})",
        st.text(max_size=4),
        st.lists(
            st.one_of(st.sampled_from(["Neutral state", "Excited", "Frustration", "Surprise"]), st.text(max_size=8)),
            max_size=3,
        ),
        st.text(max_size=8),
    ),
    st.builds(lambda who, t: f"A-{who}:\t{t}", st.text(max_size=4), st.text(max_size=10)),
    st.sampled_from(["%", "% header", "", "  ", "C-", "C-E1:", "[", "[1-2]"]),
    st.text(max_size=40),
)


@settings(max_examples=600, **FAST)
@given(
    st.lists(_IEMOCAP_LINES, max_size=12), st.sampled_from(["\n", "\r\n", "\r"]), st.floats(0, 0.99), st.integers(0, 9)
)
def test_iemocap_emo_evaluation(scratch, lines, newline, val_fraction, seed):
    path = write_raw(scratch, "Ses01F_impro01.txt", newline.join(lines))
    report = PrepareReport("iemocap")
    utts = iemocap.parse_emo_evaluation(path, report)
    kept = iemocap.select_four_class(utts, report)
    for utt in kept:
        assert iemocap.UTT_ID.fullmatch(utt.utt_id) and utt.label in iemocap.FOUR_CLASS
        emotions = iemocap.annotator_emotions(utt)
        assert emotions is None or all(isinstance(e, str) for e in emotions)
        assert utt.speaker and utt.gender in ("female", "male") and 1 <= utt.session <= 5
    splits = iemocap.fold_splits(kept, iemocap.SESSIONS, val_fraction, seed)
    assert len(splits["all"]) == len(kept)
    json.dumps(report.to_dict())  # the report stays writable


@settings(max_examples=400, **FAST)
@given(
    st.lists(
        st.one_of(st.builds(lambda u, t: f"{u} [{t}]: {t}", _IDS, st.text(max_size=20)), st.text(max_size=40)),
        max_size=10,
    )
)
def test_iemocap_transcriptions(scratch, lines):
    path = write_raw(scratch, "Ses01F_impro01_t.txt", "\n".join(lines))
    out = iemocap.parse_transcriptions(path)
    assert all(iemocap.UTT_ID.fullmatch(k) and isinstance(v, str) for k, v in out.items())


@settings(max_examples=400, **FAST)
@given(st.one_of(st.text(max_size=40), st.lists(_NUMS, max_size=4).map(", ".join)))
@example("1_0, 2, 3")
@example("nan, inf, -inf")
def test_iemocap_parse_vad(text):
    try:
        values = iemocap.parse_vad(text)
    except ValueError:
        return
    assert len(values) == 3 and all(isinstance(v, float) for v in values)


# ------------------------------------------------------------------------------------ MELD
_MELD_HEADER = "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime"
_CELL = st.one_of(
    st.text(max_size=12),
    st.integers(-5, 10**6).map(str),
    st.sampled_from(
        ["joy", "anger", "neutral", "unknown", "", '"', '""', ",", "00:16:16,059", "1:2:3", "x:y:z", "\x00", "١٢"]
    ),
)


def _csv_row(cells):
    return ",".join('"' + c.replace('"', '""') + '"' if ("," in c or '"' in c) else c for c in cells)


@settings(max_examples=500, **FAST)
@given(
    st.lists(st.lists(_CELL, max_size=12), max_size=8),
    st.booleans(),
    st.sampled_from(["utf-8", "cp1252", "latin-1", "utf-16"]),
)
@example([["1", "hi", "Joey", "joy", "positive", "0", "0", "1", "1", "\x00", "x"]], True, "utf-8")
@example([["1", "x" * 200_000, "Joey", "joy", "positive", "0", "0"]], True, "utf-8")
def test_meld_csv(scratch, rows, header, encoding):
    text = "\n".join(([_MELD_HEADER] if header else []) + [_csv_row(r) for r in rows])
    path = write_raw(scratch, "train_sent_emo.csv", text.encode(encoding, errors="replace"))
    report = PrepareReport("meld")
    try:
        items = meld.read_csv(path, "train", report)
    except BadInput as err:
        assert err.reason in ("unrecognised_csv", "unreadable_csv")
        return
    names = [i.name for i in items]
    assert len(names) == len(set(names)), "duplicate ids are skipped"
    for item in items:
        assert item.emotion in EMOTIONS
        assert item.csv_seconds is None or isinstance(item.csv_seconds, float)
    json.dumps(report.to_dict())


@settings(max_examples=500, **FAST)
@given(st.binary(max_size=300))
@example(b"\xef\xbb\xbfa,b\r\n\xff\xfe")
def test_meld_csv_bytes_decoding(raw):
    text, fallback = meld._decode_csv_bytes(raw)
    assert isinstance(text, str) and fallback >= 0


@settings(max_examples=300, **FAST)
@given(st.one_of(st.none(), st.text(max_size=20), st.builds(lambda h, m, s: f"{h}:{m}:{s}", _NUMS, _NUMS, _NUMS)))
@example("00:00:1e999")
@example("0:0:nan")
def test_meld_timestamps(text):
    value = meld._timestamp_seconds(text)
    assert value is None or (isinstance(value, float) and math.isfinite(value)), value


# ----------------------------------------------------------------------------- SpeechCraft
_SC_KEYS = st.sampled_from(
    [
        "age",
        "gender",
        "pitch",
        "volume",
        "speed",
        "emotion",
        "energy",
        "emphasis",
        "transcription",
        "text",
        "topic",
        "Gender",
        "",
    ]
)
_LABEL_TEXT = st.one_of(
    st.lists(st.builds(lambda k, v: f"{k}:{v}", _SC_KEYS, st.text(max_size=10)), max_size=8).map("\t".join),
    st.text(max_size=60),
)


@settings(max_examples=600, **FAST)
@given(
    st.dictionaries(
        st.one_of(
            st.sampled_from(
                ["labels", "description", "caption", "instruction", "gender", "emotion", "transcription", "pitch"]
            ),
            st.text(max_size=6),
        ),
        st.one_of(
            _LABEL_TEXT,
            st.none(),
            st.integers(),
            st.lists(st.text(max_size=3), max_size=2),
            st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2),
        ),
        max_size=5,
    )
)
def test_speechcraft_describe(record):
    try:
        desc = speechcraft_labels.describe(record)
    except BadInput as err:
        assert err.reason == "bad_label_record"
        return
    assert desc.transcript is None or isinstance(desc.transcript, str)
    assert desc.caption is None or isinstance(desc.caption, str)
    assert all(isinstance(v, str) for v in desc.attributes.values())


@settings(max_examples=600, **FAST)
@given(_LABEL_TEXT)
def test_speechcraft_parse_labels(text):
    labels = speechcraft_labels.parse_labels(text)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items())
    speechcraft_labels._looks_like_labels(text)


_JSON_VALUE = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), _LABEL_TEXT),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8,
)


@settings(max_examples=400, **FAST)
@given(
    st.lists(st.one_of(_JSON_VALUE.map(json.dumps), st.text(max_size=40)), max_size=6),
    st.sampled_from([".jsonl", ".json"]),
)
@example(["[" * 100_000], ".jsonl")
@example(["1" * 5000], ".jsonl")
@example(['{"a": ' + "1" * 5000 + "}"], ".json")
@example(["[" * 100_000], ".json")
def test_speechcraft_label_files(scratch, lines, suffix):
    path = write_raw(scratch, "labels" + suffix, "\n".join(lines))
    report = PrepareReport("speechcraft")
    for key, record in speechcraft_labels.read_label_file(path, report):
        assert isinstance(key, str) and isinstance(record, dict)
        try:
            speechcraft_labels.describe(record)
        except BadInput:
            pass
    json.dumps(report.to_dict())


@settings(max_examples=400, **FAST)
@given(st.text(max_size=30), st.floats(0, 0.5), st.floats(0, 0.49), st.integers())
def test_speechcraft_split_assignment(key, dev, test, seed):
    rec = speechcraft.recording_id_of(key)
    assert isinstance(rec, str)
    assert speechcraft.assign_split(rec, dev, test, seed) in ("train", "dev", "test")


# ----------------------------------------------------------------------------------- EMOSEC
_EMOSEC_IDS = st.one_of(
    st.sampled_from(["tx_emotion_00001", "tx_emulate_0002"]),
    st.text(alphabet=string.ascii_letters + string.digits + "_-", min_size=1, max_size=12),
    st.text(max_size=8),
)


@settings(max_examples=400, **FAST)
@given(
    st.one_of(
        st.dictionaries(_EMOSEC_IDS, _JSON_VALUE, max_size=5).map(
            lambda d: (
                "{\n"
                + ",\n".join(f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in d.items())
                + "\n}"
            )
        ),
        st.lists(
            st.one_of(
                st.builds(lambda k, v: f'"{k}": "{v}",', _EMOSEC_IDS, st.text(max_size=10)), st.text(max_size=30)
            ),
            max_size=8,
        ).map("\n".join),
    )
)
@example('{\n"a": "x",\n"b": ' + "[" * 100_000 + "\n}")
@example('"a": ' + "1" * 5000)
def test_emosec_captions(scratch, text):
    path = write_raw(scratch, emosec.CAPTIONS, text)
    report = PrepareReport("emosec")
    captions, broken = emosec.read_captions(path, report)
    for utt_id in sorted(set(captions) | set(broken), key=str):
        try:
            caption = emosec.caption_of(utt_id, captions, broken)
        except BadInput as err:
            assert err.reason in ("broken_caption_line", "missing_caption", "bad_caption")
            continue
        assert isinstance(caption, str) and caption
    json.dumps(report.to_dict())


@settings(max_examples=300, **FAST)
@given(st.lists(st.text(max_size=40), max_size=8))
def test_emosec_transcripts(scratch, lines):
    path = write_raw(scratch, emosec.TEXT, "\n".join(lines))
    out = emosec.read_transcripts(path)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in out.items())


@settings(max_examples=300, **FAST)
@given(
    st.lists(
        st.one_of(st.builds(lambda k, p: f"{k} {p}", _EMOSEC_IDS, st.text(max_size=20)), st.text(max_size=40)),
        max_size=8,
    )
)
def test_emosec_wav_scp_and_audio_lookup(scratch, lines):
    path = write_raw(scratch, emosec.WAV_SCP, "\n".join(lines))
    report = PrepareReport("emosec")
    scp = emosec.read_wav_scp(path, report)
    for utt_id, where in list(scp.items())[:3]:
        candidates = emosec.audio_candidates(utt_id, where, scratch / "root", scratch / "meta")
        assert candidates and all(isinstance(c, Path) for c in candidates)
        try:
            emosec.prepare_audio(candidates, scratch / "out" / "x.flac")
        except BadInput as err:
            assert err.reason in ("missing_audio", "bad_audio")
    json.dumps(report.to_dict())
