"""Every setting of a run, resolved: ``<output_dir>/resolved_config.yaml``, copied into each checkpoint, compared on
resume.

`write_resolved_config` (just before training, called by `recipes.shared.run_folder.claim`) writes the file
and logs it; a resumed run is warned about each setting that differs from the checkpoint's run (`config_differences`,
through `recipes.shared.provenance.changed`). `CheckpointConfigCallback` copies the file into every checkpoint.
"""

from __future__ import annotations

import json
import logging
import platform
from dataclasses import asdict, is_dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import yaml
from transformers import TrainerCallback

from data_prep.files import write_atomic
from recipes.shared import provenance

logger = logging.getLogger(__name__)

RESOLVED_CONFIG = "resolved_config.yaml"
# Settings that may differ between a checkpoint's run and its resumption without changing what is trained.
RESUME_NEUTRAL = {"resume_from_checkpoint", "overwrite_output_dir", "dry_run", "dry_run_samples"}
VERSIONED = ("torch", "transformers", "trl", "accelerate", "deepspeed", "datasets", "peft", "wandb", "safetensors")


def plain(value: Any) -> Any:
    """A YAML-safe copy: enums become their value, anything else unknown its text."""
    return json.loads(json.dumps(value, default=lambda v: getattr(v, "value", str(v))))


def resolved_config(script_args, training_args, model_args) -> dict[str, Any]:
    """Every setting of the run: recipe, training and model options, library versions, number of processes."""
    versions = {}
    for package in VERSIONED:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            continue
    return plain(
        {
            "recipe": asdict(script_args),
            "training": training_args.to_dict(),
            "model": asdict(model_args) if is_dataclass(model_args) else dict(vars(model_args)),
            "environment": {
                "num_processes": training_args.world_size,
                "python": platform.python_version(),
                "versions": versions,
            },
        }
    )


def _flat(config: dict[str, Any]) -> dict[str, Any]:
    """Settings by name (the option sections are merged; environment entries keep their path, e.g. versions.trl)."""
    flat = {}
    for section, values in config.items():
        for key, value in (values or {}).items() if isinstance(values, dict) else ():
            if section != "environment":
                flat[key] = value
            elif isinstance(value, dict):
                flat.update({f"{key}.{name}": v for name, v in value.items()})
            else:
                flat[key] = value
    return flat


def config_differences(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """``name: old -> new`` for each setting that differs between two resolved configurations.

    Example:
        >>> old = {"training": {"learning_rate": 1e-6, "seed": 1}, "environment": {"versions": {"trl": "1.16.0"}}}
        >>> new = {"training": {"learning_rate": 2e-6, "seed": 1}, "environment": {"versions": {"trl": "1.17.0"}}}
        >>> config_differences(old, new)
        ['learning_rate: 1e-06 -> 2e-06', 'versions.trl: 1.16.0 -> 1.17.0']
    """
    changes = provenance.changed(_flat(before), _flat(after), RESUME_NEUTRAL)
    # A setting new since the checkpoint's run, at its default None, changes nothing: not worth a warning.
    return [f"{k}: {a} -> {b}" for k, a, b in changes if not (_absent(a) and _absent(b))]


def _absent(value: Any) -> bool:
    return value is None or value is provenance.UNSET


def checkpoint_config(checkpoint: str) -> tuple[dict[str, Any] | None, Path | None]:
    """The resolved configuration of the run that wrote ``checkpoint``: its own copy, else its run folder's."""
    for path in (Path(checkpoint) / RESOLVED_CONFIG, Path(checkpoint).parent / RESOLVED_CONFIG):
        if path.is_file():
            try:
                return yaml.safe_load(path.read_text()), path
            except (OSError, yaml.YAMLError) as err:
                logger.warning("cannot read %s: %s", path, err)
    return None, None


def write_resolved_config(script_args, training_args, model_args, checkpoint: str | None = None) -> Path | None:
    """Write ``<output_dir>/resolved_config.yaml`` (main process, atomically), log it, warn about resume changes.

    With ``checkpoint``, each setting that differs from the configuration the checkpoint was written with is
    logged as a warning (learning rate, dataset, rewards, num_generations, library versions, ...).
    """
    config = resolved_config(script_args, training_args, model_args)
    text = yaml.safe_dump(config, sort_keys=True, allow_unicode=True)
    if training_args.process_index != 0:
        return None
    if checkpoint is not None:
        before, source = checkpoint_config(checkpoint)
        if before is None:
            logger.warning("no %s beside %s: cannot compare the resumed run's settings", RESOLVED_CONFIG, checkpoint)
        elif changes := config_differences(before, config):
            logger.warning(
                "resuming %s with %d setting(s) that differ from its run (%s):\n  %s",
                checkpoint,
                len(changes),
                source,
                "\n  ".join(changes),
            )
    header = "# Every setting of this run, resolved (recipes/shared/resolved.py:write_resolved_config).\n"
    path = write_atomic(Path(training_args.output_dir) / RESOLVED_CONFIG, header + text)
    logger.info("resolved configuration (%s):\n%s", path, text)
    return path


class CheckpointConfigCallback(TrainerCallback):
    """Copies ``resolved_config.yaml`` into each checkpoint, so a resumption compares against the right run."""

    def on_save(self, args, state, control, **kwargs):
        source = Path(args.output_dir) / RESOLVED_CONFIG
        target = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and source.is_file() and target.is_dir():
            write_atomic(target / RESOLVED_CONFIG, source.read_bytes())
