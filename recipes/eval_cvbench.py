"""Evaluate a checkpoint on CV-Bench with the paper's scoring, plus the benchmark's official score.

    python recipes/eval_cvbench.py --model_name_or_path outputs/grpo_base --prompt base --output_dir outputs/eval/base
    accelerate launch --multi_gpu --num_processes 8 recipes/eval_cvbench.py --model_name_or_path ... --output_dir ...
    python recipes/eval_cvbench.py --model_name_or_path M --backend vllm --batch_size 512 --output_dir ...  # GPU
    python recipes/eval_cvbench.py --model_name_or_path outputs/quickstart/grpo_base \\
        --dataset outputs/quickstart/cvbench.parquet --max_pixels 12544 --max_new_tokens 64 --output_dir D  # offline

``--dataset`` is a hub id (``nyu-visionx/CV-Bench``, split ``test``), a parquet file, or a folder (saved with
``save_to_disk``, or holding the dataset's data files) in CV-Bench's schema; ``python -m data_prep.synthetic --kind
cvbench`` writes one offline. The question given to the prompt template is the row's ``prompt`` column (question plus
lettered choices), rendered with the same templates as training (`recipes/prompts.py`). ``--config some.yaml`` works
as for the other recipes; every option's default (the paper's settings) is in `EvalArguments`.

Outputs in ``--output_dir``: ``predictions.jsonl`` (one line per row: prompt as rendered, response, extracted answer,
verdicts), ``summary.json`` and ``summary.md`` (accuracy as the paper computed it, the official score, per task and
per source), and ``run_config.json`` (what the predictions were made with). Each prediction is appended and flushed
as soon as it is made: re-running with the same folder scores only the rows still missing and gives the same summary
as an uninterrupted run (greedy decoding is deterministic, and batched and one-at-a-time generation agree on CPU in
float32, as tested on the tiny model; in bf16 on GPUs a different batch composition can flip near-tied tokens, so a
resumed or multi-process run may differ in a few rows). A folder made with another model, prompt or generation
setting is refused.

Data parallel: under ``accelerate launch`` each process scores every N-th row still missing, writes it to its own
``predictions.rank<k>.jsonl``, and the main process merges them. On a machine without GPUs launch the processes with
``accelerate launch --multi_gpu --num_processes 2`` (torchrun; the processes then talk over gloo): accelerate's
``--cpu --num_processes 2`` starts a single process unless mpirun is set up.

How this differs from the paper's evaluation (its ``evaluate_Qwen2_VL_CVBench*.py``):
* Images are resized to the training bounds (``--min_pixels 3136 --max_pixels 401408``); the paper evaluated at the
  processor's default resolution (up to 12.8 M pixels), which users noticed does not match training. Pass the
  processor default (``--max_pixels 12845056``) to reproduce the paper's setting.
* Batches are padded on the left explicitly (the paper left its processor's padding side at the default, its
  left-padding line commented out).
* The official CV-Bench score and a stricter scorer (reported separately) are added; the paper reported the plain mean.
* The answer is extracted in linear time; the paper's regex gives the same text but can take minutes on long runs of
  ``<answer>`` or whitespace.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from datasets import Dataset, Image, load_dataset, load_from_disk
from math_verify import ExprExtractionConfig, LatexExtractionConfig, StringExtractionConfig, parse, verify
from transformers import AutoModelForImageTextToText, GenerationConfig
from trl import TrlParser

from recipes.cli import QUICKSTART, RecipeError, run_cli
from recipes.models import attn_implementation, check_model_available, load_processor
from recipes.prompts import TEMPLATES, PromptTemplate, get_template, render

logger = logging.getLogger(__name__)

LETTERS = "ABCDEF"
SOURCES = ("ADE20K", "COCO", "Omni3D")  # the official score averages ADE20K and COCO, then that with Omni3D
COLUMNS = ("idx", "type", "task", "image", "choices", "answer", "prompt", "source")
BACKENDS = ("hf", "vllm")
DTYPES = ("auto", "bfloat16", "float16", "float32")
SYNTHETIC_COMMAND = "python -m data_prep.synthetic --kind cvbench --rows 64 --seed 0 --output data/cvbench.parquet"
# What must match to resume into an output folder. The dataset counts by content (a moved file still matches);
# batch size and process count do not change the predictions.
RESUME_KEYS = (
    "model",
    "model_revision",
    "dataset_fingerprint",
    "prompt",
    "chat_template",
    "backend",
    "dtype",
    "max_new_tokens",
    "min_pixels",
    "max_pixels",
)


@dataclass
class EvalArguments:
    """Options of the CV-Bench evaluation; the defaults are the paper's settings (pixel bounds: its training ones)."""

    model_name_or_path: str = field(metadata={"help": "The checkpoint to evaluate (local folder or hub id)."})
    output_dir: str = field(metadata={"help": "Where predictions and summaries go; re-running resumes."})
    dataset: str = field(
        default="nyu-visionx/CV-Bench",
        metadata={"help": "Hub id, parquet file, or dataset folder in CV-Bench's schema."},
    )
    dataset_split: str = field(default="test", metadata={"help": "Split of a hub dataset or saved DatasetDict."})
    prompt: str = field(
        default="base", metadata={"help": f"Prompt template from recipes/prompts.py: {', '.join(TEMPLATES)}."}
    )
    chat_template: str | None = field(
        default=None,
        metadata={"help": "Replace the model's chat template: 'qwen2vl' (instruct format) or 'plain' (no roles)."},
    )
    model_revision: str | None = field(default=None, metadata={"help": "Hub revision of the model."})
    batch_size: int = field(default=8, metadata={"help": "Rows generated together (per process)."})
    max_new_tokens: int = field(default=1024, metadata={"help": "Generation budget per row (the paper: 1024)."})
    min_pixels: int = field(default=3136, metadata={"help": "Smallest image area after resizing (training: 3136)."})
    max_pixels: int = field(
        default=401408,
        metadata={"help": "Largest image area after resizing (training: 401408; the paper's eval: 12845056)."},
    )
    limit: int | None = field(default=None, metadata={"help": "Score only the first N rows (quick checks)."})
    backend: str = field(default="hf", metadata={"help": "'hf' (transformers generate) or 'vllm' (GPU only)."})
    dtype: str = field(
        default="auto", metadata={"help": "Model dtype: auto (the checkpoint's), bfloat16, float16 or float32."}
    )
    attn_implementation: str | None = field(
        default=None, metadata={"help": "Attention kernel; default flash_attention_2 when available, else sdpa."}
    )
    vllm_gpu_memory_utilization: float = field(default=0.9, metadata={"help": "vLLM: share of GPU memory to use."})
    vllm_tensor_parallel_size: int = field(default=1, metadata={"help": "vLLM: GPUs per model replica."})
    vllm_max_model_len: int | None = field(default=None, metadata={"help": "vLLM: context length (default: model's)."})


