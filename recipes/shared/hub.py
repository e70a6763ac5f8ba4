"""The Hugging Face Hub: pushing a finished run folder, reading records from a Hub dataset.

Pushing (``--push_to_hub true`` on a recipe, or ``python -m recipes.push_to_hub RUN_DIR --repo_id ORG/NAME`` later)
goes through huggingface_hub's public API only: ``HfApi.create_repo`` then ``HfApi.upload_folder`` with
``allow_patterns`` set to exactly the files `upload_files` lists — the final model (weights or LoRA adapter, configs),
the processor and tokenizer files, the model card (`recipes.shared.cards`, rendered again just before), the resolved
configuration, the trainer state, and the CV-Bench results and curve when the folder holds them (the evaluation only
when it scored these weights). Checkpoints go only when asked (``--include_checkpoints``), and then without their
optimizer, scheduler and RNG states unless asked again (``--include_optimizer_states``); provenance records, locks,
W&B's folder, completions and trajectories never go.

A recipe run with ``push_to_hub`` is checked before its model loads (`recipes.shared.preflight.check_hub`: not
offline, a token, a valid repository id). transformers' own pushing is switched off for the trainer (`take_push`):
it would create the repository when the trainer is built, push TRL's generic card with every checkpoint and the
whole output folder at the end. The run pushes once, when it has finished and written its card, and only if it
trained at least one step.
"""

from __future__ import annotations

import fnmatch
import glob
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from data_prep.hub import push_problem
from recipes.shared import provenance
from recipes.shared.errors import RecipeError
from recipes.shared.resolved import RESOLVED_CONFIG
from recipes.shared.runs import MODEL_FILES

logger = logging.getLogger(__name__)

RUN_KIND = "recipe-run"  # the provenance kind of a recipe run (recipes.shared.run_folder.KIND)
RUN_FILES = (RESOLVED_CONFIG, "trainer_state.json", "README.md")
EVAL_FILES = ("eval_cvbench/summary.json", "eval_cvbench/summary.md", "eval_cvbench/predictions.jsonl")
CURVE_FILES = ("eval_curve/curve.json", "eval_curve/step-*/summary.json", "eval_curve/step-*/summary.md")
# What a checkpoint holds besides the model: the state to resume training, large and of no use to a reader.
TRAINING_STATE = ("optimizer.pt", "scheduler.pt", "rng_state*.pth", "global_step*", "training_args.bin", "*.pt")


@dataclass
class PushRequest:
    """Where a recipe run pushes when it has finished (taken from the training arguments)."""

    repo_id: str
    token: str | None = None
    private: bool | None = None
    revision: str | None = None


def check_push(
    repo_id: str | None,
    token: str | None = None,
    option: str = "push_to_hub",
    name_fix: str = "give NAME or USER/NAME",
) -> None:
    """Refuse a push that would fail: offline, no token, an invalid repository id (no network is read)."""
    problem = push_problem(repo_id, token, option, name_fix)
    if problem:
        raise RecipeError(problem)


def run_repo_id(training_args) -> str:
    """The repository a run pushes to: ``hub_model_id``, else the output folder's name (transformers' rule)."""
    return training_args.hub_model_id or Path(training_args.output_dir).name


def take_push(training_args) -> PushRequest | None:
    """Take ``push_to_hub`` away from the trainer (see the module docstring) and keep it for the end of the run."""
    if not getattr(training_args, "push_to_hub", False):
        return None
    request = PushRequest(
        run_repo_id(training_args),
        training_args.hub_token,
        training_args.hub_private_repo,
        getattr(training_args, "hub_revision", None),
    )
    training_args.push_to_hub = False
    logger.info("push_to_hub: %s is pushed once the run has finished and written its model card", request.repo_id)
    return request


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def upload_files(
    run_dir: str | Path,
    include_checkpoints: bool = False,
    include_optimizer_states: bool = False,
    with_evaluation: bool = True,
) -> list[str]:
    """The files (relative paths, sorted) a push of ``run_dir`` uploads; symbolic links never (they may point out)."""
    run_dir = Path(run_dir)
    files = []
    for path in sorted(run_dir.rglob("*")):
        if path.is_symlink() or not path.is_file() or any(p.is_symlink() for p in path.relative_to(run_dir).parents):
            continue
        rel = path.relative_to(run_dir).as_posix()
        parts = rel.split("/")
        if len(parts) == 1:
            keep = _matches(rel, MODEL_FILES) or rel in RUN_FILES
        elif parts[0] == "eval_cvbench":
            keep = with_evaluation and rel in EVAL_FILES
        elif parts[0] == "eval_curve":
            keep = _matches(rel, CURVE_FILES)
        elif parts[0].startswith("checkpoint-") and include_checkpoints:
            keep = include_optimizer_states or (
                not _matches(parts[1], TRAINING_STATE) and (len(parts) == 2 and _matches(parts[1], MODEL_FILES))
            )
        else:
            keep = False
        if keep:
            files.append(rel)
    return files


