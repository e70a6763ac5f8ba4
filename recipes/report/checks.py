"""What `recipes.report.compare` may count: a CV-Bench summary that is the run's own, and runs that really are seeds.

A run folder's ``eval_cvbench/summary.json`` counts as the run's CV-Bench score only when

* it was computed from the run's final weights: the summary's model fingerprint (``model.sha256``, written by
  `recipes.eval_cvbench`) equals the fingerprint of the model files in the run folder now, hashed as the evaluation
  hashes them (`recipes.evaluation.fingerprint.model_fingerprint`). A summary left from before the run was continued,
  or one of another model copied in, does not match. Cost: the run folder's weights are read once (~15 s for
  Qwen2-VL-2B in bf16 on a 2-core machine) — unless the file names or sizes already differ from the summary's;
* it covers the whole dataset: every row selected (no ``--limit`` below its size), scored or counted as skipped,
  none missing.

Anything else is shown, marked with the reason, and kept out of every mean.

Runs of one automatic arm are seeds of one experiment only when their resolved configurations
(``resolved_config.yaml``; for a W&B run its config) agree apart from the seed and what only names the run
(`NAMING`). Otherwise the arm is split by the settings that differ, and the differences are named.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from recipes.shared.provenance import UNSET, flat_items

logger = logging.getLogger(__name__)

# Settings that name a run or seed it, and settings that do not change what is trained: runs that differ only here
# are seeds of one experiment.
NAMING = frozenset(
    {
        "seed",
        "data_seed",
        "output_dir",
        "run_name",
        "logging_dir",
        "wandb_project",
        "wandb_group",
        "wandb_run_id",
        "hub_model_id",
        "resume_from_checkpoint",
        "overwrite_output_dir",
        "dry_run",
        "dry_run_samples",
    }
)


def cvbench_problem(run_dir: Path, summary: dict[str, Any]) -> str | None:
    """Why ``summary`` (the run folder's CV-Bench summary) is not the run's score, or None when it counts."""
    from recipes.evaluation.fingerprint import model_fingerprint  # reads weights: only when there is a summary

    model, rows, key = (_mapping(summary.get(name)) for name in ("model", "rows", "fingerprint"))
    if not isinstance(model.get("sha256"), str):
        return "the summary names no model fingerprint (written by an older evaluation): evaluate the run again"
    if rows.get("selected") != rows.get("dataset"):  # (a --limit at or above the dataset's size selects it all)
        return f"a --limit subset ({rows.get('selected')} of {rows.get('dataset')} rows), not the whole dataset"
    if rows.get("missing"):
        return f"unfinished: {rows['missing']} of {rows.get('selected')} rows have no prediction"
    stored = _mapping(key.get("model")).get("files")
    if isinstance(stored, dict) and stored and not any((run_dir / name).is_file() for name in stored):
        return "the run folder holds no final model (none of the evaluated model's files): is the training finished?"
    try:
        if isinstance(stored, dict) and not _same_names_and_sizes(run_dir, stored):
            return (
                "computed from other model files than the run folder holds now (names or sizes differ): left from "
                "before the run was continued, or another model's"
            )
        current = model_fingerprint(run_dir)["sha256"]
    except Exception as err:  # noqa: BLE001 - e.g. an adapter's base model unreachable: the summary cannot be verified
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return f"the run folder's final model cannot be fingerprinted ({first_line})"
    if current != model["sha256"]:
        return (
            f"computed from other weights (model sha256 {model['sha256'][:12]}) than the run folder holds now "
            f"({current[:12]}): left from before the run was continued, or another model's"
        )
    return None


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _same_names_and_sizes(run_dir: Path, stored: dict[str, Any]) -> bool:
    """Whether the run folder's top-level files named in ``stored`` all exist with the recorded sizes (cheap)."""
    for name, meta in stored.items():
        path = run_dir / name
        if not path.is_file() or not isinstance(meta, dict) or path.stat().st_size != meta.get("bytes"):
            return False
    return True


def settings(config: dict[str, Any]) -> dict[str, str]:
    """A run's configuration as ``{"section.name": value}``, without the settings that only name or seed it.

    Example:
        >>> settings({"training": {"learning_rate": 1e-06, "seed": 3, "output_dir": "o/s3"}, "_wandb": {"x": 1}})
        {'training.learning_rate': '1e-06'}
    """
    return {
        key: json.dumps(value, sort_keys=True)
        for key, value in flat_items(config).items()
        if key.split(".")[-1] not in NAMING and not key.startswith("_")
    }


def split_by_settings(name: str, runs: list) -> list[tuple[str, list, list[str]]]:
    """``runs`` (of automatic arm ``name``, each with a ``config``) as ``(arm name, runs, notes)``: one arm when their
    settings agree (runs without a recorded configuration are grouped by name, and said so), else one per set of
    settings, named by the settings that differ.

    Example:
        >>> class R:
        ...     def __init__(self, lr): self.config = {"training": {"learning_rate": lr}}
        >>> [(n, len(rs)) for n, rs, _ in split_by_settings("grpo", [R(1e-6), R(2e-6), R(1e-6)])]
        [('grpo [training.learning_rate=1e-06]', 2), ('grpo [training.learning_rate=2e-06]', 1)]
    """
    parts: dict[frozenset | None, list] = {}
    for run in runs:
        key = frozenset(settings(run.config).items()) if run.config else None
        parts.setdefault(key, []).append(run)
    if len(parts) == 1:
        unknown = sum(not run.config for run in runs)
        notes = (
            [f"no recorded configuration for {unknown} of {len(runs)} runs: grouped by name only"] if unknown else []
        )
        return [(name, runs, notes)]
    known = [dict(key) for key in parts if key is not None]
    varying = sorted({k for part in known for k in part if len({p.get(k, UNSET) for p in known}) > 1})
    result = []
    for key, members in parts.items():
        if key is None:
            label, why = "configuration not recorded", "no resolved_config.yaml: cannot tell whether it is a seed"
        else:
            values = dict(key)
            shown = [f"{k}={values.get(k, UNSET)}" for k in varying]
            label = ", ".join(shown[:3]) + (f", +{len(shown) - 3} more" if len(shown) > 3 else "")
            label = label or "configuration recorded"  # the other part is the one without a configuration
            why = "settings differ from the other runs named " + name + ": " + "; ".join(shown)
        result.append((f"{name} [{label}]", members, [f"not grouped with the other {name} runs ({why})"]))
    logger.warning(
        "runs named %s differ in their settings (%s): drawn as %d arms", name, ", ".join(varying), len(parts)
    )
    return result
