"""Publishing converted records on the Hugging Face Hub, with a dataset card that says where they came from.

``python -m data_prep.sat ... --push_to_hub ORG/NAME`` checks, before converting anything, that a push can work
(`push_problem`: not offline, a token, a valid repository id), converts, then `push_dataset` uploads the records with
datasets' own ``Dataset.push_to_hub`` (parquet shards and the features, so ``load_dataset(ORG/NAME)`` gives the same
columns and types) and ``prep_report.json``, and completes the card ``push_to_hub`` wrote (its ``dataset_info`` front
matter is kept) with the source, its revision, rows kept and skipped by reason and the conversion command
(`dataset_card`, huggingface_hub's `DatasetCard`).

The recipes read such a dataset by its id (``--dataset_path ORG/NAME --dataset_split train``): see
`recipes.shared.hub.load_hub_records`.
"""

from __future__ import annotations

import logging
import os
import shlex
from pathlib import Path
from typing import Any

from huggingface_hub import DatasetCard, DatasetCardData

logger = logging.getLogger(__name__)

REPORT_NAME = "prep_report.json"
PAPER_ARXIV = "2503.05132"


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")


def push_problem(
    repo_id: str | None,
    token: str | None = None,
    option: str = "--push_to_hub",
    name_fix: str = "give NAME or ORG/NAME",
) -> str | None:
    """Why pushing to ``repo_id`` would fail (offline, no token, an invalid id), or None. Reads no network."""
    from huggingface_hub import get_token
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if _truthy("HF_HUB_OFFLINE"):
        return (
            f"{option} is set but HF_HUB_OFFLINE is on: unset HF_HUB_OFFLINE on a machine with network access, or "
            f"drop {option}"
        )
    if not (token or get_token()):
        return (
            f"{option} is set but no Hugging Face token was found: run `huggingface-cli login` (or set HF_TOKEN; a "
            f"token with write access), or drop {option}"
        )
    try:
        validate_repo_id(str(repo_id))
    except HFValidationError as err:
        first = str(err).strip().splitlines()[0]
        return f"{option}: {repo_id!r} is not a valid hub repository name ({first}): {name_fix}"
    return None


def dataset_card(report: dict[str, Any], repo_id: str, command: list[str] | None = None) -> DatasetCard:
    """The card of converted records, from their ``prep_report.json`` and the command that converted them."""
    source = report.get("source")
    revision = report.get("revision")
    images = report.get("images") or {}
    skipped = {k: v for k, v in (report.get("skipped_by_reason") or {}).items() if v}
    hub_source = isinstance(source, str) and source.count("/") == 1 and not Path(source).exists()
    data = DatasetCardData(
        pretty_name=f"{source} converted for VisualThinker-R1-Zero",
        source_datasets=[source] if hub_source else None,
        task_categories=["visual-question-answering"],
        tags=["visualthinker-r1-zero", "grpo", "sat"],
    )
    lines = [
        f"# {repo_id.split('/')[-1]}",
        "",
        f"`{source}`"
        + (f" (revision `{revision}`)" if revision else " (local files)")
        + f", split `{report.get('split')}`, converted into chat records (`messages`, `images`, `solution`) by "
        "`python -m data_prep.sat` for the replication of *R1-Zero's 'Aha Moment' in Visual Reasoning on a 2B "
        f"Non-SFT Model* (arXiv [{PAPER_ARXIV}](https://arxiv.org/abs/{PAPER_ARXIV})).",
        "",
        "| | |",
        "|---|---|",
        f"| source | `{source}`" + (f" at revision `{revision}`" if revision else "") + " |",
        f"| rows read | {report.get('rows_read')}"
        + (f" (limit {report['limit']})" if report.get("limit") else "")
        + " |",
        f"| rows kept | {report.get('rows_written')} |",
        f"| rows skipped | {report.get('rows_skipped')} |",
        *(f"| skipped: {reason} | {count} |" for reason, count in skipped.items()),
        f"| option order | shuffled with seed {report.get('seed')} |",
        f"| multi-image rows | {report.get('multi_image')} |",
        f"| images | fitted to {images.get('min_pixels')}–{images.get('max_pixels')} pixels "
        f"({images.get('resized')} resized; keep_original {images.get('keep_original')}) |",
        f"| content fingerprint | `{report.get('fingerprint')}` |",
    ]
    if command:
        lines += ["", "Converted with:", "", "```bash", shlex.join(command), "```"]
    lines += [
        "",
        f"Every count and setting: [`{REPORT_NAME}`]({REPORT_NAME}). Train on it with `--dataset_path {repo_id} "
        f"--dataset_split {report.get('split') or 'train'}` (a recipe refuses records whose images were resized at "
        "other pixel bounds than its own).",
    ]
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n")


def push_dataset(
    folder: str | Path,
    repo_id: str,
    report: dict[str, Any],
    command: list[str] | None = None,
    token: str | None = None,
    private: bool | None = None,
) -> str:
    """Upload the records in ``folder`` (a ``save_to_disk`` folder) and their report and card; returns the URL."""
    from datasets import load_from_disk
    from huggingface_hub import HfApi

    folder = Path(folder)
    api = HfApi(token=token)
    url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    load_from_disk(str(folder)).push_to_hub(repo_id, split=report.get("split") or "train", token=token)
    api.upload_file(
        path_or_fileobj=str(folder / REPORT_NAME), path_in_repo=REPORT_NAME, repo_id=repo_id, repo_type="dataset"
    )
    # push_to_hub wrote a card whose front matter describes the features and splits: keep it, add ours.
    card = DatasetCard.load(repo_id, repo_type="dataset", token=token)
    ours = dataset_card(report, repo_id, command)
    for key, value in ours.data.to_dict().items():
        setattr(card.data, key, value)
    card.text = ours.text
    card.push_to_hub(repo_id, repo_type="dataset", token=token)
    logger.info("pushed %d records to %s", report.get("rows_written"), url)
    return str(url)


def push_folder(
    folder: str | Path, repo_id: str, command: list[str] | None = None, private: bool | None = None
) -> str:
    """`push_dataset` for a folder `data_prep.sat` wrote, checked first; raises ValueError with the fix."""
    import json

    problem = push_problem(repo_id)
    if problem:
        raise ValueError(problem)
    report_path = Path(folder) / REPORT_NAME
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(
            f"{folder} has no readable {REPORT_NAME} ({err}): it is not a folder `python -m data_prep.sat` wrote, "
            "so no card can say where its records came from. Convert the data with data_prep.sat first"
        ) from None
    try:
        return push_dataset(folder, repo_id, report, command, private=private)
    except Exception as err:  # noqa: BLE001 - network, permission and Hub errors: the records stay where they are
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"pushing {folder} to the Hub dataset {repo_id} failed ({first}); the records are intact in {folder}: "
            f"push them again with `python -m data_prep.hub {folder} --repo_id {repo_id}`"
        ) from None


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m data_prep.hub", description="Push records data_prep.sat wrote.")
    parser.add_argument("folder", help="a folder written by `python -m data_prep.sat`")
    parser.add_argument("--repo_id", required=True, help="Hub dataset repository, NAME or ORG/NAME")
    parser.add_argument("--private", action="store_true", help="create the repository private")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        url = push_folder(args.folder, args.repo_id, private=args.private or None)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"pushed {args.folder} to {url}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
