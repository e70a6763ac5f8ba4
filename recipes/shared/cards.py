"""The model card of a run folder (``README.md``): what the model is, how it was trained and scored, read from the
folder's own files, rendered with huggingface_hub's `ModelCard` so that it shows correctly on the Hub.

Everything on the card comes from what the run folder holds, never from the command that happens to render it:
``resolved_config.yaml`` (base model, data, recipe, every setting, the number of processes), ``trainer_state.json``
(steps trained), the data folder's ``prep_report.json`` when it is still there (source dataset, revision, rows kept and
skipped), ``eval_cvbench/summary.json`` (CV-Bench, counted only when it scored this folder's final weights on the whole
dataset: `recipes.report.checks.cvbench_problem`; otherwise shown with the reason), ``eval_curve/curve.json`` and
``wandb/``. What is unknown is left out of the front matter (a local base model is no Hub id; a license is given only
when the base model's own card states one) rather than guessed.

TRL writes a generic card into the output folder each time it saves a checkpoint (``create_model_card`` in
``GRPOTrainer._save_checkpoint`` / ``SFTTrainer._save_checkpoint``: "fine-tuned version of [None]"). `write_card`
replaces it once training has ended (`recipes.shared.run_folder.train_and_save`), and the folder's provenance record
owns ``README.md``; `python -m recipes.push_to_hub` renders it again before uploading, so an evaluation or curve
added later appears on it.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from data_prep.files import write_atomic
from recipes.evaluation.curve import CURVE_DIR, find_wandb_run, wandb_project
from recipes.shared import provenance
from recipes.shared.errors import RecipeError
from recipes.shared.resolved import RESOLVED_CONFIG

logger = logging.getLogger(__name__)

CARD = "README.md"
PAPER_ARXIV = "2503.05132"
PAPER_TITLE = "R1-Zero's 'Aha Moment' in Visual Reasoning on a 2B Non-SFT Model"
CVBENCH_ID = "nyu-visionx/CV-Bench"
EVAL_DIR = "eval_cvbench"
# The project README's section listing what differs from the paper (one source of those facts: linked, not repeated).
DIFFERS_SECTION = "Where this differs from the paper's code (on purpose)"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
RECIPES = {"grpo": "GRPO (TRL `GRPOTrainer`)", "sft": "SFT (TRL `SFTTrainer`)"}


def is_hub_id(name: str | None) -> bool:
    """Whether ``name`` reads as a Hub repository id (``owner/name``) rather than a local path.

    Example:
        >>> is_hub_id("Qwen/Qwen2-VL-2B"), is_hub_id("/tmp/models/tiny"), is_hub_id("a/b/c"), is_hub_id("x")
        (True, False, False, False)
    """
    return bool(name) and not Path(str(name)).expanduser().exists() and bool(HUB_ID.match(str(name)))


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, ValueError) as err:
        logger.warning("model card: %s is unreadable (%s): left off the card", path, err)
        return None
    return value if isinstance(value, dict) else None


def read_config(run_dir: Path) -> dict[str, Any]:
    """The run's resolved configuration; a folder without one is no finished recipe run."""
    path = run_dir / RESOLVED_CONFIG
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise RecipeError(
            f"{run_dir} has no readable {RESOLVED_CONFIG} ({err}): it is not the output folder of a recipe run "
            "(recipes/grpo_base.py, grpo_instruct.py, sft_baseline.py), so no model card can say what trained it"
        ) from None
    if not isinstance(config, dict):
        raise RecipeError(f"{path} holds no configuration: train the run again")
    return config


def _license(base_model: str) -> str | None:
    """The license the base model's own card declares (a local folder or the local Hub cache; no network)."""
    card_path: str | Path | None = Path(base_model).expanduser() / CARD
    if not Path(card_path).is_file() and is_hub_id(base_model):
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(base_model, CARD)
        card_path = cached if isinstance(cached, str) else None
    if not card_path or not Path(card_path).is_file():
        return None
    try:
        return ModelCard.load(card_path).data.license
    except Exception:  # noqa: BLE001 - a card that does not parse states no license we can trust
        return None


def data_source(dataset_path: str, revision: str | None = None) -> dict[str, Any]:
    """What the run trained on: the Hub dataset it names, or the local records and their ``prep_report.json``."""
    if is_hub_id(dataset_path):  # its report as the run downloaded it (the local cache; no network)
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(dataset_path, "prep_report.json", revision=revision, repo_type="dataset")
        report = _read_json(Path(cached)) if isinstance(cached, str) else None
        return {"hub_id": dataset_path, "report": report}
    report = _read_json(Path(dataset_path).expanduser() / "prep_report.json")
    source = (report or {}).get("source")
    return {"hub_id": source if is_hub_id(source) else None, "report": report}


