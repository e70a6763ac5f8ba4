"""Mini R1-Zero helpers: the inputs of both stages, and the result of a run (result.json, a PNG, a summary line).

    python -m recipes.mini_r1 prepare --out outputs/mini_r1/seed0 --seed 0     # model + data, through data_prep
    python -m recipes.mini_r1 report --out outputs/mini_r1/seed0 --seed 0      # after both stages have run

`launch/mini_r1.sh` runs prepare, stage A (`recipes/sft_baseline.py`), stage B (`recipes/grpo_base.py`) and report;
`recipes/MINI_R1.md` explains the experiment. ``prepare`` writes, under ``--out``:

``init/``                  the random mini Qwen2-VL (`data_prep.tiny_model`, preset "mini", seeded)
``data/shape``             stage A records: "Is the shape a triangle?" (`data_prep.synthetic` → `data_prep.sat`)
``data/shape_heldout``     held-out stage A records (another seed)
``data/color``             stage B records: "Is the shape red?"
``data/color_heldout``     the held-out colour records whose greedy accuracy is the experiment's result

``report`` reads the log histories the recipes leave in ``stage_a/`` and ``stage_b/`` (``trainer_state.json``).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path

from data_prep.sat import convert
from data_prep.synthetic import write_synthetic
from data_prep.tiny_model import build_tiny_model

logger = logging.getLogger(__name__)

HELDOUT_SEED_OFFSET = 1000  # held-out scenes are drawn with seed + 1000: never the training scenes
ACCURACY_KEY = "heldout/accuracy"
REWARD_KEYS = {
    "accuracy reward (format-gated)": "rewards/accuracy_reward/mean",
    "format reward": "rewards/format_reward/mean",
}
# The bar: the base is at chance on the colour question, GRPO makes it right.
BEFORE_AT_MOST, AFTER_AT_LEAST = 0.60, 0.90


# --------------------------------------------------------------------------------------------------------------
# prepare
# --------------------------------------------------------------------------------------------------------------


def datasets_to_write(seed: int, shape_rows: int, color_rows: int, heldout_rows: int) -> dict[str, tuple]:
    """Folder name → (synthetic kind, rows, seed) of every dataset of a run."""
    heldout_seed = seed + HELDOUT_SEED_OFFSET
    return {
        "shape": ("mini_shape", shape_rows, seed),
        "shape_heldout": ("mini_shape", heldout_rows, heldout_seed),
        "color": ("mini_color", color_rows, seed),
        "color_heldout": ("mini_color", heldout_rows, heldout_seed),
    }


def prepare(out: Path, seed: int, shape_rows: int, color_rows: int, heldout_rows: int) -> None:
    """The random model and the four record datasets of one run, rebuilt from scratch (they are deterministic)."""
    build_tiny_model(out / "init", variant="base", seed=seed, preset="mini", overwrite=True)
    data = out / "data"
    shutil.rmtree(data, ignore_errors=True)
    for name, (kind, rows, data_seed) in datasets_to_write(seed, shape_rows, color_rows, heldout_rows).items():
        raw = write_synthetic(kind, rows, data_seed, data / "raw" / f"{name}.parquet")
        convert(str(raw), data / name, seed=data_seed)
        logger.info("%s: %d %s records (seed %d)", data / name, rows, kind, data_seed)


# --------------------------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------------------------


def log_history(run_dir: Path) -> list[dict]:
    path = run_dir / "trainer_state.json"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: did this stage run? Run the whole experiment: bash launch/mini_r1.sh"
        )
    return json.loads(path.read_text())["log_history"]


def series(history: list[dict], key: str) -> list[list[float]]:
    """[[step, value], ...] of one logged metric, in step order (the last value logged at a step wins)."""
    points = {entry["step"]: entry[key] for entry in history if entry.get(key) is not None}
    return [[step, points[step]] for step in sorted(points)]


def build_result(out: Path, seed: int, seconds: dict[str, float], extra: dict) -> dict:
    stage_a, stage_b = log_history(out / "stage_a"), log_history(out / "stage_b")
    curve = series(stage_b, ACCURACY_KEY)
    if not curve:
        raise ValueError(f"{out / 'stage_b'} logged no {ACCURACY_KEY}: was heldout_dataset_path set?")
    shape_curve = series(stage_a, ACCURACY_KEY)
    before, after = curve[0][1], curve[-1][1]
    return {
        "seed": seed,
        "question": "Is the shape red? Answer yes or no.",
        "before": before,
        "after": after,
        "curve": curve,
        "heldout_format": series(stage_b, "heldout/format"),
        "rewards": {name: series(stage_b, key) for name, key in REWARD_KEYS.items()},
        "stage_a_shape_accuracy": shape_curve[-1][1] if shape_curve else None,
        "stage_a_curve": shape_curve,
        "steps": {"stage_a": _last_step(stage_a), "stage_b": _last_step(stage_b)},
        "timings": seconds,
        "passed": before <= BEFORE_AT_MOST and after >= AFTER_AT_LEAST,
        **extra,
    }


def _last_step(history: list[dict]) -> int:
    return max((entry.get("step", 0) for entry in history), default=0)


def plot(result: dict, path: Path) -> Path:
    """Stage A's and stage B's held-out accuracy and stage B's training rewards, as a small PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (shape, color, rewards) = plt.subplots(1, 3, figsize=(12, 3.3), dpi=80)
    for ax, points, colour, title in (
        (shape, result["stage_a_curve"], "tab:gray", "stage A (SFT): shape question"),
        (color, result["curve"], "tab:red", "stage B (GRPO): colour question"),
    ):
        if points:
            steps, values = zip(*points, strict=True)
            ax.plot(steps, [100 * v for v in values], "o-", color=colour)
        ax.axhline(50, color="black", lw=0.6, ls=":")
        ax.set(xlabel="step", ylabel="held-out greedy accuracy (%)", ylim=(0, 102))
        ax.set_title(title, fontsize=10)
    color.set_title(
        f"stage B (GRPO), colour: {100 * result['before']:.1f}% → {100 * result['after']:.1f}%", fontsize=10
    )
    for name, points in result["rewards"].items():
        if points:
            steps, values = zip(*points, strict=True)
            rewards.plot(steps, values, label=name)
    rewards.set(xlabel="step", ylabel="mean reward of the sampled completions", ylim=(-0.02, 1.02))
    rewards.set_title("stage B training rewards (temperature 1)", fontsize=10)
    rewards.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"Mini R1-Zero, seed {result['seed']}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def summary_line(result: dict, out: Path) -> str:
    timings = result["timings"]
    minutes = timings.get("total", sum(timings.values())) / 60
    stages = ", ".join(f"{name} {value:.0f} s" for name, value in timings.items() if name != "total")
    verdict = "PASS" if result["passed"] else "FAIL"
    load = result.get("load_average")
    load_text = f", load {load[0]:.1f}→{load[1]:.1f}" if load else ""
    return (
        f"mini R1-Zero seed {result['seed']}: held-out colour accuracy {100 * result['before']:.1f}% -> "
        f"{100 * result['after']:.1f}% [{verdict}: <= {100 * BEFORE_AT_MOST:.0f}% -> >= {100 * AFTER_AT_LEAST:.0f}%] "
        f"in {minutes:.1f} min ({stages}{load_text}); {out / 'result.json'}"
    )


