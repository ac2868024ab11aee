"""A run's metrics in one dictionary (what ``metrics.json`` holds): emotion, ASR, captions,
descriptors and explanations per task, plus the counterfactual with zeroed descriptor tokens."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from data_modules.records import read_jsonl
from explainable_ser.evaluation.asr import wer
from explainable_ser.evaluation.captions import (
    CAPTION_METRICS,
    caption_language_warning,
    caption_metrics,
)
from explainable_ser.evaluation.emotion import (
    annotator_aware_accuracy,
    annotator_aware_f1,
    attribute_accuracy,
    chance_levels,
    emotion_metrics,
)
from explainable_ser.evaluation.grounding import consistency, cue_grounding, grounding
from explainable_ser.model.prompts import get_task


def read_predictions(path: str | Path) -> dict[tuple[str, str], dict]:
    """A ``predictions.jsonl`` keyed ``(id, task)``; a line that is not a JSON object, or one
    without both keys, is a ValueError naming the file and line."""
    rows = {}
    for n, r in enumerate(read_jsonl(path), 1):
        if "id" not in r or "task" not in r:
            raise ValueError(f"{path}: prediction {n} has no {'id' if 'id' not in r else 'task'}")
        rows[(r["id"], r["task"])] = r
    return rows


# -- metrics.json from prediction rows ------------------------------------------------------
_score_captions = caption_metrics  # compute_metrics' argument of that name would shadow it


def _emotion_rows(rows):
    return [r for r in rows if "emotion" in get_task(r["task"]).fields]


def compute_metrics(
    rows: list[dict],
    labels: list[str],
    counterfactual_rows: Mapping[str, list[dict]] | None = None,
    language: str = "auto",
    caption_metrics: tuple[str, ...] = CAPTION_METRICS,
) -> dict:
    """``metrics.json`` from prediction rows (keys of the design notes, plus extras).

    ``language`` of the captions: ``en`` (PTB tokens), ``zh`` (characters) or ``auto``: ``zh``
    when most caption rows' records say ``language: zh`` (EMOSEC), else ``en``. ``warnings``
    lists what makes a figure misleading (hypotheses in another language than the references);
    ``chance`` what a model that ignores the audio would score (:func:`chance_levels`).
    ``counterfactual_rows``: the rows of decodes with a speech stream zeroed, by stream name
    (``descriptor``, ``content``); each gets a :func:`counterfactual` entry.
    """
    out: dict = {"n_utterances": len({r["id"] for r in rows}), "reasons": {}, "warnings": []}
    emo = _emotion_rows(rows)
    em = emotion_metrics([r["emotion_ref"] for r in emo], [r["emotion"] for r in emo], labels)
    out.update(
        ua=em["ua"],
        wa=em["wa"],
        macro_f1=em["macro_f1"],
        n_unparsed=em["n_unparsed"],
        confusion=em["confusion"],
        confusion_columns=em["confusion_columns"],
        per_class_recall=em["per_class_recall"],
        labels=labels,
    )
    if not emo:
        out["reasons"]["ua"] = "no emotion task was decoded"
    ann = [r for r in emo if r.get("annotator_emotions")]
    out["annotator_aware_accuracy"] = (
        annotator_aware_accuracy([r["annotator_emotions"] for r in ann], [r["emotion"] for r in ann]) if ann else None
    )
    out["annotator_aware_macro_f1"] = (
        annotator_aware_f1(
            [r["annotator_emotions"] for r in ann], [r["emotion_ref"] for r in ann], [r["emotion"] for r in ann], labels
        )
        if ann
        else None
    )
    asr = [r for r in rows if "transcript" in get_task(r["task"]).fields and r["transcript_ref"]]
    out["wer"] = wer([r["transcript_ref"] for r in asr], [r["transcript"] for r in asr])["wer"] if asr else None
    if not asr:
        out["reasons"]["wer"] = "no transcript task with references was decoded"
    cap = [r for r in rows if "caption" in get_task(r["task"]).fields and r["caption_ref"]]
    cap_attrs = [r["attributes_ref"] or {} for r in cap]
    if cap:
        if language == "auto":
            zh = sum(str(r.get("language") or "").lower().startswith("zh") for r in cap)
            language = "zh" if zh * 2 > len(cap) else "en"
        out["caption_language"] = language
        # An unparsed output has no caption, but its raw text still shows the model's language.
        warning = caption_language_warning([r["caption"] or r.get("raw") for r in cap], language)
        if warning:
            out["warnings"].append(warning)
        cm = _score_captions(
            [r["caption_ref"] for r in cap], [r["caption"] for r in cap], language, metrics=caption_metrics
        )
        for k in ("bleu4", "meteor", "rouge_l", "cider", "spice"):
            out[k] = cm[k]
        out["reasons"].update(cm.get("reasons", {}))
        out["attribute_accuracy"] = attribute_accuracy(cap_attrs, [r["caption_attributes"] for r in cap])
    else:
        for k in ("bleu4", "meteor", "rouge_l", "cider", "spice"):
            out[k] = None
            out["reasons"][k] = "no caption task with references was decoded"
        out["attribute_accuracy"] = None
    out["chance"] = chance_levels([r["emotion_ref"] for r in emo], cap_attrs, [r.get("transcript_ref") for r in cap])
    out.update(explanation_metrics(rows, labels, caption_metrics))
    if counterfactual_rows:
        # one probe per zeroed stream: {"descriptor": rows, "content": rows}
        out["counterfactual"] = {
            stream: counterfactual(emo, _emotion_rows(cf), labels) for stream, cf in counterfactual_rows.items()
        }
    return out


def explanation_metrics(
    rows: list[dict], labels: list[str], caption_metrics: tuple[str, ...] = CAPTION_METRICS
) -> dict:
    """What the explanations say, checked (:mod:`explainable_ser.evaluation.grounding`):

    * ``grounding``: per explanation kind (``caption``, ``rationale``) the cues it states
      against the reference attributes: per-cue accuracy, ``hallucinated_cue_rate`` (a stated
      cue that contradicts the measurement);
    * ``rationale``: BLEU-4 / ROUGE-L / CIDEr of generated rationales against the records'
      (teacher-written) ones, and ``consistency``: the rate at which a rationale's emotion
      words disagree with the emotion given; where the records carry measured evidence
      (``data_modules.rationales --source evidence``), ``cue_grounding``: every cue a
      rationale states checked against the clip's measurements (cue accuracy,
      hallucinated-cue rate, cues per rationale, rationale emotion = answer emotion).
    Rows of tasks without that field are not counted; absent kinds are left out."""

    out: dict = {"grounding": {}}
    for kind in ("caption", "rationale"):
        have = [r for r in rows if kind in get_task(r["task"]).fields and r.get("attributes_ref")]
        if have:
            out["grounding"][kind] = grounding([r.get(kind) for r in have], [r["attributes_ref"] for r in have])
    rat = [r for r in rows if "rationale" in get_task(r["task"]).fields]
    if rat:
        info: dict = {"n": len(rat), "n_missing": sum(not r.get("rationale") for r in rat)}
        with_ref = [r for r in rat if r.get("rationale_ref")]
        if with_ref:
            wanted = tuple(m for m in ("bleu4", "rouge_l", "cider") if m in caption_metrics)
            cm = _score_captions(
                [r["rationale_ref"] for r in with_ref], [r.get("rationale") for r in with_ref], "en", metrics=wanted
            )
            info.update({m: cm[m] for m in wanted})
        else:
            info["reason"] = "no rationale references (records without a rationale field)"
        info["consistency"] = consistency([r.get("emotion") for r in rat], [r.get("rationale") for r in rat], labels)
        measured = [r for r in rat if (r.get("attributes_ref") or {}).get("evidence")]
        if measured:
            info["cue_grounding"] = cue_grounding(
                [r.get("rationale") for r in measured],
                [r["attributes_ref"]["evidence"] for r in measured],
                [r.get("emotion") for r in measured],
                labels,
                reference_emotions=[r.get("emotion_ref") for r in measured],
            )
            info["cue_grounding"]["n_without_rationale"] = sum(not r.get("rationale") for r in measured)
        out["rationale"] = info
    return out


def counterfactual(rows: list[dict], zeroed: list[dict], labels: list[str]) -> dict:
    """Decode again with one speech stream zeroed and compare with the normal decode.

    A zeroed stream can make the model *change* its answer or *break* (no parseable emotion
    at all); one "changed" rate would mix the two, so they are reported apart:

    * ``unparseable_rate``: share of zeroed outputs with no emotion in ``labels``;
      ``became_unparseable_rate``: the same among utterances whose normal output parsed;
    * ``changed_among_parsed_rate``: among utterances where both outputs parsed, the share
      whose emotion differs; ``changed_if_independent``: what that share would be if the zeroed
      answers were drawn independently of the normal ones with the same label frequencies
      (``1 - sum_k p_normal(k) p_zeroed(k)``, Cohen's chance agreement), a reference for it;
    * ``ua`` / ``ua_zeroed``: UA of the normal and zeroed decodes over all pairs (an
      unparseable output counts as wrong); ``ua_parsed`` / ``ua_zeroed_parsed``: both over the
      pairs where both outputs parsed; ``chance_ua``: 1 / classes present, what any constant or
      random answer gets;
    * ``emotion_changed_rate``: the older combined figure (unparseable counts as changed).
    """
    by_key = {(r["id"], r["task"]): r for r in zeroed}
    pairs = [(r, by_key[(r["id"], r["task"])]) for r in rows if (r["id"], r["task"]) in by_key]
    if not pairs:
        return {"n": 0}
    label_set = set(labels)

    def ua(subset, side: int):
        return emotion_metrics([p[side]["emotion_ref"] for p in subset], [p[side]["emotion"] for p in subset], labels)[
            "ua"
        ]

    orig_parsed = [p for p in pairs if p[0]["emotion"] in label_set]
    both = [p for p in orig_parsed if p[1]["emotion"] in label_set]
    n_unparseable = sum(b["emotion"] not in label_set for _, b in pairs)
    out = {
        "n": len(pairs),
        "n_unparseable": n_unparseable,
        "unparseable_rate": n_unparseable / len(pairs),
        "became_unparseable_rate": (len(orig_parsed) - len(both)) / len(orig_parsed) if orig_parsed else None,
        "n_both_parsed": len(both),
        "changed_among_parsed_rate": None,
        "changed_if_independent": None,
        "ua": ua(pairs, 0),
        "ua_zeroed": ua(pairs, 1),
        "ua_parsed": ua(both, 0) if both else None,
        "ua_zeroed_parsed": ua(both, 1) if both else None,
        "chance_ua": 1 / len({a["emotion_ref"] for a, _ in pairs if a["emotion_ref"] is not None} or labels),
        "emotion_changed_rate": sum(a["emotion"] != b["emotion"] for a, b in pairs) / len(pairs),
    }
    if both:
        out["changed_among_parsed_rate"] = sum(a["emotion"] != b["emotion"] for a, b in both) / len(both)
        p_a = {k: sum(a["emotion"] == k for a, _ in both) / len(both) for k in labels}
        p_b = {k: sum(b["emotion"] == k for _, b in both) / len(both) for k in labels}
        out["changed_if_independent"] = 1.0 - sum(p_a[k] * p_b[k] for k in labels)
    with_rationale = [(a, b) for a, b in pairs if "rationale" in get_task(a["task"]).fields]
    if with_rationale:
        # The probe on the reasons: does the rationale change, and does it state more
        # contradicted cues, once the stream is gone?

        refs = [a.get("attributes_ref") for a, _ in with_rationale]
        out["rationale"] = {
            "n": len(with_rationale),
            "changed_rate": sum((a.get("rationale") or "") != (b.get("rationale") or "") for a, b in with_rationale)
            / len(with_rationale),
            "hallucinated_cue_rate": grounding([a.get("rationale") for a, _ in with_rationale], refs)[
                "hallucinated_cue_rate"
            ],
            "hallucinated_cue_rate_zeroed": grounding([b.get("rationale") for _, b in with_rationale], refs)[
                "hallucinated_cue_rate"
            ],
        }
    return out
