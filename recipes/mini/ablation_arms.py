"""What defines a mini ablation suite: its arms (`ARMS`: recipe, config, description) and its `Settings`.

The suite itself is `recipes.mini.ablations`; its out-of-distribution scoring `recipes.mini.ood`; its summary and
report `recipes.mini.ablation_summary`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from recipes.mini.r1 import CONFIG_DIR, GRPO_RECIPE, SFT_RECIPE
from recipes.mini.runs import StageError

SUITE = "mini_ablations"
MINI = CONFIG_DIR / "mini"
OOD_FILE = "ood.json"
HELDOUT_KEY, OOD_KEY = "heldout/accuracy", "ood/accuracy"


@dataclass(frozen=True)
class ArmSpec:
    recipe: Path
    config: Path
    description: str


ARMS: dict[str, ArmSpec] = {
    "grpo": ArmSpec(GRPO_RECIPE, MINI / "grpo_color.yaml", "GRPO, the paper's settings (MINI_R1's stage B)"),
    "grpo_length": ArmSpec(GRPO_RECIPE, MINI / "grpo_color_length.yaml", "GRPO + the naive length reward"),
    "sft": ArmSpec(SFT_RECIPE, MINI / "sft_color.yaml", "SFT on the same records (answer targets)"),
    "dr_grpo": ArmSpec(GRPO_RECIPE, MINI / "grpo_color_dr_grpo.yaml", "Dr. GRPO loss"),
    "dapo": ArmSpec(GRPO_RECIPE, MINI / "grpo_color_dapo.yaml", "DAPO loss"),
    "gspo": ArmSpec(GRPO_RECIPE, MINI / "grpo_color_gspo.yaml", "GSPO (sequence-level ratio, off-policy split)"),
}


@dataclass
class Settings:
    """What defines a suite run (the launcher's environment)."""

    out: Path
    seeds: list[int]
    arms: list[str] = field(default_factory=lambda: list(ARMS))
    stage_a_steps: int = 600
    stage_b_steps: int = 60
    heldout_rows: int = 200
    ood_rows: int = 200
    every_a: int = 100
    every_b: int = 10
    report_to: str = "none"
    group: str = SUITE
    jobs: int = 2

    def check(self) -> None:
        unknown = [arm for arm in self.arms if arm not in ARMS]
        if unknown:
            raise StageError(f"unknown arm(s) {', '.join(unknown)}; valid arms: {', '.join(ARMS)}")
        if not self.seeds or not self.arms:
            raise StageError("give at least one seed and one arm")
        if len(set(self.seeds)) != len(self.seeds) or len(set(self.arms)) != len(self.arms):
            raise StageError(f"seeds and arms must not repeat: seeds {self.seeds}, arms {self.arms}")
        for name in ("stage_a_steps", "stage_b_steps", "heldout_rows", "ood_rows", "every_a", "every_b", "jobs"):
            if getattr(self, name) < 1:
                raise StageError(f"{name} must be at least 1, got {getattr(self, name)}")


def home_of(out: Path, seed: int) -> Path:
    return out / f"seed{seed}"
