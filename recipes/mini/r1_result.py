"""Mini R1-Zero's result: ``result.json`` (held-out colour accuracy before and after GRPO, its curve, the rewards,
the timings, PASS or FAIL against the issue's bar), ``curve.png`` and the summary line, read from the log histories
the recipes leave in ``stage_a/`` and ``stage_b/`` (``trainer_state.json``). The experiment is `recipes.mini.r1`.
"""

from __future__ import annotations

import json
from pathlib import Path

from data_prep.files import write_atomic
from recipes.mini.runs import claim_outputs

ACCURACY_KEY = "heldout/accuracy"
REWARD_KEYS = {
    "accuracy reward (format-gated)": "rewards/accuracy_reward/mean",
    "format reward": "rewards/format_reward/mean",
}
# The bar: the base is at chance on the colour question, GRPO makes it right.
BEFORE_AT_MOST, AFTER_AT_LEAST = 0.60, 0.90


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


REPORT_ENTRY, REPORT_KIND, REPORT_FILES = "report", "mini-report", ("result.json", "curve.png")


def report(out: Path, seed: int, seconds: dict[str, float], extra: dict) -> dict:
    result = build_result(out, seed, seconds, extra)
    # Recorded before they are written, so that a fresh start deletes them (and only them).
    claim_outputs(out, REPORT_ENTRY, REPORT_KIND, REPORT_FILES, seed=seed)
    write_atomic(out / "result.json", json.dumps(result, indent=2) + "\n")
    plot(result, out / "curve.png")
    return result