def global_batch(config: dict[str, Any]) -> dict[str, int]:
    """Sequences (completions or examples) and prompts per optimizer step, from the resolved configuration.

    Example:
        >>> global_batch({"training": {"per_device_train_batch_size": 8, "gradient_accumulation_steps": 4,
        ...     "num_generations": 8}, "environment": {"num_processes": 2}})
        {'per_device': 8, 'accumulation': 4, 'processes': 2, 'sequences': 64, 'generations': 8, 'prompts': 8}
    """
    training, env = config.get("training") or {}, config.get("environment") or {}
    per_device = int(training.get("per_device_train_batch_size") or 1)
    accumulation = int(training.get("gradient_accumulation_steps") or 1)
    processes = int(env.get("num_processes") or 1)
    generations = int(training.get("num_generations") or 1)
    sequences = per_device * accumulation * processes
    return {
        "per_device": per_device,
        "accumulation": accumulation,
        "processes": processes,
        "sequences": sequences,
        "generations": generations,
        "prompts": sequences // generations,
    }


def evaluation(run_dir: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The folder's CV-Bench summary and, when it does not count as this model's score, why."""
    summary = _read_json(run_dir / EVAL_DIR / "summary.json")
    if summary is None:
        return None, None
    from recipes.report.checks import cvbench_problem  # fingerprints the weights: only when there is a summary

    return summary, cvbench_problem(run_dir, summary)


def _pct(value: Any) -> str:
    return f"{100 * value:.2f}%" if isinstance(value, (int, float)) and not isinstance(value, bool) else "n/a"


def steps_trained(run_dir: Path) -> int | None:
    state = _read_json(run_dir / "trainer_state.json")
    if state is None:  # the trainer writes trainer_state.json in checkpoints only: take the newest one's
        states = [_read_json(p) for p in run_dir.glob("checkpoint-*/trainer_state.json")]
        state = max((s for s in states if s), key=lambda s: s.get("global_step") or 0, default=None)
    return None if state is None else state.get("global_step")


def card_data(config: dict[str, Any], data: dict[str, Any], summary: dict | None, counts: bool, name: str):
    """The front matter: base model, datasets, library, tags, license when known, CV-Bench results when they count."""
    model, training = (config.get(k) or {} for k in ("model", "training"))
    base = str(model.get("model_name_or_path") or "")
    lora = bool(model.get("use_peft"))
    method = "grpo" if "num_generations" in training else "sft"
    datasets = [d for d in (data["hub_id"],) if d]
    results = None
    dataset = (summary or {}).get("dataset") or {}
    if summary is not None and counts and is_hub_id(dataset.get("name")):  # a local stand-in is not CV-Bench
        scores = (
            ("accuracy (the paper's: mean over rows)", summary.get("accuracy")),
            ("official CV-Bench score", summary.get("official_score")),
        )
        results = [
            EvalResult(
                task_type="visual-question-answering",
                dataset_type=dataset["name"],
                dataset_name="CV-Bench",
                dataset_split=dataset.get("split"),
                dataset_revision=dataset.get("revision"),
                metric_type="accuracy",
                metric_name=metric,
                metric_value=round(100 * value, 2),
            )
            for metric, value in scores
            if isinstance(value, (int, float)) and not isinstance(value, bool)
        ] or None
    return ModelCardData(
        base_model=base if is_hub_id(base) else None,
        datasets=datasets or None,
        library_name="peft" if lora else "transformers",
        license=_license(base),
        pipeline_tag="image-text-to-text",
        tags=[t for t in ("visualthinker-r1-zero", method, "trl", "qwen2-vl", "lora" if lora else None) if t],
        model_name=name if results else None,
        eval_results=results,
    )


def _data_lines(recipe: dict[str, Any], data: dict[str, Any]) -> list[str]:
    dataset_path, report = str(recipe.get("dataset_path")), data["report"]
    lines = []
    if is_hub_id(dataset_path):
        revision = recipe.get("dataset_revision")
        lines.append(
            f"| training records | the Hub dataset [`{dataset_path}`](https://huggingface.co/datasets/{dataset_path})"
            f", split `{recipe.get('dataset_split')}`, revision `{revision or 'main (not pinned)'}` |"
        )
    if report is None:
        where = "" if lines else f"`{dataset_path}` "
        return [*lines, f"| data | {where}(no `prep_report.json` with it: its source and revision are not recorded) |"]
    source = report.get("source")
    revision = report.get("revision")
    skipped = ", ".join(f"{k} {v}" for k, v in (report.get("skipped_by_reason") or {}).items() if v) or "none"
    return [
        *lines,
        f"| data | `{source}`"
        + (f" at revision `{revision}`" if revision else " (local files)")
        + f", split `{report.get('split')}`, converted by `python -m data_prep.sat` (seed {report.get('seed')}): "
        f"{report.get('rows_written')} of {report.get('rows_read')} rows kept; skipped: {skipped} |",
        f"| data fingerprint | `{str(report.get('fingerprint'))[:16]}` |",
    ]


def _results_lines(run_dir: Path, summary: dict | None, problem: str | None) -> list[str]:
    eval_command = f"python recipes/eval_cvbench.py --model_name_or_path {run_dir} --output_dir {run_dir / EVAL_DIR}"
    if summary is None:
        return ["## CV-Bench", "", f"Not evaluated in this folder yet: `{eval_command}`."]
    rows, dataset = summary.get("rows") or {}, summary.get("dataset") or {}
    lines = ["## CV-Bench", ""]
    if problem:
        lines += [f"**Not this model's score**: {problem}. Shown for reference only.", ""]
    if not is_hub_id(dataset.get("name")):
        lines += [f"Scored on `{dataset.get('name')}`, a local dataset, not the Hub's {CVBENCH_ID}.", ""]
    lines += [
        "| score | value |",
        "|---|---|",
        f"| accuracy, as the paper computed it (mean over rows) | {_pct(summary.get('accuracy'))} "
        f"({summary.get('correct')}/{rows.get('scored')}) |",
        f"| official CV-Bench score ½·((ADE20K + COCO)/2 + Omni3D) | {_pct(summary.get('official_score'))} |",
        f"| strict accuracy | {_pct((summary.get('strict') or {}).get('accuracy'))} |",
    ]
    tasks = summary.get("per_task") or {}
    if tasks:
        lines += ["", "| task | rows | accuracy |", "|---|---:|---:|"]
        lines += [f"| {name} | {g.get('rows')} | {_pct(g.get('accuracy'))} |" for name, g in tasks.items()]
    lines += [
        "",
        f"Dataset `{dataset.get('name')}` split `{dataset.get('split')}`"
        + (f" at revision `{dataset.get('revision')}`" if dataset.get("revision") else "")
        + f"; {rows.get('scored')} of {rows.get('selected')} selected rows scored ({rows.get('dataset')} in the "
        f"dataset). Details: [`{EVAL_DIR}/summary.md`]({EVAL_DIR}/summary.md).",
    ]
    return lines


def _curve_lines(run_dir: Path) -> list[str]:
    curve = _read_json(run_dir / CURVE_DIR / "curve.json")
    points = (curve or {}).get("points") or []
    if not points:
        return []
    lines = [
        "",
        "## CV-Bench along training",
        "",
        "| step | accuracy | official score | rows |",
        "|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {p.get('step')} | {_pct(p.get('cvbench/accuracy'))} | {_pct(p.get('cvbench/official_score'))} | "
        f"{p.get('rows')} |"
        for p in points
    ]
    return [*lines, "", f"From [`{CURVE_DIR}/curve.json`]({CURVE_DIR}/curve.json) (`recipes/eval_curve.py`)."]


def _wandb_line(run_dir: Path) -> list[str]:
    run_id = find_wandb_run(run_dir)
    if run_id is None:
        return []
    offline = any((run_dir / "wandb").glob(f"offline-run-*-{run_id}"))
    project = wandb_project(run_dir) or "(default project)"
    how = " (logged offline: upload it with `wandb sync` on its folder in `wandb/`)" if offline else ""
    return [f"| W&B run | `{run_id}` in project `{project}`{how} |"]


def eval_options(recipe: dict[str, Any]) -> str:
    """The evaluation options matching the training prompt, as `launch/run_ablations.sh` passes them: the CV-Bench
    template of the same name (SFT, trained on bare answers: ``instruct_no_reasoning``) and the chat template.

    Example:
        >>> eval_options({"prompt_template": "sft"})
        ' --prompt instruct_no_reasoning'
        >>> eval_options({"prompt_template": "instruct", "chat_template": "plain"})
        ' --prompt instruct --chat_template plain'
    """
    from recipes.shared.prompts import EVAL_TEMPLATES

    template = str(recipe.get("prompt_template"))
    prompt = "instruct_no_reasoning" if template == "sft" else template if template in EVAL_TEMPLATES else None
    options = f" --prompt {prompt}" if prompt else " --prompt NAME"
    return options + (f" --chat_template {recipe['chat_template']}" if recipe.get("chat_template") else "")


def render(run_dir: str | Path, repo_id: str | None = None) -> ModelCard:
    """The card of ``run_dir``, from its own files (see the module docstring)."""
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    recipe, model, training = (config.get(k) or {} for k in ("recipe", "model", "training"))
    base = str(model.get("model_name_or_path") or "")
    data = data_source(str(recipe.get("dataset_path") or ""), recipe.get("dataset_revision"))
    summary, problem = evaluation(run_dir)
    name = (repo_id or run_dir.name).split("/")[-1]
    batch = global_batch(config)
    method = "grpo" if "num_generations" in training else "sft"
    per_prompt = f" × {batch['generations']} completions" if method == "grpo" else ""
    base_text = f"[`{base}`](https://huggingface.co/{base})" if is_hub_id(base) else f"`{base}` (a local model)"
    lora = (
        f"LoRA adapter (r {model.get('lora_r')}, alpha {model.get('lora_alpha')}, targets "
        f"{model.get('lora_target_modules')}); load it on the base model with peft"
        if model.get("use_peft")
        else "full fine-tune"
    )
    steps = steps_trained(run_dir)
    eval_config = eval_options(recipe)
    lines = [
        f"# {name}",
        "",
        f"{RECIPES[method]} on {base_text}, trained with the replication recipes of [{PAPER_TITLE}]"
        f"(https://arxiv.org/abs/{PAPER_ARXIV}) (arXiv {PAPER_ARXIV}, VisualThinker-R1-Zero).",
        "",
        "## Training",
        "",
        "| | |",
        "|---|---|",
        f"| base model | {base_text} |",
        f"| method | {RECIPES[method]}, prompt template `{recipe.get('prompt_template')}`, "
        + (
            f"rewards {recipe.get('reward_funcs')} weighted {training.get('reward_weights')}"
            if method == "grpo"
            else f"loss `{recipe.get('sft_loss')}`"
        )
        + f"; {lora} |",
        *_data_lines(recipe, data),
        f"| effective global batch | {batch['prompts']} prompt(s){per_prompt} = {batch['sequences']} sequences per "
        f"optimizer step ({batch['per_device']} per device × accumulation {batch['accumulation']} × "
        f"{batch['processes']} processes) |",
        f"| optimizer steps trained | {steps if steps is not None else 'unknown'} (of "
        + (
            f"max_steps {training.get('max_steps')}"
            if (training.get("max_steps") or 0) > 0
            else f"{training.get('num_train_epochs')} epochs"
        )
        + ") |",
        f"| learning rate, seed | {training.get('learning_rate')}, {training.get('seed')} |",
        *(
            [
                f"| loss, KL beta, top_k | {training.get('loss_type')}, {training.get('beta')}, "
                f"{training.get('top_k')} |"
            ]
            if method == "grpo"
            else []
        ),
        f"| resolved configuration | [`{RESOLVED_CONFIG}`]({RESOLVED_CONFIG}): every option, library versions, "
        "number of processes |",
        *_wandb_line(run_dir),
        "",
        *_results_lines(run_dir, summary, problem),
        *_curve_lines(run_dir),
        "",
        "## Evaluate it",
        "",
        "```bash",
        f"python recipes/eval_cvbench.py{eval_config} --model_name_or_path {repo_id or run_dir} "
        f"--output_dir eval/{name}",
        "```",
        "",
        "The paper's evaluation (greedy, 1,024 new tokens, this checkpoint's saved processor bounds) with the "
        "CV-Bench prompt matching this training prompt (`--prompt NAME`: a template of `recipes/shared/prompts.py` "
        "`EVAL_TEMPLATES`); the recipes' README, section *Evaluation on CV-Bench*, gives the options.",
        "",
        "## What differs from the paper",
        "",
        f"The recipes' README, section *{DIFFERS_SECTION}*, lists every difference from the paper's code; "
        f"`{RESOLVED_CONFIG}` gives this run's settings.",
    ]
    content = f"---\n{card_data(config, data, summary, problem is None, name).to_yaml()}\n---\n\n"
    return ModelCard(content + "\n".join(lines) + "\n")


def write_card(run_dir: str | Path, repo_id: str | None = None) -> Path | None:
    """Write the card to ``run_dir/README.md`` atomically, replacing TRL's, and record it as the run's own.

    A ``README.md`` the run's record does not own (the user's, there before the run) is left alone: None.
    """
    run_dir = Path(run_dir)
    path = run_dir / CARD
    owned = CARD in (provenance.read(run_dir).get(".") or {}).get("owns", [])
    if path.exists() and not owned:
        logger.warning("model card: %s is not the run's (it was there before): left as it is, no card written", path)
        return None
    write_atomic(path, str(render(run_dir, repo_id)))
    provenance.record(run_dir, owns=[CARD])
    logger.info("model card written to %s", path)
    return path
