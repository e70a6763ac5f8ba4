"""Out-of-distribution scoring of a finished mini ablation arm: every saved model (and the model it started from)
scored on held-out records exactly as the run scored its own held-out set; the intermediate checkpoints dropped."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from data_prep.files import write_atomic

logger = logging.getLogger(__name__)


def _checkpoint_step(path: Path) -> int | None:
    suffix = path.name.removeprefix("checkpoint-")
    return int(suffix) if path.name.startswith("checkpoint-") and suffix.isdigit() else None


def models_to_score(run_dir: Path, base_dir: Path) -> list[tuple[int, Path]]:
    """(step, model folder): the starting model (step 0), every saved checkpoint, and the final model."""
    state = json.loads((run_dir / "trainer_state.json").read_text())
    final = int(state["global_step"])
    saved = sorted((s, p) for p in run_dir.glob("checkpoint-*") if (s := _checkpoint_step(p)) is not None)
    return [(0, base_dir), *((s, p) for s, p in saved if 0 < s < final), (final, run_dir)]


def score_models(run_dir: Path, models: list[tuple[int, Path]], records: Path) -> dict[str, Any]:
    """Greedy format-gated accuracy of each model on ``records``, exactly as the run scored its held-out set: its
    own `recipes.shared.heldout.HeldoutAccuracyCallback` (prompt template, pixel bounds, accuracy reward, max new
    tokens from the run's ``resolved_config.yaml``), evaluating through a plain `transformers.Trainer`.

    Records of several ``question_type``s (the OOD set's shades) are also scored per type (``by_type``); the
    overall accuracy is over all records.
    """
    import yaml
    from datasets import load_from_disk
    from transformers import Trainer, TrainingArguments

    from recipes.shared.args import RecipeArguments
    from recipes.shared.heldout import DEFAULT_MAX_NEW_TOKENS, HeldoutAccuracyCallback
    from recipes.shared.models import load_for_inference, load_processor
    from recipes.shared.prompts import get_template

    resolved = yaml.safe_load((run_dir / "resolved_config.yaml").read_text())
    recipe, training = resolved["recipe"], resolved["training"]
    script_args = RecipeArguments(**recipe)
    script_args.heldout_samples = None
    script_args.heldout_max_new_tokens = (
        recipe.get("heldout_max_new_tokens") or training.get("max_completion_length") or DEFAULT_MAX_NEW_TOKENS
    )
    template = get_template(script_args.prompt_template)
    dataset = load_from_disk(str(records))
    types = sorted(set(dataset["question_type"])) if "question_type" in dataset.column_names else []
    curve, formats, by_type = [], [], {kind: [] for kind in types} if len(types) > 1 else {}
    with tempfile.TemporaryDirectory() as scratch:
        # One record folder per type (the callback reads its records from disk); the whole set when only one.
        parts = {None: records}
        if by_type:
            parts = {}
            for i, kind in enumerate(types):
                parts[kind] = Path(scratch) / f"part{i}"
                dataset.filter(lambda t, kind=kind: t == kind, input_columns="question_type").save_to_disk(parts[kind])
        args = TrainingArguments(
            output_dir=scratch,
            per_device_eval_batch_size=training.get("per_device_eval_batch_size") or 100,
            report_to=[],
            use_cpu=True,
            disable_tqdm=True,
        )
        for step, path in models:
            processor = load_processor(
                SimpleNamespace(model_name_or_path=str(path), model_revision=None), script_args, template
            )
            model = load_for_inference(str(path), dtype="float32")
            trainer = Trainer(model=model, args=args, processing_class=processor)
            totals = [0, 0, 0]
            for kind, folder in parts.items():
                script_args.heldout_dataset_path = str(folder)
                correct, well_formed, count = HeldoutAccuracyCallback(trainer, script_args).evaluate()
                totals = [totals[0] + correct, totals[1] + well_formed, totals[2] + count]
                if kind is not None:
                    by_type[kind].append([step, correct / max(count, 1)])
            curve.append([step, totals[0] / max(totals[2], 1)])
            formats.append([step, totals[1] / max(totals[2], 1)])
            logger.info("step %d (%s): accuracy %.3f on %s (%d records)", step, path, curve[-1][1], records, totals[2])
    return {"records": str(records), "rows": len(dataset), "curve": curve, "format": formats, "by_type": by_type}


def score(run_dir: Path, base_dir: Path, records: Path, output: Path, keep_checkpoints: bool = False) -> dict:
    """Score a finished arm on ``records`` at each saved step, write ``output``, then drop the checkpoints (the final
    model stays): they exist only to be scored at the steps the held-out set was."""
    models = models_to_score(run_dir, base_dir)
    result = score_models(run_dir, models, records)
    write_atomic(output, json.dumps(result, indent=2) + "\n")
    if not keep_checkpoints:
        for path in run_dir.glob("checkpoint-*"):
            if _checkpoint_step(path) is not None:
                shutil.rmtree(path)
    return result
