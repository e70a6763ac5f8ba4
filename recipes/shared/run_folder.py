"""A recipe run's output folder: what it may hold, what the run owns there, what overwriting may delete.

Ownership is proven, not guessed: a run records in its folder (`recipes/shared/provenance.py`, kind ``recipe-run``) the
settings that define its result and every path it creates, added as they appear — each checkpoint before it is
saved, then the new top-level names (final model files, ``resolved_config.yaml``, ``trainer_state.json``,
``completions/``, ``trajectories/``, W&B's ``wandb/``). "An earlier run" is a folder with that record.

`check_run` (before anything loads) decides, with nothing written:

==============================  =========================================================================
the output folder               this run
==============================  =========================================================================
absent or empty                 starts (``--resume_from_checkpoint last``: nothing to resume, starts fresh)
files but no record             refused: not a run folder of these recipes; choose another ``output_dir``
a record of another kind        refused (e.g. a CV-Bench evaluation's folder)
a recipe run (same settings     refused unless it resumes it (``--resume_from_checkpoint last`` or one of
or not: differences named)      its checkpoints) or replaces it (``--overwrite_output_dir true``)
==============================  =========================================================================

Resume and overwrite combine in one way only: resuming *another* folder's checkpoint into a folder that holds a run
replaces that run, so it needs ``--overwrite_output_dir true``; with a checkpoint of the folder itself the two flags
contradict each other (overwriting deletes the checkpoint) and are refused.

The folder must not be, contain or lie inside an input (model, adapter base, dataset, held-out dataset, the resumed
checkpoint), the home folder or the repository (`provenance.guard_output`), and must be writable. Replacing a run
deletes exactly the paths its record owns (and the CV-Bench evaluations recorded inside it), by the main process,
after every check that can fail before training (config, data, rewards, model, processor): `claim`, entered by each
recipe's `main` just before it builds the trainer, does it and holds the folder for this writer alone
(`provenance.sole_writer`) until training ends; `train_and_save` records the run finished.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from data_prep.files import nearest_existing
from recipes.evaluation.curve import POINT_KIND
from recipes.shared import provenance
from recipes.shared.cards import write_card
from recipes.shared.compat import load_checkpoint_weights
from recipes.shared.data import saved_records
from recipes.shared.errors import RecipeError
from recipes.shared.hub import RUN_KIND, PushRequest, push_run, take_push
from recipes.shared.resolved import (
    RESOLVED_CONFIG,
    CheckpointConfigCallback,
    checkpoint_config,
    plain,
    resolved_config,
    write_resolved_config,
)
from recipes.shared.runs import check_model_folder, checkpoint_step, checkpoints, resolve_checkpoint

logger = logging.getLogger(__name__)

KIND = RUN_KIND  # defined in recipes.shared.hub, which reads run records too (and is imported here)
# Kinds of outputs kept inside a run folder that describe its model: replacing the run deletes them too.
DERIVED_KINDS = ("cvbench-eval", POINT_KIND)
# Options that change where or how a run reports, not what it trains: left out of the run's definition.
NOT_DEFINING = {
    "output_dir",
    "logging_dir",
    "overwrite_output_dir",
    "resume_from_checkpoint",
    "dry_run",
    "dry_run_samples",
    "run_name",
    "report_to",
    "disable_tqdm",
    "logging_steps",
    "logging_first_step",
    "logging_strategy",
    "log_level",
    "log_completions",
    "log_multimodal",
    "num_completions_to_print",
    "wandb_project",
    "wandb_group",
    "dump_trajectories",
    "save_steps",
    "save_strategy",
    "save_total_limit",
    "push_to_hub",
    "hub_token",
    # Where the processes meet and how long they wait: a requeued multi-node job may land on other nodes.
    "ddp_timeout",
    "vllm_server_host",
    "vllm_server_port",
    "vllm_server_base_url",
    "vllm_server_timeout",
    "vllm_group_port",
}
NO_RESUME = (None, False, "", "false", "False")


@dataclass
class RunFolder:
    """What `check_run` decided about the output folder; `train_and_save` acts on it."""

    path: Path
    definition: dict[str, Any]
    checkpoint: str | None = None  # the checkpoint to resume
    replace: bool = False  # delete the recorded run there before training
    inputs: list[str] = field(default_factory=list)
    seen: tuple[dict[str, Any], list[str]] | None = None  # record and names when checked: must not change
    baseline: set[str] = field(default_factory=set)  # names there when claimed that the run does not own
    dry_run: bool = False
    push: PushRequest | None = None  # push_to_hub: where the finished run goes (transformers' own push is off)


def definition(script_args, training_args, model_args) -> dict[str, Any]:
    """The settings that define the run's result: its resolved configuration, less where and how it reports."""
    config = resolved_config(script_args, training_args, model_args)
    defining = {
        section: {k: v for k, v in (config.get(section) or {}).items() if k not in NOT_DEFINING}
        for section in ("recipe", "training", "model")
    }
    if saved_records(script_args.dataset_path):  # one split, one version: the two options select nothing there
        for key in ("dataset_split", "dataset_revision"):
            defining["recipe"].pop(key, None)
    defining["num_processes"] = config["environment"]["num_processes"]
    return defining