def main(args: EvalArguments) -> dict | None:
    """Score the rows still missing from ``args.output_dir``, merge, summarize; the summary (main process only)."""
    # Processes: one per GPU under accelerate; on CPU-only machines they talk over gloo. A process that finishes
    # its rows waits for the others at a barrier: allow more than torch's default 30 minutes.
    state = PartialState(cpu=not torch.cuda.is_available(), timeout=timedelta(hours=12))
    template = check_arguments(args, state.num_processes)
    out = OutputDir(Path(args.output_dir), state.process_index, state.num_processes)

    # Data: the rows to score (the first --limit rows); images are decoded only when a batch needs them.
    with state.main_process_first():
        dataset = load_cvbench(args.dataset, args.dataset_split)
    rows = row_metadata(dataset)
    selection = range(len(rows) if args.limit is None else min(args.limit, len(rows)))

    # Output folder: refuse to mix runs, fold in what an interrupted run left, find the rows still missing.
    config = run_config(args, rows)
    out.check_config(config)
    if state.is_main_process:
        out.start(config)
    state.wait_for_everyone()
    done = out.read_predictions()
    todo = [i for i in selection if i not in done]
    shard = todo[state.process_index :: state.num_processes]
    logger.info("%d of %d rows to score; this process: %d", len(todo), len(selection), len(shard))

    # Generate and score this process's rows, a batch at a time, each prediction appended as soon as it exists.
    if todo:
        check_model_available(args.model_name_or_path)
        processor = load_processor(args, args, template)
        if shard:
            generate = make_generator(args, processor, state.device)
            score_rows(dataset, rows, shard, template, processor, generate, args.batch_size, out)

    # Merge the processes' predictions and write the summaries (main process).
    state.wait_for_everyone()
    if not state.is_main_process:
        return None
    predictions = out.merge()
    summary = summarize([predictions[i] for i in selection if i in predictions], args, len(selection), len(rows))
    summary["run"] = {"batch_size": args.batch_size, "num_processes": state.num_processes}
    out.write_summary(summary)
    logger.info("accuracy %s, official score %s -> %s", summary["accuracy"], summary["official_score"], out.root)
    return summary


