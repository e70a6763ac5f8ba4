"""From converted records to the trainer's dataset: loading, applying a prompt template, showing rendered prompts."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from datasets import Dataset, load_from_disk

from data_prep.images import FitImages
from data_prep.schema import num_images, prompt_text
from recipes.shared.args import RecipeArguments
from recipes.shared.cards import is_hub_id
from recipes.shared.cli import PREP_COMMAND, QUICKSTART, RecipeError
from recipes.shared.hub import hub_prep_report, load_hub_records
from recipes.shared.prompts import PromptTemplate, render

logger = logging.getLogger(__name__)


def saved_records(dataset_path: str | None) -> bool:
    """Whether ``dataset_path`` is a folder `data_prep.sat` saved (``save_to_disk``), not a Hub id or data files."""
    path = Path(str(dataset_path)).expanduser()
    return (path / "dataset_info.json").is_file() or (path / "state.json").is_file()


def load_records(script_args: RecipeArguments) -> Dataset:
    """The records written by `data_prep.sat`, memory-mapped (images stay encoded until a batch needs them).

    ``dataset_path`` is the folder `data_prep.sat` wrote (``load_from_disk``), or a Hub dataset id the records were
    pushed to, or a local folder of data files laid out like one (both read with datasets' own ``load_dataset`` at
    ``dataset_split``/``dataset_revision``, `recipes.shared.hub.load_hub_records`). The same checks apply to all.
    """
    name = script_args.dataset_path
    path = Path(name).expanduser()
    saved = saved_records(name)
    revision = getattr(script_args, "dataset_revision", None)
    if revision is not None and path.exists():
        raise RecipeError(
            f"--dataset_revision {revision} applies to a Hub dataset, but --dataset_path {name} is a local folder: "
            "drop --dataset_revision"
        )
    if saved:
        check_prepared_bounds(path, script_args.min_pixels, script_args.max_pixels)
        records = load_from_disk(str(path))
    elif path.is_dir() or is_hub_id(name):
        if not path.exists() and revision is None:
            logger.warning("dataset %s is read at the Hub's main branch: pin it with --dataset_revision COMMIT", name)
        try:
            records = load_hub_records(name, script_args.dataset_split, revision)
        except RecipeError as err:
            if path.is_dir():
                raise
            raise RecipeError(
                f"no converted dataset at {path} (no such folder), and as a Hub dataset id: {err}.\n"
                f"Convert SAT first: {PREP_COMMAND.format(path=path)}\nor run the offline quickstart: {QUICKSTART}"
            ) from None
        report = path if path.is_dir() else hub_prep_report(name, revision)
        if report is not None:
            check_prepared_bounds(report, script_args.min_pixels, script_args.max_pixels)
    else:
        raise RecipeError(
            f"no converted dataset at {path}.\nConvert SAT first: {PREP_COMMAND.format(path=path)}\n"
            f"or run the offline quickstart on synthetic data: {QUICKSTART}"
        )
    missing = {"messages", "images", "solution"} - set(records.column_names)
    if missing:
        raise RecipeError(
            f"{name} is not a data_prep record dataset (missing columns: {', '.join(sorted(missing))}); "
            f"convert it with: {PREP_COMMAND.format(path=path)}"
        )
    if script_args.max_train_samples is not None:
        records = records.select(range(min(script_args.max_train_samples, len(records))))
    return records


def check_prepared_bounds(path: Path, min_pixels: int, max_pixels: int) -> None:
    """Refuse records whose images `data_prep.sat` resized at other pixel bounds than the run's.

    Its ``prep_report.json`` gives the bounds it resized to and how many images it resized. Resized at other bounds,
    the images have lost (or been given) pixels the run's bounds would not: the model would train at another
    resolution than the one stated, and than the evaluation of its checkpoints uses. Records whose images were all
    kept as they were (none resized: the default, which leaves the fitting to `fit_images` at the run's bounds)
    hold the source's pixels: any bounds are fine.
    """
    report_path = path / "prep_report.json"
    if not report_path.is_file():
        logger.info("%s has no prep_report.json: its image bounds cannot be checked", path)
        return
    try:
        images = json.loads(report_path.read_text())["images"]
        prepared = (int(images["min_pixels"]), int(images["max_pixels"]))
        resized = int(images.get("resized", 1)) and not images.get("keep_original", False)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise RecipeError(f"{report_path} is unreadable ({err}): convert the data again") from None
    if resized and prepared != (min_pixels, max_pixels):
        raise RecipeError(
            f"{path} was prepared at min_pixels {prepared[0]} / max_pixels {prepared[1]} ({images['resized']} images "
            f"resized to fit) but this run's bounds are min_pixels {min_pixels} / max_pixels {max_pixels}: set "
            f"min_pixels: {prepared[0]} and max_pixels: {prepared[1]} in the config, or convert again with "
            f"--min-pixels {min_pixels} --max-pixels {max_pixels}"
        )


def to_prompts(
    records: Dataset,
    template: PromptTemplate,
    with_completion: bool = False,
    completion_template: str | None = None,
    completion_end: str = "",
) -> Dataset:
    """Apply a prompt template: ``messages`` → conversational ``prompt`` (and ``completion`` for SFT).

    The completion is the record's assistant turn (the bare answer), or ``completion_template`` formatted with
    ``answer=`` that answer; ``completion_end`` is appended to it (see `completion_end`). Only the text column is
    read and written, so images are neither decoded nor held in memory.
    """

    def completion(turn: dict) -> dict:
        if completion_template is None and not completion_end:
            return turn
        answer = "".join(part["text"] for part in turn["content"] if part["type"] == "text")
        text = answer if completion_template is None else completion_template.format(answer=answer)
        return {"role": turn["role"], "content": [{"type": "text", "text": text + completion_end}]}

    def apply(messages):
        out = {"prompt": [template.messages(prompt_text(m), num_images(m)) for m in messages]}
        if with_completion:
            out["completion"] = [[completion(turn) for turn in m if turn["role"] == "assistant"] for m in messages]
        return out

    return records.map(apply, input_columns=["messages"], batched=True, remove_columns=["messages"])


def fit_images(dataset: Dataset, min_pixels: int, max_pixels: int) -> Dataset:
    """``dataset`` whose images are fitted to the run's bounds as they are read (`data_prep.images.FitImages`).

    `data_prep.sat` stores images as in the source; fitted here with PIL bicubic, every reader (the trainer's
    processor, whichever backend, vLLM, the held-out evaluation) gets the same pixels, the ones the paper's PIL
    processor computed, and the processor itself resizes nothing. Apply it last: `Dataset.map` on a transformed
    dataset would run the transform over every image.
    """
    return dataset.with_transform(FitImages(min_pixels, max_pixels))


def completion_end(processor) -> str:
    """What an SFT completion must end with for the model to learn to stop.

    Nothing when the chat template closes the assistant turn itself (Qwen2-VL's ``<|im_end|>``); the tokenizer's
    EOS token when it adds nothing after the completion, as the role-free ``plain`` template does: TRL's
    vision-language collator appends no EOS to prompt-completion data, so without it the model never sees a stop.
    """
    marker = "\x00completion"
    probe = [
        {"role": "user", "content": [{"type": "text", "text": "question"}]},
        {"role": "assistant", "content": [{"type": "text", "text": marker}]},
    ]
    rendered = processor.apply_chat_template(probe, tokenize=False)
    return processor.tokenizer.eos_token if rendered.endswith(marker) else ""


def log_prompts(processor, dataset: Dataset, n: int, to_stdout: bool = False) -> list[str]:
    """Render the first ``n`` prompts exactly as the trainer will (special tokens included) and show them."""
    texts = [render(processor, dataset[i]["prompt"]) for i in range(min(n, len(dataset)))]
    for i, text in enumerate(texts):
        banner = f"----- rendered prompt {i} -----"
        if to_stdout:
            print(f"{banner}\n{text}")
        else:
            logger.info("%s\n%s", banner, text)
    return texts
