"""Evaluate a checkpoint on CV-Bench with the paper's scoring, plus the benchmark's official score.

    python recipes/eval_cvbench.py --model_name_or_path outputs/paper/grpo_base --output_dir DIR
    python recipes/eval_cvbench.py --config recipes/configs/eval/paper_instruct.yaml --model_name_or_path M \\
        --output_dir D
    accelerate launch --multi_gpu --num_processes 8 recipes/eval_cvbench.py --model_name_or_path ... --output_dir ...
    python recipes/eval_cvbench.py --model_name_or_path M --backend vllm --batch_size 512 --output_dir D  # GPU
    python recipes/eval_cvbench.py --config recipes/configs/eval/tiny.yaml \\
        --model_name_or_path outputs/quickstart/seed0/grpo_base --output_dir D  # offline, the quickstart's tiny model

The paper's evaluation is the default config, ``recipes/configs/eval/paper.yaml`` (``paper_instruct.yaml`` for
instruct models): the paper's prompt, greedy decoding, 1,024 new tokens, bf16, and the evaluated checkpoint's own
saved processor bounds. The paper's trainer saved its processor, with the training bounds (401,408 pixels), in
every checkpoint, and its evaluation loaded the checkpoint's processor: trained checkpoints were evaluated at the
training resolution, and only the untrained hub models at the hub default (up to 12,845,056 pixels). A recipe run
here saves its processor the same way, so the default reproduces both; ``--min_pixels``/``--max_pixels`` override.
Every option: `recipes/evaluation/config.py`; command-line flags override the config.

``--dataset`` is a hub id (``nyu-visionx/CV-Bench``, split ``test``), a parquet file, or a folder in CV-Bench's
schema; ``python -m data_prep.fixtures.synthetic --kind cvbench`` writes one offline. The prompt is a CV-Bench template
of `recipes/shared/prompts.py` (``EVAL_TEMPLATES``) around the row's ``prompt`` column.

Outputs in ``--output_dir``: ``predictions.jsonl`` (one line per row: the prompt as rendered, the response, the
extracted answer, both verdicts), ``summary.json`` and ``summary.md`` (accuracy as the paper computed it, the official
score, per task/source/type, and what they were computed under: model fingerprint, prompt with a rendered example,
resolution applied, skipped rows, data errors), ``run_config.json`` (the run key) and ``provenance.json`` (the
folder's record, `recipes.shared.provenance`: kind ``cvbench-eval``, defined by the run key's id, the files the
evaluation owns). One evaluation writes a folder at a time: a second one started into it is refused
(``provenance.sole_writer``). A folder holding files and no record, a file, the model's own folder, or the output
folder of a training run is refused before the model is loaded; ``--overwrite_output_dir true`` deletes exactly the
files the record owns. Each prediction is appended
and flushed as soon as it is made: re-running the same command scores only the rows still missing and gives the same
summary as an uninterrupted run (greedy decoding; batched and one-at-a-time generation agree on CPU in float32, as
tested; in bf16 on GPUs a different batch composition can flip near-tied tokens). Predictions are resumed only under
the same run key, a fingerprint of the model's files (their content: retraining into the same folder changes it),
the dataset's content and split, the prompt, resolution, dtype, backend and token budget; anything else is refused
with the differences, or started over with ``--overwrite_output_dir true``; the summary is computed only from
predictions made under the current key.

Bad rows: a row whose image cannot be decoded, whose prompt is null or empty, or whose prompt holds one of the
model's special tokens (``<|image_pad|>``, ``<|im_end|>``, ...: it would be read as a control token) stops the run
with a one-line error naming it (prompts are checked before anything is written), or with ``--skip_bad_images true``
is skipped and counted in the summary, left out of every score.

Data parallel: under ``accelerate launch`` each process scores every N-th row still missing, writes it to its own
``predictions.rank<k>.jsonl``, and the main process merges them. On a machine without GPUs launch the processes with
``accelerate launch --multi_gpu --num_processes 2`` (torchrun; the processes then talk over gloo).

How this differs from the paper's evaluation (its ``src/eval/evaluate_Qwen2_VL_CVBench*.py``):
* Images are resized within the bounds with PIL before the processor sees them (as the paper's transformers 4.49
  did; transformers 5 resizes with torchvision by default), so every backend sees the same pixels.
* An image with transparency is converted as the pinned processor (transformers 5.20) converts it, alpha dropped
  (`data_prep.images.to_rgb`); the paper's transformers 4.49 composited it on white.
* Batches are padded on the left (the paper left its processor's padding side at the default, its left-padding
  line commented out). The paper's batch size was 32 on ``DataParallel``; batch size changes nothing here.
* The official CV-Bench score and a stricter scorer (reported separately) are added; the paper reported the plain mean.
* The answer is extracted in linear time (the paper's regex gives the same text but is cubic on whitespace runs),
  and responses over 100,000 characters are not given to math-verify (`rewards.cvbench`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path

import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list
from datasets import Dataset
from trl import TrlParser

from recipes.evaluation.config import EvalArguments, check_arguments
from recipes.evaluation.data import check_prompts, dataset_fingerprint, dataset_revision, load_cvbench, row_metadata
from recipes.evaluation.fingerprint import is_adapter, local_model_folder, model_fingerprint, run_key
from recipes.evaluation.generation import load_processor, make_generator, predict_rows, prediction_record
from recipes.evaluation.output import OutputDir, check_output_folder
from recipes.evaluation.summary import official_score, summarize, summary_markdown
from recipes.shared import provenance
from recipes.shared.cli import run_cli
from recipes.shared.errors import RecipeError
from recipes.shared.models import check_model_available
from recipes.shared.prompts import PromptTemplate, render
from rewards.cvbench import extract_answer, gold_option, score_response, score_response_strict

__all__ = [  # the scorer and the official score, promised to users as importable from here (README)
    "EvalArguments",
    "extract_answer",
    "main",
    "official_score",
    "score_response",
    "score_response_strict",
]

logger = logging.getLogger(__name__)
DEFAULT_CONFIG = "eval/paper.yaml"


def main(args: EvalArguments) -> dict | None:
    """Score the rows still missing from ``args.output_dir``, merge, summarize; the summary (main process only)."""
    # Processes: one per GPU under accelerate; on CPU-only machines they talk over gloo. A process that finishes
    # its rows waits for the others at a barrier: allow more than torch's default 30 minutes.
    state = PartialState(cpu=not torch.cuda.is_available(), timeout=timedelta(hours=12))
    template = check_arguments(args, state.num_processes)
    check_output_folder(Path(args.output_dir), args.model_name_or_path, args.dataset)
    revision = dataset_revision(args.dataset, args.dataset_revision)  # hub data only; local data: None
    logger.info("evaluation settings: %s", asdict(args))

    # Model: its local files (a hub id through the cache) and its own processor; nothing is written before this.
    check_model_available(args.model_name_or_path)
    with state.main_process_first():
        folder = local_model_folder(args.model_name_or_path, args.model_revision)
    processor, (min_pixels, max_pixels) = load_processor(folder, args, template)
    logger.info("images resized within %d..%d pixels (%s)", min_pixels, max_pixels, _bounds_source(args))

    # Data: the rows to score (the first --limit rows); images are decoded only when a batch needs them.
    with state.main_process_first():
        dataset = load_cvbench(args.dataset, args.dataset_split, revision)
    rows = row_metadata(dataset)
    if not rows:
        raise RecipeError(f"{args.dataset!r} (split {args.dataset_split!r}) has no rows")
    selection = range(len(rows) if args.limit is None else min(args.limit, len(rows)))
    bad = check_prompts(rows, selection, processor.tokenizer, args.dataset, args.skip_bad_images)
    usable = [i for i in selection if i not in bad]
    if not usable:
        raise RecipeError(f"none of the {len(selection)} selected rows of {args.dataset} has a usable prompt")
    example = render(processor, template.messages(rows[usable[0]]["prompt"], num_images=1))
    logger.info("first rendered prompt (before image-token expansion):\n%s", example)

    # Output folder: one writer at a time, held by the main process for every process until the end (a second
    # evaluation started into it is refused here, before it spends minutes reading the weights).
    with sole_writer(state, args.output_dir):
        # Run key: what every response depends on (the main process reads the weights and images once).
        key = [None]
        if state.is_main_process:
            key[0] = run_key(
                model=model_fingerprint(folder),
                dataset={
                    "split": args.dataset_split,
                    "rows": len(rows),
                    "sha256": dataset_fingerprint(dataset, rows),
                    **({"revision": revision} if revision else {}),  # local data: keyed by content alone, as before
                },
                prompt={"name": args.prompt, "chat_template": args.chat_template, "example": example},
                generation={"backend": args.backend, "dtype": args.dtype, "max_new_tokens": args.max_new_tokens},
                resolution={"min_pixels": min_pixels, "max_pixels": max_pixels},
            )
        key = broadcast_object_list(key)[0]
        return _evaluate(args, state, folder, processor, template, dataset, rows, selection, key, bad)


@contextlib.contextmanager
def sole_writer(state: PartialState, output_dir: str) -> Iterator[None]:
    """The main process holds ``output_dir`` for every process of this evaluation; a second evaluation started
    into it meanwhile is refused in all its processes (`recipes.shared.provenance.sole_writer`)."""
    with contextlib.ExitStack() as held:
        refused = [None]
        if state.is_main_process:
            try:
                held.enter_context(provenance.sole_writer(output_dir, "a CV-Bench evaluation"))
            except RecipeError as err:
                refused[0] = str(err)
        refused = broadcast_object_list(refused)[0]
        if refused:
            raise RecipeError(refused)
        yield


def _evaluate(
    args: EvalArguments,
    state: PartialState,
    folder: Path,
    processor,
    template: PromptTemplate,
    dataset: Dataset,
    rows: list[dict],
    selection: range,
    key: dict,
    bad: dict[int, str],
) -> dict | None:
    """Score the missing rows into the held output folder, merge, summarize (the summary: main process only)."""
    out = OutputDir(Path(args.output_dir), state.process_index, state.num_processes)
    clear = out.check(key, args.overwrite_output_dir)
    state.wait_for_everyone()  # every process has checked before the main process changes anything
    if state.is_main_process:
        out.start(key, clear, inputs=[args.dataset])
    state.wait_for_everyone()
    done = current(out.read_predictions(), key["id"])
    todo = [i for i in selection if i not in done]
    shard = todo[state.process_index :: state.num_processes]
    logger.info("%d of %d rows to score; this process: %d", len(todo), len(selection), len(shard))

    # Generate and score this process's rows, a batch at a time, each prediction appended as soon as it exists.
    # Rows with an unusable prompt (--skip_bad_images) are recorded as skipped, with why.
    if skipped := [prediction_record(i, rows[i], key["id"], skipped=bad[i]) for i in shard if i in bad]:
        out.append(skipped)
    shard = [i for i in shard if i not in bad]
    if shard:
        generate = make_generator(
            args, folder, processor, (key["resolution"]["min_pixels"], key["resolution"]["max_pixels"]), state.device
        )
        predict_rows(dataset, rows, shard, template, processor, generate, args, out, key["id"], state.is_main_process)

    # Merge the processes' predictions and write the summaries (main process).
    state.wait_for_everyone()
    if not state.is_main_process:
        return None
    predictions = current(out.merge(), key["id"])  # only what this model made under this run key is scored
    run = {
        "model": {
            "name": args.model_name_or_path,
            "revision": args.model_revision,
            "adapter": is_adapter(folder),
            "sha256": key["model"]["sha256"],
        },
        "dataset": {
            "name": args.dataset,
            "split": args.dataset_split,
            "revision": key["dataset"].get("revision"),
            "sha256": key["dataset"]["sha256"],
        },
        "prompt": key["prompt"],
        "generation": {**key["generation"], "do_sample": False},
        "resolution": {**key["resolution"], "source": _bounds_source(args)},
        "fingerprint": key,
        "rows": {"selected": len(selection), "dataset": len(rows), "limit": args.limit},
        "data_errors": [
            rows[i]["idx"] for i in selection if gold_option(rows[i]["choices"], rows[i]["answer"]) is None
        ],
    }
    summary = summarize([predictions[i] for i in selection if i in predictions], run)
    summary["run"] = {"batch_size": args.batch_size, "num_processes": state.num_processes}
    out.write_summary(summary, summary_markdown(summary))
    logger.info("accuracy %s, official score %s -> %s", summary["accuracy"], summary["official_score"], out.root)
    return summary


def current(predictions: dict[int, dict], key_id: str) -> dict[int, dict]:
    """The predictions made under the run key ``key_id`` (a folder is resumed only under its key; this makes sure)."""
    return {row: p for row, p in predictions.items() if p.get("fingerprint") == key_id}


def _bounds_source(args: EvalArguments) -> str:
    overridden = args.min_pixels is not None or args.max_pixels is not None
    return "--min_pixels/--max_pixels" if overridden else "the checkpoint's own saved processor bounds"


def make_parser() -> TrlParser:
    return TrlParser((EvalArguments,))


if __name__ == "__main__":
    run_cli(main, make_parser(), None, DEFAULT_CONFIG)