def run_inputs(script_args, model_args, checkpoint: str | None, output_dir: Path) -> list[str]:
    """The local paths this run reads: model (and an adapter's base model), data, held-out data, another run's
    checkpoint. The output folder may be none of them, contain none and lie inside none."""
    inputs = [model_args.model_name_or_path, script_args.dataset_path, script_args.heldout_dataset_path]
    adapter = Path(model_args.model_name_or_path).expanduser() / "adapter_config.json"
    if adapter.is_file():
        with contextlib.suppress(OSError, ValueError, AttributeError):
            inputs.append(json.loads(adapter.read_text()).get("base_model_name_or_path"))
    if checkpoint is not None and not _in_place(checkpoint, output_dir):
        inputs.append(checkpoint)
    return [str(i) for i in inputs if i]


def _in_place(checkpoint: str | Path, output_dir: Path) -> bool:
    """Whether ``checkpoint`` is one of ``output_dir``'s own checkpoints."""
    return Path(os.path.realpath(checkpoint)).parent == Path(os.path.realpath(output_dir))


def _names(folder: Path) -> list[str]:
    own = (provenance.RECORD, provenance.LOCK, provenance.WRITER_LOCK)
    return sorted(p.name for p in folder.iterdir() if p.name not in own) if folder.is_dir() else []


def _check_writable(folder: Path) -> None:
    ancestor = nearest_existing(folder)
    if not ancestor.is_dir():
        raise RecipeError(f"cannot create output_dir {folder}: {ancestor} is a file. Choose another --output_dir")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise RecipeError(f"cannot write to output_dir {folder}: {ancestor} is read-only. Choose another --output_dir")


def _foreign_message(folder: Path, names: list[str]) -> str:
    shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
    message = (
        f"output_dir {folder} already holds files that no recipe run recorded ({shown}): it is not a run folder of "
        "these recipes, so nothing in it is reused, replaced or deleted. Choose another --output_dir (a new or "
        "empty folder)"
    )
    saved = checkpoints(folder)
    if saved:
        message += (
            f"; to continue the training saved there, resume from its checkpoint into a new folder: "
            f"--resume_from_checkpoint {saved[0]} --output_dir <new folder>"
        )
    return message


# Settings whose change makes a checkpoint's weights unloadable into the model being trained.
ARCHITECTURE_KEYS = {
    "model_type",
    "architectures",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "vocab_size",
    "depth",
    "embed_dim",
    "num_heads",
}


# ModelConfig options (besides lora_*) that decide the adapter's shape.
ADAPTER_KEYS = {"use_peft", "use_rslora", "use_dora"}


