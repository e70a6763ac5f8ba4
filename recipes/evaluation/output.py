"""The output folder: the run key, append-only predictions (one file per process), their merge, the summaries.

``run_config.json`` holds the run key (`recipes.evaluation.fingerprint.run_key`); every prediction carries the key's
id. The folder's ``provenance.json`` (`recipes.shared.provenance`, kind ``cvbench-eval``, defined by the key's id)
records that this evaluation wrote the folder and every file it owns. Predictions are resumed only when the record and
the key match the current run; otherwise the run is refused with the settings that differ, or, with
``--overwrite_output_dir true``, exactly the files the record owns are deleted and it starts over. A folder holding
files and no record (another tool's, or an evaluation of an older version) is never written to or deleted from.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from data_prep.files import write_atomic
from recipes.evaluation.fingerprint import differences
from recipes.shared import provenance
from recipes.shared.errors import RecipeError

logger = logging.getLogger(__name__)

PREDICTIONS = "predictions.jsonl"
RUN_CONFIG = "run_config.json"
SUMMARIES = ("summary.json", "summary.md")
KIND = "cvbench-eval"


def read_jsonl(path: Path) -> Iterator[dict]:
    """The records of a predictions file; lines that are not complete records (a line torn by a kill) are skipped."""
    if not path.exists():
        return
    # A kill can cut a character's UTF-8 bytes in two: decode leniently, the torn line fails as JSON anyway.
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                logger.warning("%s: skipping an incomplete line (an interrupted write); its row will be redone", path)
                continue
            if isinstance(record, dict) and isinstance(record.get("row"), int) and "correct" in record:
                yield record


def check_output_folder(root: Path, model: str, dataset: str) -> None:
    """Refuse, before anything is loaded or written, an output folder that is a file, that is or holds the model's
    folder, or that is, holds or lies inside the dataset, the home folder or the repository. (A folder inside the
    model's run folder, such as ``RUN_DIR/eval_cvbench``, is fine: only the evaluation's own files are ever deleted.)
    """
    if root.exists() and not root.is_dir():
        raise RecipeError(f"--output_dir {root} is a file, not a folder: choose a folder (it is created if missing)")
    model_path = Path(model).expanduser()
    if model_path.exists():
        out, held = Path(os.path.realpath(root)), Path(os.path.realpath(model_path))
        if out == held or out in held.parents:
            raise RecipeError(
                f"--output_dir {root} is or holds the evaluated model {model}: choose a folder of its own, e.g. "
                f"{Path(model) / 'eval_cvbench'}"
            )
    provenance.guard_output(root, inputs=[dataset])
    refuse_foreign(root)


def refuse_foreign(root: Path, defined_by: dict[str, Any] | None = None) -> provenance.Verdict:
    """The folder's verdict for this evaluation; refused when it holds files no evaluation recorded writing, or is
    the output folder of something else (a training run)."""
    verdict = provenance.inspect(root, KIND, defined_by or {})
    if verdict.state == "foreign":
        raise RecipeError(
            f"{root} holds files that no evaluation recorded writing ({', '.join(verdict.foreign[:5])}; no "
            f"{provenance.RECORD}): they are not deleted, even with --overwrite_output_dir. Nothing was changed; "
            "choose another --output_dir (an empty or new folder)."
        )
    if verdict.entry is not None and verdict.entry.get("kind") != KIND:
        raise RecipeError(
            f"{root} is the output folder of a {verdict.entry.get('kind')} ({provenance.RECORD}), not of a CV-Bench "
            "evaluation: choose another --output_dir (e.g. its subfolder eval_cvbench)."
        )
    return verdict


class OutputDir:
    """``predictions.jsonl`` (merged, sorted by row), ``predictions.rank<k>.jsonl`` while several processes run,
    ``run_config.json``, ``summary.json``, ``summary.md``."""

    def __init__(self, root: Path, rank: int = 0, world_size: int = 1):
        self.root = root
        self.world_size = world_size
        self.predictions = root / PREDICTIONS
        self.config = root / RUN_CONFIG
        # One process appends to predictions.jsonl itself; several each append to their own file.
        self.mine = self.predictions if world_size == 1 else root / f"predictions.rank{rank}.jsonl"

    def shards(self) -> list[Path]:
        """The per-process prediction files the folder's record says this evaluation wrote (never another file)."""
        owned = set(provenance.read(self.root).get(".", {}).get("owns", []))
        return sorted(p for p in self.root.glob("predictions.rank*.jsonl") if p.name in owned)

    def read_predictions(self) -> dict[int, dict]:
        """Every complete prediction in the folder, by row (the first one when a row appears twice)."""
        found: dict[int, dict] = {}
        for path in [self.predictions, *self.shards()]:
            for record in read_jsonl(path):
                found.setdefault(record["row"], record)
        return found

    def mismatch(self, key: dict[str, Any]) -> str | None:
        """Why the predictions already here cannot be resumed under ``key`` (None: there are none, or they match)."""
        predictions = self.read_predictions()
        if not predictions:
            return None
        try:
            saved = json.loads(self.config.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return f"{len(predictions)} predictions but no readable {RUN_CONFIG} saying what they were made with"
        if not isinstance(saved, dict) or saved.get("id") != key["id"]:
            changed = differences(saved if isinstance(saved, dict) else {}, key)
            if any(line.startswith("model.") for line in changed):
                changed.insert(0, "the model's files differ (retrained or replaced since these predictions)")
            return "predictions made with other settings:\n  " + "\n  ".join(changed or ["(an older format)"])
        others = sorted({str(r.get("fingerprint")) for r in predictions.values()} - {key["id"]})
        if others:
            return f"predictions of other runs mixed in (fingerprints {', '.join(others)}; this run: {key['id']})"
        return None

    def check(self, key: dict[str, Any], overwrite: bool) -> bool:
        """Refuse a folder that is not this evaluation's to write, or predictions made under another key unless
        ``overwrite`` (then `start` deletes what the folder's record owns); True when the folder is to be cleared."""
        verdict = refuse_foreign(self.root, {"run_key": key["id"]})
        problem = self.mismatch(key)
        if verdict.state == "different" and problem is None:
            if not any((self.root / name).exists() for name in self.owned() if name != RUN_CONFIG):
                return True  # another evaluation's record and key, but none of its results: nothing to lose
            problem = "files of another evaluation:\n  " + "\n  ".join(verdict.changes)
        if problem is None:
            return False
        if overwrite:
            logger.warning("%s holds %s\n--overwrite_output_dir: starting over", self.root, problem)
            return True
        raise RecipeError(
            f"{self.root} holds {problem}\nNothing was changed. To start this evaluation over (the predictions and "
            "summaries there are deleted): --overwrite_output_dir true; to keep them: choose another --output_dir."
        )

    def owned(self) -> list[str]:
        """Every file this evaluation may write in the folder (recorded before any of them is written)."""
        shards = [f"predictions.rank{k}.jsonl" for k in range(self.world_size)] if self.world_size > 1 else []
        return [PREDICTIONS, RUN_CONFIG, *SUMMARIES, *shards]

    def start(self, key: dict[str, Any], clear: bool, inputs: list[str | Path | None]) -> None:
        """Clear an earlier evaluation when told to (exactly the files its record owns; never an input), record the
        run and the files it will write, write the run key, fold in what an interrupted run left."""
        if clear:
            removed = provenance.delete_owned(self.root, inputs=inputs)
            logger.info("deleted %d file(s) of the earlier evaluation in %s", len(removed), self.root)
        provenance.start(self.root, KIND, {"run_key": key["id"]}, owns=self.owned())
        write_atomic(self.config, json.dumps(key, indent=2) + "\n")
        self.merge()

    def merge(self) -> dict[int, dict]:
        """Rewrite predictions.jsonl sorted by row with every process's predictions, then drop the per-process files.

        A kill in between leaves the per-process files, whose rows are merged (once) on the next run. Nothing is
        written while there are no predictions.
        """
        predictions = dict(sorted(self.read_predictions().items()))
        if predictions or self.predictions.exists():
            text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in predictions.values())
            write_atomic(self.predictions, text)
        for shard in self.shards():
            shard.unlink()
        return predictions

    def append(self, records: list[dict]) -> None:
        """Append and flush each record as one line: a kill loses at most the line being written."""
        with open(self.mine, "a", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
                f.flush()
            os.fsync(f.fileno())

    def write_summary(self, summary: dict, markdown: str) -> None:
        """Write both summaries, then record the evaluation as finished (``--limit`` runs included)."""
        write_atomic(self.root / "summary.json", json.dumps(summary, indent=2) + "\n")
        write_atomic(self.root / "summary.md", markdown)
        provenance.finish(self.root, owns=self.owned(), rows=summary["rows"])