# --------------------------------------------------------------------------------------------------------------
# Scoring: the paper's procedure (math-verify on the first <answer> block), and a stricter companion.
# --------------------------------------------------------------------------------------------------------------

_OPEN, _CLOSE = "<answer>", "</answer>"


def extract_answer(response: str) -> str | None:
    """The text the paper's ``re.search(r"<answer>\\s*(.*?)\\s*</answer>", response).group(1)`` returns, or None.

    That is the first ``<answer>…</answer>`` whose content, trimmed, is a single line (the regex has no DOTALL,
    so a block spanning lines is skipped for a later one), trimmed; ``""`` for an empty block. Computed in one
    pass: the regex itself takes quadratic time on long runs of ``<answer>`` or whitespace.

    Example:
        >>> extract_answer("<think>...</think> <answer> (B) </answer>")
        '(B)'
        >>> extract_answer("<answer>A\\nB</answer> <answer>C</answer>"), extract_answer("B")
        ('C', None)
    """
    close = tail = last_newline = -1
    opening = response.find(_OPEN)
    while opening != -1:
        start = opening + len(_OPEN)
        if close < start:
            close = response.find(_CLOSE, start)
            if close == -1:
                return None
            tail = close  # end of the block's content with trailing whitespace removed
            while tail > start and response[tail - 1].isspace():
                tail -= 1
            last_newline = response.rfind("\n", start, tail)
        head = start  # start of the content with leading whitespace removed
        while head < tail and response[head].isspace():
            head += 1
        if head >= tail:
            return ""
        if last_newline < head:
            return response[head:tail]
        opening = response.find(_OPEN, start)
    return None


def gold_option(choices: Any, answer: Any) -> tuple[str, str] | None:
    """The gold letter and its choice text, from ``answer`` ("(B)"; a bare "B" is accepted too), or None."""
    if not isinstance(answer, str) or isinstance(choices, str) or not isinstance(choices, Sequence):
        return None
    if not all(isinstance(c, str) for c in choices):
        return None
    letter = answer.strip().removeprefix("(").removesuffix(")")
    if len(letter) != 1 or letter not in LETTERS or LETTERS.index(letter) >= len(choices):
        return None
    return letter, choices[LETTERS.index(letter)]


def parse_answer(text: str, choices: Sequence[str]) -> list:
    """math-verify's reading of ``text`` with the paper's extraction settings: LaTeX, expressions, and the strings
    A–F, a–f, (a)–(f), (A)–(F) plus the row's choice texts (strings come back lowercased)."""
    strings = (*LETTERS, *LETTERS.lower(), *(f"({c})" for c in LETTERS.lower()), *(f"({c})" for c in LETTERS))
    config = [
        LatexExtractionConfig(),
        ExprExtractionConfig(),
        StringExtractionConfig(strings=strings + tuple(choices)),
    ]
    # math-verify's timeouts use SIGALRM, which only the main thread may set.
    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    return parse(text, extraction_config=config, parsing_timeout=timeout)