def _architecture(config_file: Path) -> dict[str, Any] | None:
    """The shape-defining entries of a ``config.json`` (nested ones by path, e.g. ``text_config.hidden_size``)."""
    if not config_file.is_file():
        return None
    try:
        flat = provenance.flat_items(json.loads(config_file.read_text()))
    except (OSError, ValueError):
        return None
    return {k: v for k, v in flat.items() if k.split(".")[-1] in ARCHITECTURE_KEYS}


def check_resume_fits(checkpoint: str, model_args) -> None:
    """Refuse to resume ``checkpoint`` into another architecture, or with ``use_peft``/LoRA settings toggled.

    Those make the checkpoint's weights (or adapter) unloadable into the model this run builds; compared with the
    checkpoint's ``config.json`` and ``resolved_config.yaml`` (other setting changes are only warned about).
    """
    before, source = checkpoint_config(checkpoint)
    problems = []
    model = dict(vars(model_args)) if not is_dataclass(model_args) else asdict(model_args)
    if before is not None:
        old = before.get("model") or {}
        for key in sorted(k for k in old.keys() | model.keys() if k in ADAPTER_KEYS or k.startswith("lora_")):
            if key == "lora_dropout" or (key != "use_peft" and not (old.get("use_peft") and model.get("use_peft"))):
                continue  # dropout acts in training only; LoRA settings matter only with an adapter on both sides
            if plain(old.get(key)) != plain(model.get(key)):
                problems.append(f"{key}: {old.get(key)} there, {model.get(key)} now")
    ours = _architecture(Path(model_args.model_name_or_path).expanduser() / "config.json")
    theirs = _architecture(Path(checkpoint) / "config.json")
    if theirs is None and before is not None:  # an adapter checkpoint: its run's base model
        theirs = _architecture(Path(str((before.get("model") or {}).get("model_name_or_path"))) / "config.json")
    if ours is not None and theirs is not None:
        problems += provenance.differences(theirs, ours)
    if problems:
        raise RecipeError(
            f"cannot resume from {checkpoint}: its weights cannot be loaded into the model this run builds "
            f"({'; '.join(problems)}; compared with {source or Path(checkpoint) / 'config.json'}). Resume with the "
            "model and use_peft/lora settings it was trained with, or start a new run in another --output_dir"
        )