def check_pushable(run_dir: str | Path, writing: bool = False) -> None:
    """Refuse a folder that is not a finished recipe run that trained at least one step, or that another process is
    writing (``writing``: the caller is the run itself, which holds the folder)."""
    from recipes.shared.cards import steps_trained  # the card reads the steps the same way

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RecipeError(f"{run_dir} is not a folder: give the output_dir of a finished recipe run")
    entry = provenance.read(run_dir).get(".")
    if entry is None or entry.get("kind") != RUN_KIND:
        raise RecipeError(
            f"{run_dir} holds no recipe run record (provenance.json of kind {RUN_KIND}): only a run folder of these "
            "recipes can be pushed with its card"
        )
    if entry.get("state") != "finished":
        raise RecipeError(
            f"{run_dir} holds an unfinished run: finish it first (--resume_from_checkpoint last), then push"
        )
    if not writing and (run_dir / provenance.WRITER_LOCK).is_file():
        with provenance.sole_writer(run_dir, "a recipe run"):  # refused while a run trains there
            pass
    steps = steps_trained(run_dir)
    if not steps:
        raise RecipeError(f"{run_dir} trained no optimizer step (global_step {steps}): nothing trained to push")
    if not any(run_dir.glob("*.safetensors")) and not (run_dir / "adapter_model.bin").is_file():
        raise RecipeError(f"{run_dir} holds no saved model (no *.safetensors): nothing to push")


def evaluation_counts(run_dir: str | Path) -> bool:
    """Whether the folder's CV-Bench evaluation scored its final weights on the whole dataset (it is uploaded only
    then: an evaluation of other weights would be published as this model's)."""
    from recipes.shared.cards import evaluation

    summary, problem = evaluation(Path(run_dir))
    return summary is not None and problem is None


def push_run(
    run_dir: str | Path,
    request: PushRequest,
    include_checkpoints: bool = False,
    include_optimizer_states: bool = False,
    writing: bool = False,
) -> str:
    """Render the card again, then upload `upload_files` to ``request.repo_id``; returns the commit URL."""
    from huggingface_hub import HfApi

    from recipes.shared.cards import write_card

    run_dir = Path(run_dir)
    check_push(request.repo_id, request.token)
    check_pushable(run_dir, writing)
    write_card(run_dir, request.repo_id)
    files = upload_files(run_dir, include_checkpoints, include_optimizer_states, evaluation_counts(run_dir))
    api = HfApi(token=request.token)
    try:
        api.create_repo(request.repo_id, private=request.private, exist_ok=True)
        if request.revision:
            api.create_branch(request.repo_id, branch=request.revision, exist_ok=True)
        commit = api.upload_folder(
            repo_id=request.repo_id,
            folder_path=run_dir,
            allow_patterns=[glob.escape(f) for f in files],
            revision=request.revision,
            commit_message=f"Upload {run_dir.name}: model, processor, card and evaluation results",
        )
    except Exception as err:  # noqa: BLE001 - network, permission and Hub errors: the run folder is untouched
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RecipeError(
            f"pushing {run_dir} to {request.repo_id} failed ({first}); the run folder is intact: push it again with "
            f"`python -m recipes.push_to_hub {run_dir} --repo_id {request.repo_id}`"
        ) from None
    logger.info("pushed %d files of %s to %s", len(files), run_dir, commit.commit_url)
    return commit.commit_url


# --- reading records from a Hub dataset ------------------------------------------------------------------------------


def offline_hint() -> str:
    """Why the Hub may be out of reach, for an error message."""
    switches = [v for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE") if os.environ.get(v, "").lower() in ("1", "true")]
    if switches:
        return f"{' and '.join(switches)} {'is' if len(switches) == 1 else 'are'} set: unset on a machine with network"
    return "check the network and the id (and a token for a private dataset: `huggingface-cli login`)"


def load_hub_records(name: str, split: str, revision: str | None = None, what: str = "--dataset_path"):
    """Records from ``name`` — a Hub dataset id, or a local folder of data files (the same `load_dataset` call) —
    at ``split`` (and ``revision``); fails with a one-line error naming the id and what to do."""
    from datasets import load_dataset

    try:
        return load_dataset(name, split=split, revision=revision)
    except Exception as err:  # noqa: BLE001 - hub, cache and format errors all mean "no usable dataset here"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        local = Path(name).expanduser().exists()
        raise RecipeError(
            f"cannot load records from {'the folder' if local else 'the Hub dataset'} {name!r} (split {split!r}"
            + (f", revision {revision!r}" if revision else "")
            + f"): {first}. "
            + ("Check the folder and --dataset_split" if local else offline_hint())
            + f"; or give {what} a local folder written by `python -m data_prep.sat`"
        ) from None


def hub_prep_report(name: str, revision: str | None = None) -> Path | None:
    """The folder of the local copy of a Hub dataset's ``prep_report.json`` (downloaded with the records' files);
    None when the dataset has none (not pushed by `data_prep.hub`) or it cannot be had."""
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(name, "prep_report.json", repo_type="dataset", revision=revision)).parent
    except Exception as err:  # noqa: BLE001 - no report on the Hub: the bounds cannot be checked, which is said
        logger.info("%s has no prep_report.json on the Hub (%s): its image bounds cannot be checked", name, err)
        return None
