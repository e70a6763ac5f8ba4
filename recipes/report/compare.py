"""Compare runs and arms: training curves side by side, mean ± s.d. over seeds, in one self-contained HTML page.

    python -m recipes.compare outputs/paper/grpo_base outputs/paper/grpo_instruct --output outputs/paper/report.html
    python -m recipes.compare outputs/seed*/grpo_base outputs/seed*/sft_baseline --output report.html
    python -m recipes.compare --arm grpo runs/a runs/b runs/c --arm sft runs/d runs/e --output report.html
    python -m recipes.compare --wandb me/visualthinker-r1-zero/1a2b3c4d me/visualthinker-r1-zero/5e6f --output r.html

Writes ``report.html`` (the figure embedded as base64: one file to share) and the figure next to it (``report.png``),
both atomically. Needs no network unless a W&B run path is given.

Where the numbers come from
    ``RUN_DIR`` (a recipe's ``output_dir``): its log history, ``RUN_DIR/trainer_state.json`` (kept current at every
    log by `recipes.shared.callbacks.LogHistoryCallback`; ``trainer.save_state()`` writes the same file) or the newest
    ``RUN_DIR/checkpoint-*/trainer_state.json``, whichever reaches the later step. Its CV-Bench result is
    ``RUN_DIR/eval_cvbench/summary.json`` (``recipes/eval_cvbench.py --output_dir RUN_DIR/eval_cvbench``, as
    ``launch/run_ablations.sh`` does): ``accuracy`` (the paper's plain mean), ``official_score``, ``strict`` and the
    ``per_task``/``per_source`` breakdowns — counted only when it was computed from the run folder's final weights
    and covers the whole dataset (`recipes.report.checks`); any other summary is shown, marked with why, and kept
    out of every mean. A metric logged as NaN/inf is shown as divergence (a red cross in the figure, "diverged" in
    the table), never replaced by the run's last finite value.
    Its CV-Bench curve along training, ``RUN_DIR/eval_curve/step-<N>/summary.json`` (``recipes/eval_curve.py``; for
    a W&B run the ``cvbench/*`` metrics against ``cvbench/step``), is drawn in two panels: the paper's score and the
    official one.
    ``--wandb ENTITY/PROJECT/RUN_ID`` (or ``wandb:ENTITY/PROJECT/RUN_ID`` wherever a RUN_DIR is accepted): the run's
    full history, config and tags through W&B's public API (``wandb.Api().run(...)``; needs network and ``wandb
    login``). A local W&B run folder (``RUN_DIR/wandb/offline-run-*``) is read through its RUN_DIR's own log
    history: W&B's binary ``.wandb`` file is never parsed (``wandb sync`` it to read it through the API).

Arms: runs of the same experiment with different seeds
    Runs are grouped into arms; an arm of several runs is drawn as the mean over its runs with a band from the
    lowest to the highest run (min–max), its legend entry saying how many (``grpo_base (n=3)``), and the table gives
    mean ± sample s.d. of each run's final value. An arm of one run is drawn as the run itself.
    * ``--arm NAME RUN [RUN ...]`` (repeatable) names an arm and its runs explicitly.
    * Every other run is grouped automatically by its experiment: for a W&B run its ``arm:<name>`` or
      ``experiment:<name>`` tag (set by `recipes.shared.prepare.setup_reporting`; the W&B *group* is the suite, which
      holds every arm), for a RUN_DIR the folder name of ``output_dir`` in ``RUN_DIR/resolved_config.yaml`` (else the
      folder's own name). A trailing seed marker is dropped (``grpo_seed1`` and ``grpo-seed2`` are arm ``grpo``; a
      folder named ``seed3`` stands for its parent). Runs of one name are seeds of one arm only when their resolved
      configurations agree apart from the seed and what only names the run (output_dir, run_name, logging dirs, W&B
      names); otherwise the arm is split by the settings that differ, named in the arm and the table.
      The seed comes from the ``seed:<n>`` tag, the config's ``seed``
      or that marker (or a parent folder named ``seed<N>``). Two runs of one automatic arm with the same seed are
      refused (they are not seed replicates: name the arms with ``--arm``). ``--group-by run`` draws every run
      outside an ``--arm`` on its own instead.

The curves: accuracy reward, format reward, total reward, completion length, the self-reflection ("aha") monitor,
KL to the reference, entropy, training loss and the held-out accuracy (`recipes.shared.heldout`). A single run also
shows its spread within the run (total reward ± its std across completions; completion length from shortest to
longest). Runs may log at different steps or lack metrics (an SFT run has no rewards): a missing metric is an absent
line and the table says what an arm lacks; an arm's mean is taken at the steps all its runs logged.

Python API, for drivers such as a seeds × arms ablation suite (`launch/run_ablations.sh` uses the command line)::

    from recipes.report.compare import PANELS, Arm, Panel, load_run_dir, write_report

    arms = [Arm("grpo", [load_run_dir(d, scalars={"OOD accuracy": acc}) for d, acc in grpo_runs]), ...]
    write_report(arms, "report.html", "Mini ablations", panels=[*PANELS, Panel("OOD accuracy", "ood/accuracy")])

``scalars`` are per-run final values a caller measured elsewhere; the table gives their mean ± s.d. per arm.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from data_prep.files import write_atomic
from recipes.report.arms import build_arms
from recipes.report.figure import plot
from recipes.report.read import load_run, load_run_dir
from recipes.report.render import render_html
from recipes.report.runlog import PANELS, Arm, CompareError, Panel, RunLog

# The Python API the docstring names, importable from here; the rest from the module that defines it.
__all__ = ["PANELS", "Arm", "CompareError", "Panel", "RunLog", "load_run", "load_run_dir", "main", "write_report"]


def write_report(
    runs: Sequence[RunLog | Arm],
    output: str | Path,
    title: str = "Ablation comparison",
    *,
    panels: Sequence[Panel] = PANELS,
    group_by: str = "arm",
) -> Path:
    """Write ``output`` (HTML) and the PNG next to it (same name, ``.png``); returns the PNG's path.

    ``runs``: `RunLog`s (grouped into arms as ``group_by`` says) and/or `Arm`s (kept as given). ``panels``: the
    curves to draw (`PANELS` plus any of the caller's); ``optional`` ones only when some run logged them.
    """
    if not runs:
        raise CompareError("nothing to compare: give at least one RUN_DIR, --arm or --wandb run")
    output = Path(output)
    png_path = output.with_suffix(".png")
    if output.is_dir() or png_path == output:
        raise CompareError(f"--output {output} must be an HTML file path (the PNG is written next to it)")
    arms = build_arms(runs, group_by)
    png = plot(arms, panels)
    page = render_html(arms, png, title, panels)
    try:
        write_atomic(png_path, png)
        write_atomic(output, page)
    except OSError as err:
        raise CompareError(f"cannot write the report: {err}") from None
    return png_path


# --- command line ----------------------------------------------------------------------------------------------------


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m recipes.compare",
        description="Training curves of runs side by side, runs of one experiment over seeds as their mean and a "
        "min–max band, and a table of mean ± s.d. of the final metrics and CV-Bench results per arm, as one "
        "self-contained HTML file (+ a PNG next to it). Arms: the runs of an --arm, and the other runs grouped by "
        "experiment (W&B tag experiment:<name>; a RUN_DIR's resolved_config.yaml output_dir, else its folder name; "
        "a trailing -seed<N> dropped).",
        epilog="A RUN is a RUN_DIR or wandb:ENTITY/PROJECT/RUN_ID; give loose RUNs before the first --arm (an --arm "
        "takes every RUN after it). Examples: python -m recipes.compare out/s0/grpo "
        "out/s1/grpo out/s0/sft --output r.html; python -m recipes.compare --arm grpo a b c --arm sft d e "
        "--output r.html",
    )
    parser.add_argument(
        "run_dirs", nargs="*", metavar="RUN", help="output_dir of a recipe run (grouped automatically)"
    )
    parser.add_argument(
        "--wandb",
        nargs="+",
        default=[],
        metavar="RUN_PATH",
        help="W&B runs: ENTITY/PROJECT/RUN_ID through the public API (needs network and `wandb login`); a local W&B "
        "run folder RUN_DIR/wandb/offline-run-* is read through RUN_DIR's log history",
    )
    parser.add_argument(
        "--arm",
        nargs="+",
        action="append",
        default=[],
        metavar=("NAME", "RUN"),
        help="an arm named NAME made of the RUNs given after it (repeatable)",
    )
    parser.add_argument(
        "--group-by",
        choices=("arm", "run"),
        default="arm",
        help="arm (default): runs outside --arm grouped by experiment over seeds; run: every such run drawn alone",
    )
    parser.add_argument("--output", required=True, help="the HTML report to write; the PNG goes next to it")
    parser.add_argument("--title", default="Ablation comparison", help="the report's title")
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = make_parser()
    args = parser.parse_args(argv)
    for name, *specs in args.arm:
        if not specs:
            parser.error(f"--arm {name} names no run: --arm NAME RUN [RUN ...]")
    try:
        if not (args.run_dirs or args.wandb or args.arm):
            raise CompareError("nothing to compare: give at least one RUN_DIR, --arm NAME RUN... or --wandb RUN_PATH")
        arms = [Arm(name, [load_run(spec) for spec in specs]) for name, *specs in args.arm]
        runs = [load_run(spec) for spec in args.run_dirs] + [load_run(f"wandb:{spec}") for spec in args.wandb]
        png_path = write_report([*arms, *runs], args.output, args.title, group_by=args.group_by)
    except CompareError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    count = len(runs) + sum(len(arm.runs) for arm in arms)
    print(f"wrote {args.output} and {png_path} ({count} runs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