def check_run(script_args, training_args, model_args) -> RunFolder:
    """Every check of the output folder and the checkpoint, before anything loads and with nothing written."""
    check_model_folder(model_args.model_name_or_path)
    folder = Path(training_args.output_dir)
    defining = definition(script_args, training_args, model_args)
    if script_args.dry_run:  # a dry run writes nothing: it may look at the prompts of a run whose folder is taken
        return RunFolder(folder, defining, dry_run=True)
    resume = training_args.resume_from_checkpoint
    resuming = resume not in NO_RESUME
    named = None if not resuming or resume is True or str(resume).lower() in ("last", "true") else str(resume)
    if training_args.process_index != 0:
        # The main process decides about the folder (and refuses for all): another process checking it could find
        # the record the main process has just written, and refuse its own run.
        return RunFolder(folder, defining, checkpoint=resolve_checkpoint(resume, str(folder)) if resuming else None)
    inputs = run_inputs(script_args, model_args, named, folder)
    provenance.guard_output(folder, inputs)
    _check_writable(folder)
    if (folder / provenance.WRITER_LOCK).is_file():  # a run training there now: refused before anything loads
        with provenance.sole_writer(folder, "a recipe run"):
            pass
    verdict = provenance.inspect(folder, KIND, defining)
    run = RunFolder(folder, defining, inputs=inputs)
    overwrite = script_args.overwrite_output_dir
    if verdict.entry is None:
        if verdict.foreign:
            raise RecipeError(_foreign_message(folder, verdict.foreign))
        if resuming and named is None:
            logger.warning("%s holds no run to resume: starting fresh", folder)
    elif verdict.entry.get("kind") != KIND:
        raise RecipeError(
            f"output_dir {folder} holds the output of a {verdict.entry.get('kind')}, not a recipe run: choose "
            "another --output_dir"
        )
    else:
        held = _describe(verdict)
        if not resuming and not overwrite:
            raise RecipeError(
                f"output_dir {folder} already holds {held}. Nothing was changed. To continue it: "
                "--resume_from_checkpoint last; to replace it (exactly the files that run recorded are deleted: its "
                "model, checkpoints, logs and CV-Bench evaluation; other files stay): --overwrite_output_dir true; "
                "or choose another --output_dir."
            )
        if resuming and (named is None or _in_place(named, folder)):
            if overwrite:
                raise RecipeError(
                    f"resume_from_checkpoint={resume} and overwrite_output_dir are both set, but the checkpoint is "
                    f"{folder}'s own, which replacing the run would delete: resume the run (drop "
                    "--overwrite_output_dir) or replace it (drop --resume_from_checkpoint)"
                )
        elif resuming and not overwrite:
            raise RecipeError(
                f"output_dir {folder} already holds {held}; resuming another run's checkpoint ({named}) there would "
                "replace it. Nothing was changed. To replace it: --overwrite_output_dir true; or choose another "
                "--output_dir."
            )
        run.replace = overwrite
    if resuming:
        run.checkpoint = resolve_checkpoint(resume, str(folder))
        if run.checkpoint is None and verdict.finished:
            raise RecipeError(
                f"resume_from_checkpoint={resume}: {folder} holds no complete checkpoint to resume but a finished "
                "run. Nothing was changed. To train again from scratch in this folder, replacing that run: "
                "--overwrite_output_dir true (without --resume_from_checkpoint); or choose another --output_dir."
            )
        if run.checkpoint is None and verdict.entry is not None:
            logger.warning("%s has no complete checkpoint to resume: starting fresh", folder)
        if (
            run.checkpoint is not None
            and verdict.finished
            and checkpoint_step(run.checkpoint) >= training_args.max_steps > 0
        ):
            # Resuming at the final step trains one step past max_steps and rewrites the finished run's files.
            raise RecipeError(
                f"resume_from_checkpoint={resume}: {run.checkpoint} is the last step of a finished run "
                f"(max_steps {training_args.max_steps}): there is nothing left to train. Nothing was changed. To "
                "train longer, raise --max_steps; to replace the run: --overwrite_output_dir true (without "
                "--resume_from_checkpoint); or choose another --output_dir."
            )
        if run.checkpoint is not None:
            check_resume_fits(run.checkpoint, model_args)
            logger.info("resuming from %s", run.checkpoint)
    run.seen = (provenance.read(folder), _names(folder))
    return run


def _describe(verdict: provenance.Verdict) -> str:
    """One line: the recorded run's state and the settings that differ (the first few, then how many more)."""
    state = "a finished recipe run" if verdict.finished else "an unfinished recipe run"
    if not verdict.changes:
        return f"{state} with the same settings"
    shown = "; ".join(verdict.changes[:6]) + (
        f"; and {len(verdict.changes) - 6} more" if len(verdict.changes) > 6 else ""
    )
    return f"{state} with other settings ({shown})"


# --- claiming the folder and recording what the run writes -----------------------------------------------------------


