"""The recipes' own options (`RecipeArguments`): everything a run needs that is not a TRL training or model option.

Defaults here are placeholders for the YAML configs (`recipes/configs/`), which set every value an experiment uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from data_prep.images import MAX_PIXELS, MIN_PIXELS


@dataclass
class RecipeArguments:
    """Options of the recipes that are not TRL training or model options."""

    dataset_path: str = field(
        default="data/sat_paper",
        metadata={
            "help": "Records written by `python -m data_prep.sat`: its output folder, or a Hub dataset id they were "
            "pushed to (`--push_to_hub`), read with datasets' load_dataset at dataset_split/dataset_revision."
        },
    )
    dataset_split: str = field(
        default="train", metadata={"help": "Split of a Hub dataset_path (or a folder of data files)."}
    )
    dataset_revision: str | None = field(
        default=None,
        metadata={"help": "Hub revision (branch, tag or 40-hex commit) of a Hub dataset_path; unset: main."},
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Use only the first N records (quick experiments)."}
    )
    prompt_template: str = field(
        default="base",
        metadata={"help": "Prompt template from recipes/shared/prompts.py: base, base_no_reasoning, instruct, ..."},
    )
    chat_template: str | None = field(
        default=None,
        metadata={"help": "Replace the model's chat template: 'qwen2vl' (instruct format) or 'plain' (no roles)."},
    )
    reward_funcs: list[str] = field(
        default_factory=lambda: ["accuracy", "format"],
        metadata={
            "help": "Rewards: names from the `rewards` registry, or any importable reward function as "
            "'package.module:function' or 'package.module.function' (README, 'Add a reward'); weights go in "
            "`reward_weights`."
        },
    )
    accuracy_mode: str = field(
        default="paper",
        metadata={"help": "'paper' (the paper's three checks, math-verify in its argument order) or 'gold_first'."},
    )
    accuracy_requires_format: bool = field(
        default=False, metadata={"help": "Count accuracy only when the format reward is 1 (format-gated accuracy)."}
    )
    length_scale: float | None = field(
        default=None,
        metadata={"help": "Reward per completion token of the length reward; unset: the registry's 0.001."},
    )
    min_pixels: int = field(default=MIN_PIXELS, metadata={"help": "Smallest image area (pixels) after resizing."})
    max_pixels: int = field(default=MAX_PIXELS, metadata={"help": "Largest image area (pixels) after resizing."})
    freeze_vision: bool = field(default=False, metadata={"help": "Freeze the vision tower and its patch merger."})
    freeze_llm: bool = field(default=False, metadata={"help": "Freeze the language model (embeddings and head too)."})
    dry_run: bool = field(
        default=False, metadata={"help": "Print the first rendered prompts (special tokens included) and exit."}
    )
    dry_run_samples: int = field(default=2, metadata={"help": "How many prompts --dry_run prints."})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Replace the recipe run recorded in output_dir: exactly the paths it recorded (provenance.json) "
            "are deleted, just before training; other files stay. Without it such a folder is refused unless the "
            "run resumes it (--resume_from_checkpoint). A folder with files but no record is always refused."
        },
    )
    prompts_per_step: int | None = field(
        default=None,
        metadata={
            "help": "Prompts per optimizer step over all processes (the paper: 8). Gradient accumulation is derived "
            "from it, per_device_train_batch_size and the number of processes; a combination that cannot give it "
            "exactly is refused. Unset: gradient_accumulation_steps as given."
        },
    )
    sft_loss: str = field(
        default="trl",
        metadata={
            "help": "SFT only. 'trl': TRL's loss (token mean over the batch; completion_only_loss decides what "
            "counts). 'paper': the paper's loss, the whole rendered sequence with padding and the vision special "
            "tokens masked, a token mean per sequence averaged over sequences."
        },
    )
    wandb_project: str | None = field(default=None, metadata={"help": "W&B project (sets WANDB_PROJECT)."})
    wandb_group: str | None = field(
        default=None, metadata={"help": "W&B group shared by the runs of one ablation suite (sets WANDB_RUN_GROUP)."}
    )
    dump_trajectories: bool = field(
        default=False,
        metadata={
            "help": "Write <output_dir>/trajectories/step-*.jsonl: prompt id, completion, each reward, per step."
        },
    )
    heldout_dataset_path: str | None = field(
        default=None,
        metadata={"help": "Records (data_prep format) scored by greedy decoding every `heldout_eval_steps` steps."},
    )
    heldout_eval_steps: int = field(default=25, metadata={"help": "How often the held-out accuracy is measured."})
    heldout_samples: int | None = field(default=None, metadata={"help": "Score only the first N held-out records."})
    heldout_max_new_tokens: int | None = field(
        default=None,
        metadata={"help": "Longest held-out completion; unset: the run's max_completion_length (GRPO), else 256."},
    )
    completion_template: str | None = field(
        default=None,
        metadata={
            "help": "SFT target: a format string over {answer} (the record's answer), e.g. "
            "' I see it. </think><answer> {answer} </answer>'; unset: the bare answer."
        },
    )
    model_save_steps: float | None = field(
        default=None,
        metadata={
            "help": "Save the model alone (no optimizer state), with its processor, to <output_dir>/models/step-<N> "
            "every N steps and at the end of training: what the CV-Bench curve (recipes/eval_curve.py) evaluates. "
            "A value below 1 is a fraction of the run; 0 or unset: none."
        },
    )
    model_save_dtype: str = field(
        default="auto",
        metadata={
            "help": "dtype of those model saves: bfloat16, float16, float32, or auto (the training's 16-bit "
            "precision when bf16/fp16 is set, else the model's dtype)."
        },
    )
    skip_disk_check: bool = field(
        default=False,
        metadata={
            "help": "Start even when the estimated disk use of the run (logged at start) exceeds the free space of "
            "the output file system."
        },
    )