def paper_verdict(response: str, choices: Sequence[str], answer: str) -> tuple[bool, list]:
    """The paper's verdict and math-verify's parse of the answer text; (False, []) for unusable input."""
    try:
        gold = gold_option(choices, answer)
        if gold is None or not isinstance(response, str):
            return False, []
        letter, choice = gold
        # The paper falls back to the whole response when there is no <answer> block or it is empty.
        parsed = parse_answer(extract_answer(response) or response, choices)
        golds = [choice.lower(), choice, letter, letter.lower(), f"({letter})".lower(), f"({letter})"]
        timeout = 5 if threading.current_thread() is threading.main_thread() else None
        return bool(verify(gold=golds, target=parsed, timeout_seconds=timeout)), parsed
    except Exception:  # a scorer never stops an evaluation: unusable input is simply wrong
        logger.debug("scoring failed", exc_info=True)
        return False, []


def score_response(response: str, choices: list[str], answer: str) -> bool:
    """Whether ``response`` answers the CV-Bench row (``choices``, ``answer`` like "(B)"), as the paper scored it.

    The text inside the first ``<answer>…</answer>`` (trimmed; the whole response when there is none) is parsed by
    math-verify with LaTeX, expression and string extraction, the strings being the letters A–F as ``A``, ``a``,
    ``(A)``, ``(a)`` plus the row's choice texts; it is correct when math-verify matches it with the gold letter in
    any of those forms or the gold choice text (as written or lowercased). Quirks kept from the paper: an answer
    phrase counts ("The answer is (B)"), the last option named wins ("A or B" reads as B), and matching the choice
    text is case-sensitive on the response side ("RIGHT" and "Right" do not match "right"). Never raises.

    Example:
        >>> score_response("<think>...</think><answer>(B)</answer>", ["left", "right"], "(B)")
        True
        >>> score_response("The answer is right", ["left", "right"], "(B)")
        True
        >>> score_response("<answer>RIGHT</answer>", ["left", "right"], "(B)")
        False
    """
    return paper_verdict(response, choices, answer)[0]


def _normalize(text: str) -> str:
    return " ".join(text.strip().removesuffix(".").split()).casefold()


def score_response_strict(response: str, choices: list[str], answer: str) -> bool:
    """A stricter companion score (reported separately, never in place of the paper's): the answer text — the first
    ``<answer>`` block, or the whole response when there is none — names the gold option and nothing else: ``B``,
    ``(B)``, the choice text, or ``(B) choice``, ignoring case, spacing and a final period.

    Example:
        >>> score_response_strict("<answer>(B) right</answer>", ["left", "right"], "(B)")
        True
        >>> score_response_strict("The answer is (B)", ["left", "right"], "(B)")
        False
    """
    try:
        gold = gold_option(choices, answer)
        if gold is None or not isinstance(response, str):
            return False
        letter, choice = gold
        extracted = extract_answer(response)
        text = _normalize(response if extracted is None else extracted)
        accepted = {letter, f"({letter})", choice, f"({letter}) {choice}"}
        return bool(text) and text in {_normalize(a) for a in accepted}
    except Exception:
        logger.debug("strict scoring failed", exc_info=True)
        return False


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


# --------------------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------------------