def _claim(run: RunFolder) -> set[str]:
    """Main process, just before training: replace the earlier run if asked, record this one. Returns the names
    present then that this run does not own (the user's files, kept)."""
    if (provenance.read(run.path), _names(run.path)) != run.seen:
        raise RecipeError(
            f"output_dir {run.path} changed while this run was starting (another run writing there?): nothing was "
            "deleted. Run again when it is done, or choose another --output_dir"
        )
    if run.replace:
        removed = provenance.delete_owned(run.path, inputs=run.inputs)
        removed += provenance.delete_nested(run.path, DERIVED_KINDS, run.inputs)
        kept = _names(run.path)
        logger.warning(
            "overwrite_output_dir: deleted the earlier run in %s (%d recorded paths)%s",
            run.path,
            len(removed),
            f"; kept files it did not write: {', '.join(kept)}" if kept else "",
        )
    # resolved_config.yaml is written next, by this run: owned before it exists.
    entry = provenance.start(run.path, KIND, run.definition, resumed_from=run.checkpoint, owns=[RESOLVED_CONFIG])
    return set(_names(run.path)) - {p.split("/")[0] for p in entry.get("owns", [])}


class OwnershipCallback(TrainerCallback):
    """Records in the run's provenance each path the run creates, as it appears (main process only).

    A checkpoint is recorded before it is saved (so a save killed half-way is still the run's to delete), every new
    top-level name of the folder at each log, save and the end of training.
    """

    def __init__(self, folder: Path, baseline: set[str]) -> None:
        self.folder, self.known = folder, set(baseline)

    def _record(self, extra: tuple[str, ...] = ()) -> None:
        new = [n for n in (*extra, *_names(self.folder)) if n not in self.known]
        if new:
            provenance.record(self.folder, owns=new)
            self.known.update(new)

    def on_step_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero and control.should_save:
            self._record((f"checkpoint-{state.global_step}",))

    def on_train_begin(self, args, state, control, **kwargs):  # after the trainer's set-up (W&B's folder)
        if state.is_world_process_zero:
            self._record()

    def on_log(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self._record()

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self._record()

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self._record()


@contextlib.contextmanager
def claim(run: RunFolder, script_args, training_args, model_args) -> Iterator[None]:
    """Hold the output folder for this run while the block builds the trainer and trains.

    Entered after every check that can fail before training (config, data, rewards, model, processor): only then
    is the run it replaces deleted, and this run recorded, by the main process; the others wait for it
    (``main_process_first``). The trainer is built inside, after the deletion: it creates folders (TRL's
    ``completions/``) it writes into later.
    """
    main = training_args.process_index == 0
    with contextlib.ExitStack() as stack:
        if main:
            stack.enter_context(provenance.sole_writer(run.path, "a recipe run"))
        with training_args.main_process_first(local=False, desc="claiming the output folder"):
            if main:
                run.baseline = _claim(run)
        write_resolved_config(script_args, training_args, model_args, run.checkpoint)
        run.push = take_push(training_args)  # every process: the trainer must not push on its own
        yield


def train_and_save(trainer, run: RunFolder, training_args) -> None:
    """Train (resumed from ``run.checkpoint``), save the final model and processor, record the run as finished.

    Called inside `claim`. Each path the run creates is recorded as its own (`OwnershipCallback`, then the final
    model's files). Then the main process replaces TRL's generic ``README.md`` with the run's model card
    (`recipes.shared.cards`) and, with ``push_to_hub``, pushes the run (`recipes.shared.hub.push_run`) unless it
    trained no step.
    """
    main = training_args.process_index == 0
    if main:
        trainer.add_callback(OwnershipCallback(run.path, run.baseline))
    if run.checkpoint is not None:
        load_checkpoint_weights(trainer, run.checkpoint)
    trainer.add_callback(CheckpointConfigCallback())
    trainer.train(resume_from_checkpoint=run.checkpoint)
    trainer.save_model(training_args.output_dir)
    if main:
        provenance.finish(run.path, owns=[n for n in _names(run.path) if n not in run.baseline])
        write_card(run.path, run.push.repo_id if run.push else None)
    logger.info("saved the trained model to %s", training_args.output_dir)
    if main and run.push is not None:
        if not trainer.state.global_step:
            raise RecipeError(f"push_to_hub: the run trained no optimizer step, so nothing is pushed ({run.path})")
        push_run(run.path, run.push, writing=True)
