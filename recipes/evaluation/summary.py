"""The scores of an evaluation: the paper's plain mean, CV-Bench's official score, the breakdowns, and what they were
computed under (model fingerprint, prompt, resolution, skipped rows, data errors)."""

from __future__ import annotations

import logging
import math
from typing import Any

logger = logging.getLogger(__name__)

SOURCES = ("ADE20K", "COCO", "Omni3D")  # the official score averages ADE20K and COCO, then that with Omni3D
LISTED = 20  # row ids listed for skipped rows and data errors (the counts are always complete)


def official_score(per_source: dict[str, dict]) -> tuple[float | None, str | None]:
    """CV-Bench's official score ½·((acc_ADE20K + acc_COCO)/2 + acc_Omni3D), or (None, why) when a source has no rows.

    Example:
        >>> official_score({"ADE20K": {"accuracy": 0.75}, "COCO": {"accuracy": 0.5}, "Omni3D": {"accuracy": 0.4}})
        (0.5125, None)
    """
    missing = [s for s in SOURCES if per_source.get(s, {}).get("accuracy") is None]
    if missing:
        return None, (
            f"no scored rows from {', '.join(missing)}: the official score needs all of {', '.join(SOURCES)} "
            "(a --limit run or a dataset without them)"
        )
    acc = {s: per_source[s]["accuracy"] for s in SOURCES}
    return 0.5 * ((acc["ADE20K"] + acc["COCO"]) / 2 + acc["Omni3D"]), None


def _accuracy(records: list[dict], key: str = "correct") -> float | None:
    return sum(bool(r[key]) for r in records) / len(records) if records else None


def _groups(records: list[dict], column: str) -> dict[str, dict]:
    groups: dict[str, list[dict]] = {}
    for record in records:
        groups.setdefault(str(record[column]), []).append(record)
    return {
        name: {
            "rows": len(group),
            "correct": sum(bool(r["correct"]) for r in group),
            "accuracy": _accuracy(group),
            "accuracy_strict": _accuracy(group, "correct_strict"),
        }
        for name, group in sorted(groups.items())
    }


def _listed(idx: list[Any]) -> dict[str, Any]:
    return {"rows": len(idx), "idx": idx[:LISTED]}


def summarize(records: list[dict], run: dict[str, Any]) -> dict:
    """Scores over ``records`` (the selected rows' predictions) and ``run``, what they were made under.

    ``run`` holds ``model``, ``dataset``, ``prompt`` (name, chat template, one rendered example), ``generation``,
    ``resolution``, ``fingerprint`` (the run key), ``rows`` (``selected``, ``dataset``, ``limit``) and
    ``data_errors`` (ids of selected rows whose gold answer is not one of their choices). Rows skipped for an
    unusable image are counted apart and left out of every score; data errors are scored (always wrong).
    """
    skipped = [r for r in records if "skipped" in r]
    scored = [r for r in records if "skipped" not in r]
    per_source = _groups(scored, "source")
    official, why = official_score(per_source)
    strict_by_source = {s: {"accuracy": g["accuracy_strict"]} for s, g in per_source.items()}
    selected = run["rows"]["selected"]
    if len(records) < selected:
        logger.warning("%d of %d rows have no prediction: re-run to complete them", selected - len(records), selected)
    resized = sum(bool(r.get("resized")) for r in scored)
    return {
        "benchmark": "CV-Bench",
        "model": run["model"],
        "dataset": run["dataset"],
        "prompt": run["prompt"],
        "generation": run["generation"],
        "resolution": {**run["resolution"], "images_resized": resized},
        "fingerprint": run["fingerprint"],
        "rows": {
            "scored": len(scored),
            "skipped": len(skipped),
            "selected": selected,
            "missing": selected - len(records),
            "dataset": run["rows"]["dataset"],
            "limit": run["rows"]["limit"],
        },
        "skipped": {**_listed([r["idx"] for r in skipped]), "reasons": sorted({r["skipped"] for r in skipped})},
        "data_errors": _listed(run["data_errors"]),
        "correct": sum(bool(r["correct"]) for r in scored),
        "accuracy": _accuracy(scored),
        "official_score": official,
        "official_score_note": why,
        "per_task": _groups(scored, "task"),
        "per_source": per_source,
        "per_type": _groups(scored, "type"),
        "answer_tag_rate": _accuracy([{"tagged": r["extracted"] is not None} for r in scored], "tagged"),
        "strict": {
            "accuracy": _accuracy(scored, "correct_strict"),
            "official_score": official_score(strict_by_source)[0],
        },
    }


def _pct(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f}%"


def summary_markdown(summary: dict) -> str:
    rows, gen, res, prompt = summary["rows"], summary["generation"], summary["resolution"], summary["prompt"]
    lines = [
        f"# CV-Bench: {summary['model']['name']}",
        "",
        f"Model files sha256 `{summary['model']['sha256'][:16]}`; run fingerprint `{summary['fingerprint']['id']}`.",
        f"Dataset `{summary['dataset']['name']}` ({rows['scored']} of {rows['selected']} selected rows scored"
        + (f", {rows['skipped']} skipped" if rows["skipped"] else "")
        + (f", {rows['missing']} missing" if rows["missing"] else "")
        + f"; the dataset has {rows['dataset']}).",
        f"Greedy decoding, up to {gen['max_new_tokens']} new tokens, backend `{gen['backend']}`, "
        f"dtype `{gen['dtype']}`.",
        f"Images resized within {res['min_pixels']}–{res['max_pixels']} pixels ({res['source']}); "
        f"{res['images_resized']} of {rows['scored']} images were resized.",
        f"Prompt `{prompt['name']}`"
        + (f" (chat template `{prompt['chat_template']}`)" if prompt["chat_template"] else "")
        + ", the first row as the model saw it (before image-token expansion):",
        "",
        "```",
        prompt["example"],
        "```",
        "",
        "| score | value |",
        "|---|---|",
        f"| accuracy, as the paper computed it (mean over rows) | {_pct(summary['accuracy'])}"
        f" ({summary['correct']}/{rows['scored']}) |",
        f"| official CV-Bench score ½·((ADE20K + COCO)/2 + Omni3D) | {_pct(summary['official_score'])} |",
        f"| strict accuracy (names the gold option and nothing else) | {_pct(summary['strict']['accuracy'])} |",
        f"| strict official score | {_pct(summary['strict']['official_score'])} |",
        f"| responses with an `<answer>` block | {_pct(summary['answer_tag_rate'])} |",
    ]
    if summary["official_score_note"]:
        lines += ["", f"Official score not computed: {summary['official_score_note']}."]
    if rows["skipped"]:
        skipped = summary["skipped"]
        lines += [
            "",
            f"Skipped (unusable image, left out of every score): {rows['skipped']} rows, idx {skipped['idx']}.",
        ]
    if summary["data_errors"]["rows"]:
        errors = summary["data_errors"]
        lines += ["", f"Data errors (gold answer not among the choices, scored wrong): {errors['rows']} rows, idx "]
        lines[-1] += f"{errors['idx']}."
    for title, key in (("task", "per_task"), ("source", "per_source"), ("type", "per_type")):
        lines += ["", f"| {title} | rows | correct | accuracy | strict accuracy |", "|---|---:|---:|---:|---:|"]
        lines += [
            f"| {name} | {g['rows']} | {g['correct']} | {_pct(g['accuracy'])} | {_pct(g['accuracy_strict'])} |"
            for name, g in summary[key].items()
        ]
    return "\n".join(lines) + "\n"