def report(out: Path, seed: int, seconds: dict[str, float], extra: dict) -> dict:
    result = build_result(out, seed, seconds, extra)
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, out / "curve.png")
    return result


# --------------------------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------------------------


def _key_values(items: list[str]) -> dict[str, float]:
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--seconds takes NAME=SECONDS pairs, got {item!r}")
        pairs[key] = float(value)
    return pairs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recipes.mini_r1", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    prep = commands.add_parser("prepare", help="build the random model and the records of both stages")
    prep.add_argument("--out", type=Path, required=True)
    prep.add_argument("--seed", type=int, default=0)
    prep.add_argument("--shape-rows", type=int, default=9600, help="stage A records (steps x batch: one epoch)")
    prep.add_argument("--color-rows", type=int, default=600, help="stage B records (steps x prompts per step)")
    prep.add_argument("--heldout-rows", type=int, default=200, help="held-out records of each question")
    rep = commands.add_parser("report", help="write result.json and curve.png, print the summary line")
    rep.add_argument("--out", type=Path, required=True)
    rep.add_argument("--seed", type=int, default=0)
    rep.add_argument("--seconds", nargs="*", default=[], help="wall-clock seconds per stage, NAME=SECONDS")
    rep.add_argument("--cpu-seconds", type=float, default=None, help="CPU seconds used by all stages")
    rep.add_argument("--load", type=float, nargs=2, default=None, help="1-minute load average at start and end")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    if args.command == "prepare":
        prepare(args.out, args.seed, args.shape_rows, args.color_rows, args.heldout_rows)
        return 0
    extra = {}
    if args.cpu_seconds is not None:
        extra["cpu_seconds"] = args.cpu_seconds
    if args.load is not None:
        extra["load_average"] = args.load
    try:
        result = report(args.out, args.seed, _key_values(args.seconds), extra)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summary_line(result, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