def _missing_dataset_error(name: str, err: Exception | str) -> RecipeError:
    switches = (os.environ.get(v, "0").lower() for v in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"))
    offline = any(value not in ("0", "", "false") for value in switches)
    first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return RecipeError(
        f"cannot load CV-Bench from {name!r}{' (offline mode is set)' if offline else ''}: {first_line}\n"
        f"Without hub access, write synthetic rows in CV-Bench's schema and evaluate on them:\n"
        f"  {SYNTHETIC_COMMAND}\n"
        f"  python recipes/eval_cvbench.py --dataset data/cvbench.parquet ...\n"
        f"or run the offline quickstart: {QUICKSTART}"
    )


def load_cvbench(name_or_path: str, split: str = "test") -> Dataset:
    """CV-Bench rows from a hub id, a parquet file, or a folder; fails with the fix when they cannot be found."""
    path = Path(name_or_path).expanduser()
    try:
        if path.is_file():
            dataset = load_dataset("parquet", data_files=str(path), split="train")
        elif (path / "dataset_dict.json").exists():
            saved = load_from_disk(str(path))
            if split not in saved:
                raise RecipeError(f"{path} has no split {split!r} (it has: {', '.join(saved)}); set --dataset_split")
            dataset = saved[split]
        elif (path / "state.json").exists():
            dataset = load_from_disk(str(path))
        elif path.is_dir():
            dataset = load_dataset(str(path), split=split)
        elif name_or_path.endswith(".parquet") or name_or_path.startswith((".", "/", "~")):
            raise _missing_dataset_error(name_or_path, f"no such file or folder: {path}")
        else:
            dataset = load_dataset(name_or_path, split=split)
    except RecipeError:
        raise
    except Exception as err:  # hub, cache and format errors all mean "no usable dataset here"
        raise _missing_dataset_error(name_or_path, err) from None
    missing = [c for c in COLUMNS if c not in dataset.column_names]
    if missing:
        raise RecipeError(
            f"{name_or_path!r} is not in CV-Bench's schema: missing column(s) {', '.join(missing)} "
            f"(expected {', '.join(COLUMNS)}). Synthetic rows in that schema: {SYNTHETIC_COMMAND}"
        )
    if not isinstance(dataset.features["image"], Image):
        dataset = dataset.cast_column("image", Image())
    return dataset


def row_metadata(dataset: Dataset) -> list[dict]:
    """Every row's columns except the image (cheap: no image is decoded)."""
    return dataset.select_columns([c for c in COLUMNS if c != "image"]).to_list()


def run_config(args: EvalArguments, rows: list[dict]) -> dict:
    """What the predictions depend on; a different value refuses resuming (see RESUME_KEYS)."""
    model = args.model_name_or_path
    if Path(model).expanduser().exists():
        model = str(Path(model).expanduser().resolve())
    dataset = args.dataset
    if Path(dataset).expanduser().exists():
        dataset = str(Path(dataset).expanduser().resolve())
    digest = hashlib.sha256(json.dumps(rows, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    return {
        "model": model,
        "model_revision": args.model_revision,
        "dataset": dataset,
        "dataset_split": args.dataset_split,
        "dataset_rows": len(rows),
        "dataset_fingerprint": digest[:16],
        "prompt": args.prompt,
        "chat_template": args.chat_template,
        "backend": args.backend,
        "dtype": args.dtype,
        "do_sample": False,
        "max_new_tokens": args.max_new_tokens,
        "min_pixels": args.min_pixels,
        "max_pixels": args.max_pixels,
    }


def check_arguments(args: EvalArguments, num_processes: int) -> PromptTemplate:
    """Fail on bad options before anything is loaded or written; the prompt template."""
    try:
        template = get_template(args.prompt)
    except ValueError as err:
        raise RecipeError(str(err)) from None
    if args.dtype not in DTYPES:
        raise RecipeError(f"unknown dtype {args.dtype!r}: choose one of {', '.join(DTYPES)}")
    if args.backend not in BACKENDS:
        raise RecipeError(f"unknown backend {args.backend!r}: choose one of {', '.join(BACKENDS)}")
    if args.backend == "vllm" and num_processes > 1:
        raise RecipeError(
            "--backend vllm batches and shards by itself: run one process (python recipes/eval_cvbench.py ...) and "
            "use --vllm_tensor_parallel_size for several GPUs"
        )
    for name in ("batch_size", "max_new_tokens", "min_pixels", "max_pixels"):
        if getattr(args, name) < 1:
            raise RecipeError(f"--{name} must be at least 1; got {getattr(args, name)}")
    if args.min_pixels > args.max_pixels:
        raise RecipeError(f"--min_pixels ({args.min_pixels}) is larger than --max_pixels ({args.max_pixels})")
    if args.limit is not None and args.limit < 1:
        raise RecipeError(f"--limit must be at least 1; got {args.limit}")
    return template


# --------------------------------------------------------------------------------------------------------------
# Output folder: run config, append-only predictions (one file per process), merge, atomic summaries.
# --------------------------------------------------------------------------------------------------------------


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` all at once: a kill leaves either the old file or the new one."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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


class OutputDir:
    """``predictions.jsonl`` (merged, sorted by row), ``predictions.rank<k>.jsonl`` while several processes run,
    ``run_config.json``, ``summary.json``, ``summary.md``."""

    def __init__(self, root: Path, rank: int = 0, world_size: int = 1):
        self.root = root
        self.predictions = root / "predictions.jsonl"
        self.config = root / "run_config.json"
        # One process appends to predictions.jsonl itself; several each append to their own file.
        self.mine = self.predictions if world_size == 1 else root / f"predictions.rank{rank}.jsonl"

    def shards(self) -> list[Path]:
        return sorted(self.root.glob("predictions.rank*.jsonl"))

    def check_config(self, config: dict) -> None:
        """Refuse to add to predictions made with other settings (a folder without predictions is simply reused)."""
        if not self.read_predictions():
            return
        try:
            saved = json.loads(self.config.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            raise RecipeError(
                f"{self.root} holds predictions but no readable run_config.json, so they cannot be trusted to match "
                "this run: use a new --output_dir (or delete the folder)"
            ) from None
        changed = [k for k in RESUME_KEYS if saved.get(k) != config.get(k)]
        if changed:
            diff = "\n".join(f"  {k}: {saved.get(k)!r} there, {config.get(k)!r} now" for k in changed)
            raise RecipeError(
                f"{self.root} holds predictions made with other settings:\n{diff}\n"
                "Use a new --output_dir for this run, or rerun with the settings above to resume."
            )

    def start(self, config: dict) -> None:
        """Record the run config; fold predictions left by an interrupted run into one clean file."""
        self.root.mkdir(parents=True, exist_ok=True)
        write_atomic(self.config, json.dumps(config, indent=2) + "\n")
        self.merge()

    def read_predictions(self) -> dict[int, dict]:
        """Every complete prediction in the folder, by row (the first one when a row appears twice)."""
        found: dict[int, dict] = {}
        for path in [self.predictions, *self.shards()]:
            for record in read_jsonl(path):
                found.setdefault(record["row"], record)
        return found

    def merge(self) -> dict[int, dict]:
        """Rewrite predictions.jsonl sorted by row with every process's predictions, then drop the per-process files.

        A kill in between leaves the per-process files, whose rows are merged (once) on the next run.
        """
        predictions = dict(sorted(self.read_predictions().items()))
        write_atomic(self.predictions, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in predictions.values()))
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

    def write_summary(self, summary: dict) -> None:
        write_atomic(self.root / "summary.json", json.dumps(summary, indent=2) + "\n")
        write_atomic(self.root / "summary.md", summary_markdown(summary))


# --------------------------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------------------------

Generator = Callable[[list[str], list], list[str]]


def load_model(args: EvalArguments, device: torch.device):
    dtype = "auto" if args.dtype == "auto" else getattr(torch, args.dtype)
    model = AutoModelForImageTextToText.from_pretrained(
        args.model_name_or_path,
        revision=args.model_revision,
        dtype=dtype,
        attn_implementation=attn_implementation(args.attn_implementation),
    )
    return model.to(device).eval()


class HFGenerator:
    """Greedy, batched ``generate`` with left padding; responses decoded as the paper did."""

    def __init__(self, model, processor, max_new_tokens: int):
        self.model = model
        self.processor = processor
        # The checkpoint's generation settings (e.g. its repetition penalty, as in the paper), made greedy.
        config = GenerationConfig.from_dict(model.generation_config.to_dict())
        config.update(do_sample=False, temperature=None, top_p=None, top_k=None, max_new_tokens=max_new_tokens)
        if config.pad_token_id is None:
            config.pad_token_id = processor.tokenizer.pad_token_id
        self.config = config

    def __call__(self, texts: list[str], images: list) -> list[str]:
        inputs = self.processor(text=texts, images=images, padding=True, return_tensors="pt").to(self.model.device)
        with torch.inference_mode():
            output = self.model.generate(**inputs, generation_config=self.config)
        completions = output[:, inputs["input_ids"].shape[1] :]
        return self.processor.batch_decode(completions, skip_special_tokens=True, clean_up_tokenization_spaces=False)


class VLLMGenerator:
    """Greedy generation with vLLM (GPU): the same rendered prompts, images resized with the same bounds."""

    def __init__(self, args: EvalArguments):
        try:
            from vllm import LLM, SamplingParams
        except ImportError:
            raise RecipeError(
                "--backend vllm needs vLLM, which is not installed: on a GPU machine run "
                "pip install -r requirements-gpu.txt (see its notes), or use --backend hf"
            ) from None
        self.llm = LLM(
            model=args.model_name_or_path,
            revision=args.model_revision,
            dtype=args.dtype,
            tensor_parallel_size=args.vllm_tensor_parallel_size,
            gpu_memory_utilization=args.vllm_gpu_memory_utilization,
            max_model_len=args.vllm_max_model_len,
            limit_mm_per_prompt={"image": 1},
            mm_processor_kwargs={"min_pixels": args.min_pixels, "max_pixels": args.max_pixels},
            seed=0,
        )
        self.params = SamplingParams(temperature=0.0, max_tokens=args.max_new_tokens, skip_special_tokens=True)

    def __call__(self, texts: list[str], images: list) -> list[str]:
        requests = [{"prompt": t, "multi_modal_data": {"image": im}} for t, im in zip(texts, images, strict=True)]
        outputs = self.llm.generate(requests, self.params, use_tqdm=False)
        return [o.outputs[0].text for o in outputs]


def make_generator(args: EvalArguments, processor, device: torch.device) -> Generator:
    if args.backend == "vllm":
        return VLLMGenerator(args)
    return HFGenerator(load_model(args, device), processor, args.max_new_tokens)


def prediction_record(row: int, meta: dict, prompt: str, response: str) -> dict:
    """One line of predictions.jsonl: the row, what the model saw and said, and both verdicts."""
    correct, parsed = paper_verdict(response, meta["choices"], meta["answer"])
    return {
        "row": row,
        "idx": meta["idx"],
        "task": meta["task"],
        "source": meta["source"],
        "type": meta["type"],
        "answer": meta["answer"],
        "prompt": prompt,
        "response": response,
        "extracted": extract_answer(response),
        "parsed": [str(p) for p in parsed],
        "correct": correct,
        "correct_strict": score_response_strict(response, meta["choices"], meta["answer"]),
    }


def score_rows(
    dataset: Dataset,
    rows: list[dict],
    shard: list[int],
    template: PromptTemplate,
    processor,
    generate: Generator,
    batch_size: int,
    out: OutputDir,
) -> None:
    """Generate, score and append the predictions of ``shard``, ``batch_size`` rows at a time."""
    images = dataset.select_columns(["image"])
    start = time.perf_counter()
    for first in range(0, len(shard), batch_size):
        batch = shard[first : first + batch_size]
        prompts = [render(processor, template.messages(rows[i]["prompt"], num_images=1)) for i in batch]
        pictures = [image.convert("RGB") for image in images[batch]["image"]]
        if first == 0:
            logger.info("first rendered prompt (before image-token expansion):\n%s", prompts[0])
        responses = generate(prompts, pictures)
        out.append([prediction_record(i, rows[i], p, r) for i, p, r in zip(batch, prompts, responses, strict=True)])
        done = first + len(batch)
        logger.info("%d/%d rows (%.2f rows/s)", done, len(shard), done / (time.perf_counter() - start))


# --------------------------------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------------------------------


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


def summarize(records: list[dict], args: EvalArguments, selected: int, dataset_rows: int) -> dict:
    """Scores over ``records`` (the selected rows' predictions): the paper's plain mean, the official score, groups."""
    per_source = _groups(records, "source")
    official, why = official_score(per_source)
    strict_by_source = {s: {"accuracy": g["accuracy_strict"]} for s, g in per_source.items()}
    if len(records) < selected:
        logger.warning("%d of %d rows have no prediction: re-run to complete them", selected - len(records), selected)
    return {
        "benchmark": "CV-Bench",
        "model": args.model_name_or_path,
        "model_revision": args.model_revision,
        "dataset": args.dataset,
        "dataset_split": args.dataset_split,
        "prompt": args.prompt,
        "chat_template": args.chat_template,
        "generation": {
            "backend": args.backend,
            "dtype": args.dtype,
            "do_sample": False,
            "max_new_tokens": args.max_new_tokens,
            "min_pixels": args.min_pixels,
            "max_pixels": args.max_pixels,
        },
        "rows": {
            "scored": len(records),
            "selected": selected,
            "missing": selected - len(records),
            "dataset": dataset_rows,
            "limit": args.limit,
        },
        "correct": sum(bool(r["correct"]) for r in records),
        "accuracy": _accuracy(records),
        "official_score": official,
        "official_score_note": why,
        "per_task": _groups(records, "task"),
        "per_source": per_source,
        "per_type": _groups(records, "type"),
        "answer_tag_rate": _accuracy([{"tagged": r["extracted"] is not None} for r in records], "tagged"),
        "strict": {
            "accuracy": _accuracy(records, "correct_strict"),
            "official_score": official_score(strict_by_source)[0],
        },
    }


def _pct(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f}%"


def summary_markdown(summary: dict) -> str:
    rows, gen = summary["rows"], summary["generation"]
    lines = [
        f"# CV-Bench: {summary['model']}",
        "",
        f"Prompt `{summary['prompt']}`"
        + (f" (chat template `{summary['chat_template']}`)" if summary["chat_template"] else "")
        + f"; dataset `{summary['dataset']}` ({rows['scored']} of {rows['selected']} selected rows scored"
        + (f", {rows['missing']} missing" if rows["missing"] else "")
        + f"; the dataset has {rows['dataset']}).",
        f"Greedy decoding, up to {gen['max_new_tokens']} new tokens, backend `{gen['backend']}`, "
        f"dtype `{gen['dtype']}`; images resized to {gen['min_pixels']}–{gen['max_pixels']} pixels "
        "(the training bounds by default; the paper's evaluation used the processor's default resolution).",
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
    for title, key in (("task", "per_task"), ("source", "per_source"), ("type", "per_type")):
        lines += ["", f"| {title} | rows | correct | accuracy | strict accuracy |", "|---|---:|---:|---:|---:|"]
        lines += [
            f"| {name} | {g['rows']} | {g['correct']} | {_pct(g['accuracy'])} | {_pct(g['accuracy_strict'])} |"
            for name, g in summary[key].items()
        ]
    return "\n".join(lines) + "\n"


def make_parser() -> TrlParser:
    return TrlParser((EvalArguments,))


if __name__ == "__main__":
    run_cli(main, make_parser(), None, None)
