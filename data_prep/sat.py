"""SAT → experiment-neutral chat records (`data_prep.schema`), streamed, reproducible, and safe on bad rows.

Usage::

    python -m data_prep.sat --input array/SAT --output data/sat_paper --limit 15000 --multi-image skip   # the paper
    python -m data_prep.sat --input SAT_train.parquet --output data/sat_all --num-proc 2

``--input`` is a hub id (streamed with `datasets`), a parquet file, or a folder of parquet files (the files whose
path holds ``--split`` as a word, e.g. ``SAT_train.parquet`` or ``train-00000-of-00004.parquet``; when none does,
the error lists the files and the words that tell them apart). ``image_bytes`` may hold raw encoded bytes or
``{bytes, path}`` image structs. Column types are checked against SAT's schema first (``question``,
``correct_answer`` and ``question_type`` strings, ``answers`` a list of strings, ``image_bytes`` a list of encoded
images).

What it writes: a `datasets` dataset at ``--output`` (``load_from_disk``) with `RECORD_FEATURES` columns, one record
per good source row, in source order, built with ``Dataset.from_generator`` and ``save_to_disk`` in a hidden sibling
folder that is renamed into place when complete (a killed run's hidden folder is removed by the next run). Each
row's options are shuffled by an RNG seeded with (``--seed``, row index), so the result does not depend on batching
or ``--num-proc``. Ids are ``"<source>:<split>:<row index>"`` with the row index counted in the source split
(``<source>`` is the hub id, or the local file/folder name without ``.parquet``).

Images are stored as in the source, checked but not re-encoded, and fitted to the resolution the model sees when the
recipes read the records (`data_prep.images.FitImages` through `recipes.shared.data.fit_images`): an image whose
Qwen2-VL ``smart_resize`` size at the run's bounds differs from its own size is resized to it (PIL bicubic, as the
paper's transformers 4.49 did; `data_prep.images` says why not the processor's own resize). So the trainer, vLLM and
the held-out evaluation all see the same ``image_grid_thw`` and the same pixels, whatever their processor. Prompt
lengths are counted at ``--min-pixels``/``--max-pixels``/``--image-factor`` (default: the paper's 3136 / 401408 / 28).
``--fit-images-at-prep`` fits the images here instead and stores them as lossless PNG (the former default: records that
other tools can read as they are); ``--keep-original-images`` states the default explicitly.

Options: ``--limit N`` limits the rows *read* (``--limit 15000 --multi-image skip`` is the paper's "single-image rows
among the first 15,000 train rows"). ``--max-prompt-tokens`` (default 1024, the paper's prompt limit, which counted
image tokens too) skips rows whose prompt would be longer: image tokens at the bounds + the user text's tokens +
`TEMPLATE_TOKENS` for the recipes' prompt template; the text is counted with ``--tokenizer`` when given, else
over-estimated at one token per 2 UTF-8 bytes (`TextTokenCounter`). ``--num-proc P`` checks, resizes and encodes
images in P threads (default: the cores this process may use). A progress bar shows on a terminal.

Speed and memory (``python benchmarks/bench_sat_prep.py``: 5,000 rows of 512x384 JPEG, every image outside the bounds,
to be fitted to 504x392): fitting at prep costs Pillow ~3.7 ms resizing, ~3.3 ms encoding and ~0.6 ms decoding per
image (cProfile), ~49 s of CPU in all, so ~25 s on two idle cores was the floor for these exact pixels; checking an
image costs a reduced-scale JPEG decode, a small fraction of that. Measured side by side in one run of the benchmark
(``--trees`` the former tree, then this one; 2 cores shared with other work, load average 4.2 before, 3.6 after): the
former tree, fitting at prep, took 94.3 s wall and 69.7 s of CPU, peak RSS 364 MiB, and wrote 81.3 MB for 32.9 MB of
parquet; this one 10.0 s wall and 6.8 s of CPU (9.4x and 10x less), 347 MiB, 72.9 MB (the images x1.00 the source's
bytes; the rest of the ratio is parquet's compression). (At load 7.5-9.5: 268.6 s against 24.0 s, and 14.6 s for 5,000
rows of 112x112 images that need no fitting.) Reading the records through `FitImages` took 10.6 ms per image against
5.6 ms for records fitted at prep (the resize, and a JPEG decode instead of a PNG one), ~0.2 s for a paper step's reads
(16 rows per GPU process) against its ~80 s; the reader's RSS grew alike in both cases over 1,000 records (874 → 885
MiB against 870 → 883 MiB, the recipes' imports included: mapped arrow pages), so the fitting holds no memory. Threads,
not processes: Pillow releases the GIL while it decodes, resizes and encodes (a Python loop in another thread keeps
~90% of its speed meanwhile), so threads use the cores without the start-up and memory of spawned worker processes,
which each import `datasets` again (~2 s of CPU, ~150 MB); measured, threads were as fast (34.0 / 40.5 s against 37.5 /
44.9 s for 1,500 rows, interleaved runs, load ~6). The former ~1 GB peak was torch, imported through qwen_vl_utils for
``smart_resize``, whose arithmetic `data_prep.images` now does. At most 2·P batches of `BATCH_ROWS` rows are in flight,
so the memory the process holds does not grow with the rows; its RSS also counts the pages of the arrow cache that
``save_to_disk`` maps while it copies it (file-backed pages, which the kernel drops when it needs the memory).

``<output>/prep_report.json`` records rows read / written / skipped by reason, the arguments, the hub revision read
(``--revision``, default the pin in `data_prep.sources`; null for local files), the image bounds, how many images are
outside them and where they are fitted (``fitted``: ``load`` or ``prep``; ``resized``: how many were resized here,
which the recipes check against their bounds), a content fingerprint (SHA-256 over the written records, images
included, in order: same input and options, same fingerprint), and ``bytes``: the written rows' images as read and as
stored, their ratio, the input files and the output folder (also logged).

Bad rows are skipped and counted by the first reason that applies, in this order: ``question_empty``,
``options_missing``, ``options_invalid`` (an empty or null option), ``options_duplicate`` (two options equal once
stripped), ``answer_not_in_options``, ``special_tokens`` (the question or an option holds one of the model's
special tokens, e.g. ``<|image_pad|>`` or ``<|im_end|>``: `data_prep.schema.SPECIAL_TOKENS`), ``image_missing``,
``multi_image`` (only with ``--multi-image skip``),
``image_undecodable`` (every image is decoded to check it, at reduced scale for JPEG), ``image_aspect_ratio`` (one
side over 200 times the other: Qwen2-VL's processor refuses it), ``prompt_too_long``. Bad arguments, a missing or
unreadable source, columns of the wrong type, an output path that holds something or cannot be created, and a
conversion that would write no record stop with ``error: ...`` and exit code 2, leaving nothing behind.

Where things live: reading and schema checks in `data_prep.sat_source`, the output folder in `data_prep.sat_output`,
image sizing in `data_prep.images`, the per-row checks and records in `data_prep.sat_rows`, the conversion loop and
the saving in `data_prep.sat_convert`; this module holds `convert` (arguments, report) and the command.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from data_prep import hub
from data_prep.files import write_atomic
from data_prep.images import IMAGE_FACTOR, MAX_PIXELS, MIN_PIXELS, check_bounds, strict_loading
from data_prep.sat_convert import Settings, Tally, available_cores, generate_records, log_sizes, save, sizes
from data_prep.sat_output import check_output, publish, work_folder
from data_prep.sat_rows import (  # noqa: F401  (re-exported: the per-row functions' documented home was here)
    SKIP_REASONS,
    TEMPLATE_TOKENS,
    ImageBounds,
    TextTokenCounter,
    check_row,
    shuffled_options,
)
from data_prep.sat_source import PrepError, open_source

logger = logging.getLogger(__name__)

MULTI_IMAGE_MODES = ("keep", "skip")
REPORT_NAME = "prep_report.json"
# The paper's trainer cut prompts to their last 1,024 tokens, image tokens included (its max_prompt_length).
PAPER_MAX_PROMPT_TOKENS = 1024


def convert(
    source: str,
    output: str | Path,
    *,
    split: str = "train",
    limit: int | None = None,
    seed: int = 0,
    multi_image: str = "keep",
    num_proc: int | None = None,
    max_prompt_tokens: int = PAPER_MAX_PROMPT_TOKENS,
    tokenizer: str | None = None,
    min_pixels: int = MIN_PIXELS,
    max_pixels: int = MAX_PIXELS,
    image_factor: int = IMAGE_FACTOR,
    keep_original_images: bool = False,
    fit_images_at_prep: bool = False,
    revision: str | None = None,
) -> dict:
    """Convert the SAT rows of ``source`` into records saved at ``output``; return the report (also saved there).

    ``num_proc`` threads do the image work (default: `available_cores`). Raises `PrepError` (and leaves everything
    that existed untouched) for bad arguments, a missing or unreadable source, an ``output`` that already holds
    something or cannot be created, or no record to write.
    """
    num_proc = available_cores() if num_proc is None else num_proc
    if multi_image not in MULTI_IMAGE_MODES:
        raise PrepError(f"multi_image must be one of {', '.join(MULTI_IMAGE_MODES)}; got {multi_image!r}")
    if limit is not None and limit < 1:
        raise PrepError(f"limit must be at least 1 (or None for every row); got {limit}")
    if num_proc < 1:
        raise PrepError(f"num_proc must be at least 1; got {num_proc}")
    if max_prompt_tokens < 1:
        raise PrepError(f"max_prompt_tokens must be at least 1; got {max_prompt_tokens}")
    try:
        check_bounds(min_pixels, max_pixels, image_factor)
    except ValueError as err:
        raise PrepError(f"{err}. Fix --min-pixels / --max-pixels / --image-factor.") from err
    if keep_original_images and fit_images_at_prep:
        raise PrepError(
            "--keep-original-images and --fit-images-at-prep contradict each other: keep one (images are kept as in "
            "the source and fitted when loaded unless --fit-images-at-prep is given)"
        )
    output = Path(output).expanduser()
    check_output(output)
    opened = open_source(source, split, revision)
    settings = Settings(
        source_name=opened.name,
        split=split,
        seed=seed,
        multi_image=multi_image,
        bounds=ImageBounds(min_pixels, max_pixels, image_factor, fit_at_prep=fit_images_at_prep),
        max_prompt_tokens=max_prompt_tokens,
        count_text_tokens=TextTokenCounter(tokenizer),
    )

    tally = Tally()
    start = time.perf_counter()
    # Strict loading is switched on once, here, for the whole conversion: the image threads' own switches then only
    # ever restore "strict", so none of them can find truncated images allowed by another thread's restore.
    with work_folder(output) as work, strict_loading():
        records = generate_records(opened, source, limit, settings, num_proc, tally)
        try:
            saved = save(lambda: records, work, tally)
        finally:
            records.close()
        if tally.rows_written == 0:
            reasons = ", ".join(f"{k}={v}" for k, v in tally.skipped.items() if v) or "the source has no rows"
            raise PrepError(
                f"no record to write: all {tally.rows_read} rows read were skipped ({reasons}). Nothing was written; "
                "check the input (the skip reasons are listed in data_prep/sat.py) and run again."
            )
        report = {
            "source": source,
            "source_name": opened.name,
            "source_files": [str(f) for f in opened.files],
            "revision": opened.revision,  # the hub revision read (data_prep/sources.py); None for local files
            "split": split,
            "limit": limit,
            "seed": seed,
            "multi_image": multi_image,
            "num_proc": num_proc,
            "max_prompt_tokens": max_prompt_tokens,
            "prompt_tokens_counted_with": settings.count_text_tokens.description,
            "template_tokens_allowed": TEMPLATE_TOKENS,
            "images": {
                "min_pixels": min_pixels,
                "max_pixels": max_pixels,
                "factor": image_factor,
                "keep_original": keep_original_images,
                # Where the images outside the bounds were fitted: here ("prep", re-encoded as PNG), or by the
                # recipes when they load the records ("load": stored as in the source; `data_prep.images.FitImages`).
                "fitted": "prep" if fit_images_at_prep else "load",
                "outside_bounds": tally.images_outside_bounds,
                "resized": tally.images_outside_bounds if fit_images_at_prep else 0,
            },
            "rows_read": tally.rows_read,
            "rows_written": tally.rows_written,
            "rows_skipped": tally.rows_read - tally.rows_written,
            "skipped_by_reason": tally.skipped,
            "fingerprint": tally.digest.hexdigest(),
            "bytes": sizes(tally, opened, saved),
            "seconds": round(time.perf_counter() - start, 3),
        }
        log_sizes(report["bytes"])
        write_atomic(saved / REPORT_NAME, json.dumps(report, indent=2) + "\n")
        publish(saved, output)
    logger.debug("wrote %d of %d rows to %s", tally.rows_written, tally.rows_read, output)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m data_prep.sat",
        description="Convert SAT (hub id, parquet file or folder) into chat records saved with datasets.",
    )
    parser.add_argument("--input", required=True, help="hub id (array/SAT), a parquet file, or a folder of them")
    parser.add_argument("--output", required=True, help="folder to create (must not exist or be empty)")
    parser.add_argument("--split", default="train", help="source split (default: train)")
    parser.add_argument("--limit", type=int, default=None, help="read only the first N rows of the split")
    parser.add_argument("--seed", type=int, default=0, help="seed of the option shuffling (default: 0)")
    parser.add_argument(
        "--multi-image", choices=MULTI_IMAGE_MODES, default="keep", help="keep or skip rows with several images"
    )
    parser.add_argument(
        "--num-proc",
        type=int,
        default=None,
        help=f"threads for the image checks, resizing and encoding (default: the available cores, here "
        f"{available_cores()})",
    )
    parser.add_argument(
        "--max-prompt-tokens",
        type=int,
        default=PAPER_MAX_PROMPT_TOKENS,
        help=f"skip rows whose prompt (image tokens, text, template) would exceed this (default: "
        f"{PAPER_MAX_PROMPT_TOKENS}, the paper's limit)",
    )
    parser.add_argument(
        "--tokenizer",
        default=None,
        help="tokenizer (model folder or hub id) that counts the prompt's text tokens; default: an over-estimate",
    )
    parser.add_argument(
        "--min-pixels", type=int, default=MIN_PIXELS, help=f"images' minimum area (default: {MIN_PIXELS})"
    )
    parser.add_argument(
        "--max-pixels", type=int, default=MAX_PIXELS, help=f"images' maximum area (default: {MAX_PIXELS})"
    )
    parser.add_argument(
        "--image-factor", type=int, default=IMAGE_FACTOR, help=f"image sides' multiple (default: {IMAGE_FACTOR})"
    )
    parser.add_argument(
        "--keep-original-images",
        action="store_true",
        help="store every image as in the source (the default now: images outside the bounds are fitted when loaded)",
    )
    parser.add_argument(
        "--fit-images-at-prep",
        action="store_true",
        help="resize the images outside the bounds now and store them as PNG (slower and larger; for records read "
        "by other tools than these recipes), instead of fitting them when the recipes load the records",
    )
    parser.add_argument(
        "--revision",
        default=None,
        help="hub revision (branch, tag or 40-hex commit) of a hub --input; default: the pin in data_prep/sources.py",
    )
    parser.add_argument(
        "--push_to_hub",
        metavar="REPO",
        default=None,
        help="then publish the records with a dataset card (data_prep/hub.py)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.push_to_hub and (problem := hub.push_problem(args.push_to_hub)):  # before hours of conversion
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        report = convert(
            args.input,
            args.output,
            split=args.split,
            limit=args.limit,
            seed=args.seed,
            multi_image=args.multi_image,
            num_proc=args.num_proc,
            max_prompt_tokens=args.max_prompt_tokens,
            tokenizer=args.tokenizer,
            min_pixels=args.min_pixels,
            max_pixels=args.max_pixels,
            image_factor=args.image_factor,
            keep_original_images=args.keep_original_images,
            fit_images_at_prep=args.fit_images_at_prep,
            revision=args.revision,
        )
    except PrepError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    reasons = ", ".join(f"{k}={v}" for k, v in report["skipped_by_reason"].items() if v) or "none"
    print(
        f"wrote {report['rows_written']} records to {args.output} (read {report['rows_read']}, skipped "
        f"{report['rows_skipped']}: {reasons}; {report['images']['outside_bounds']} images outside the bounds, fitted "
        f"at {report['images']['fitted']}; stored images x{report['bytes']['stored_vs_source_images']:.2f} the "
        f"source's bytes) in {report['seconds']:.1f} s; "
        f"fingerprint {report['fingerprint'][:16]}"
    )
    if args.push_to_hub:
        command = ["python", "-m", "data_prep.sat", *(sys.argv[1:] if argv is None else argv)]
        try:
            print(f"pushed to {hub.push_folder(args.output, args.push_to_hub, command)}")
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
