"""Model cards rendered from real run folders (recipes/shared/cards.py): a tiny GRPO run logging to an offline W&B
run, the same run once evaluated on CV-Bench with its curve, and a LoRA run — read back as the Hub reads them
(huggingface_hub's ModelCard.load), and compared with the files they describe."""

from __future__ import annotations

import json

import pytest
import yaml
from huggingface_hub import ModelCard
from safetensors.torch import load_file, save_file

from recipes import eval_curve, eval_cvbench, grpo_base, push_to_hub
from recipes.evaluation.curve import find_wandb_run
from recipes.shared import provenance, run_folder
from recipes.shared.cards import card_data, global_batch, write_card
from recipes.shared.cli import CONFIG_DIR


def train(model, data, out, config: str = "tiny/grpo_base.yaml", *extra: str):
    argv = ["--config", str(CONFIG_DIR / config), "--model_name_or_path", str(model), "--dataset_path", str(data)]
    argv += ["--output_dir", str(out), "--max_steps", "2", "--save_steps", "1", "--per_device_train_batch_size", "4"]
    argv += ["--log_completions", "false", "--disable_tqdm", "true", "--max_completion_length", "16", *extra]
    trainer = grpo_base.main(*grpo_base.make_parser().parse_args_and_config(argv))
    assert trainer.state.global_step == 2
    return out


def push(argv: list[str], capsys) -> tuple[int, str]:
    """``python -m recipes.push_to_hub ARGV`` in process: (exit code, standard output)."""
    capsys.readouterr()
    code = push_to_hub.main(argv)
    return code, capsys.readouterr().out


def card(run_dir) -> ModelCard:
    return ModelCard.load(run_dir / "README.md")


@pytest.fixture(scope="module")
def grpo_run(tiny_base_dir, sat_records_dir, tmp_path_factory):
    """Two GRPO steps with a checkpoint at each (TRL writes its card with every checkpoint), W&B offline."""
    import wandb

    out = tmp_path_factory.mktemp("cards") / "grpo_base"
    with pytest.MonkeyPatch.context() as env:
        replaced = []  # what README.md held when our card replaced it

        def keep_trls(run_dir, repo_id=None):
            replaced.append((run_dir / "README.md").read_text())
            return write_card(run_dir, repo_id)

        env.setattr(run_folder, "write_card", keep_trls)
        env.setenv("WANDB_MODE", "offline")
        env.delenv("WANDB_DIR", raising=False)  # W&B's files go into the run folder, where the card finds them
        wandb.teardown()
        train(tiny_base_dir, sat_records_dir, out, "tiny/grpo_base.yaml", "--report_to", "wandb")
        wandb.teardown()
    assert len(replaced) == 1 and "fine-tuned version of" in replaced[0]  # TRL had written its card there
    return out


@pytest.fixture(scope="module")
def evaluated_run(grpo_run, cvbench_parquet):
    """The GRPO run evaluated on the 48 synthetic CV-Bench rows (its final weights) and along training (the curve)."""
    tiny = str(CONFIG_DIR / "eval/tiny.yaml")
    argv = ["--config", tiny, "--model_name_or_path", str(grpo_run), "--output_dir", str(grpo_run / "eval_cvbench")]
    argv += ["--dataset", str(cvbench_parquet), "--max_new_tokens", "4", "--batch_size", "8"]
    eval_cvbench.main(*eval_cvbench.make_parser().parse_args_and_config(argv))
    argv = ["--config", tiny, "--dataset", str(cvbench_parquet), "--run_dir", str(grpo_run), "--limit", "6"]
    eval_curve.main(*eval_curve.make_parser().parse_args_and_config([*argv, "--max_new_tokens", "4"]))
    return grpo_run


@pytest.fixture(scope="module")
def lora_run(tiny_base_dir, sat_records_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("cards") / "grpo_base_lora"
    return train(tiny_base_dir, sat_records_dir, out, "tiny/grpo_base_lora.yaml", "--report_to", "none")


@pytest.mark.slow
def test_a_finished_run_has_our_card_not_trls(grpo_run, tiny_base_dir, sat_records_dir):
    text = (grpo_run / "README.md").read_text()
    assert "fine-tuned version of" not in text and "TRL" not in text.split("---")[1]  # TRL's generic card is gone
    entry = provenance.read(grpo_run)["."]
    assert entry["state"] == "finished" and "README.md" in entry["owns"]  # replacing the run deletes it too

    loaded = card(grpo_run)
    data = loaded.data.to_dict()
    # A local base model and local data are no Hub ids: left out of the front matter rather than invented.
    assert "base_model" not in data and "datasets" not in data and "license" not in data
    assert data["library_name"] == "transformers" and data["pipeline_tag"] == "image-text-to-text"
    assert {"visualthinker-r1-zero", "grpo", "trl"} <= set(data["tags"])
    assert "2503.05132" in loaded.text and str(tiny_base_dir) in loaded.text

    report = json.loads((sat_records_dir / "prep_report.json").read_text())
    assert f"{report['rows_written']} of {report['rows_read']} rows kept" in loaded.text
    assert f"multi_image {report['skipped_by_reason']['multi_image']}" in loaded.text
    config = yaml.safe_load((grpo_run / "resolved_config.yaml").read_text())
    assert global_batch(config) == {
        "per_device": 4,
        "accumulation": 1,
        "processes": 1,
        "sequences": 4,
        "generations": 4,
        "prompts": 1,
    }
    assert "1 prompt(s) × 4 completions = 4 sequences per optimizer step" in loaded.text
    assert "| optimizer steps trained | 2 (of max_steps 2) |" in loaded.text
    assert f"`{find_wandb_run(grpo_run)}` in project `visualthinker-tiny` (logged offline" in loaded.text
    assert "Not evaluated in this folder yet" in loaded.text
    assert "python recipes/eval_cvbench.py --prompt base --model_name_or_path" in loaded.text  # the matching prompt
    assert "Where this differs from the paper's code (on purpose)" in loaded.text


@pytest.mark.slow
def test_the_card_of_an_evaluated_run_shows_its_results_and_curve(evaluated_run, capsys):
    # The push command renders the card again before anything leaves (here: --dry_run, nothing leaves).
    code, out = push([str(evaluated_run), "--repo_id", "me/grpo", "--dry_run", "true"], capsys)
    assert code == 0
    summary = json.loads((evaluated_run / "eval_cvbench" / "summary.json").read_text())
    text = card(evaluated_run).text
    assert "Not this model's score" not in text
    assert f"| {100 * summary['accuracy']:.2f}% ({summary['correct']}/{summary['rows']['scored']}) |" in text
    assert f"| {100 * summary['official_score']:.2f}% |" in text
    for task, group in summary["per_task"].items():
        assert f"| {task} | {group['rows']} | {100 * group['accuracy']:.2f}% |" in text
    assert "a local dataset, not the Hub's nyu-visionx/CV-Bench" in text
    curve = json.loads((evaluated_run / "eval_curve" / "curve.json").read_text())["points"]
    for point in curve:
        assert f"| {point['step']} | {100 * point['cvbench/accuracy']:.2f}% |" in text
    # Scored on a local stand-in, not CV-Bench: no Hub results (model-index) are claimed for it.
    assert "model-index" not in (evaluated_run / "README.md").read_text()
    # What the push would upload: model, processor, card, config, the evaluation and the curve — nothing private.
    files = out.split()
    assert {"README.md", "model.safetensors", "config.json", "resolved_config.yaml"} <= set(files)
    assert {"eval_cvbench/summary.json", "eval_curve/curve.json"} <= set(files)
    assert not [f for f in files if f.startswith(("checkpoint-", "wandb/", "models/")) or "provenance" in f]


@pytest.mark.slow
def test_an_evaluation_of_other_weights_is_marked_and_not_pushed(evaluated_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(evaluated_run, run, ignore=shutil.ignore_patterns("wandb", "*.lock"))
    weights = run / "model.safetensors"
    tensors = load_file(weights)  # other final weights of the same shape: the run "continued", not re-evaluated
    name = next(iter(tensors))
    tensors[name] = tensors[name] + 0.5
    save_file(tensors, weights, metadata={"format": "pt"})
    code, out = push([str(run), "--repo_id", "me/grpo", "--dry_run", "true"], capsys)
    assert code == 0
    assert "**Not this model's score**: computed from other" in card(run).text
    assert "eval_cvbench/summary.json" not in out.split() and "model.safetensors" in out.split()


@pytest.mark.slow
def test_the_card_of_a_lora_run(lora_run, capsys):
    data = card(lora_run).data.to_dict()
    assert data["library_name"] == "peft" and "lora" in data["tags"]
    assert "LoRA adapter (r " in card(lora_run).text
    code, out = push([str(lora_run), "--repo_id", "me/lora", "--dry_run", "true"], capsys)
    files = out.split()
    assert code == 0 and {"adapter_model.safetensors", "adapter_config.json", "README.md"} <= set(files)
    code, out = push(
        [str(lora_run), "--repo_id", "me/lora", "--dry_run", "true", "--include_checkpoints", "true"], capsys
    )
    files = out.split()
    assert "checkpoint-2/adapter_model.safetensors" in files
    assert not [f for f in files if f.endswith(("optimizer.pt", "scheduler.pt", ".pth"))]  # not without asking
    argv = [str(lora_run), "--repo_id", "me/lora", "--dry_run", "true", "--include_checkpoints", "true"]
    code, out = push([*argv, "--include_optimizer_states", "true"], capsys)
    assert "checkpoint-2/optimizer.pt" in out.split()


@pytest.mark.slow
def test_a_readme_of_the_users_is_never_replaced(lora_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(lora_run, run)
    provenance.record(run, owns=[])  # the record as if README.md were not the run's
    entries = provenance.read(run)
    entries["."]["owns"].remove("README.md")
    (run / provenance.RECORD).write_text(json.dumps({"about": provenance.ABOUT, "entries": entries}))
    (run / "README.md").write_text("my notes\n")
    assert write_card(run) is None
    assert (run / "README.md").read_text() == "my notes\n"


def test_front_matter_of_a_hub_run_with_cv_bench_results(tmp_path):
    """What the Hub reads from the front matter: base model, datasets, results (model-index) — only what is known."""
    config = {"model": {"model_name_or_path": "Qwen/Qwen2-VL-2B"}, "training": {"num_generations": 8}}
    data = {"hub_id": "array/SAT", "report": None}
    summary = {
        "accuracy": 0.5947,
        "official_score": 0.6012,
        "dataset": {"name": "nyu-visionx/CV-Bench", "split": "test", "revision": "22409a9"},
    }
    rendered = ModelCard(f"---\n{card_data(config, data, summary, True, 'grpo').to_yaml()}\n---\n\nbody\n")
    loaded = ModelCard(str(rendered))  # parsed and validated as the Hub parses it
    assert loaded.data.base_model == "Qwen/Qwen2-VL-2B" and loaded.data.datasets == ["array/SAT"]
    results = {r.metric_name: r.metric_value for r in loaded.data.eval_results}
    assert results == {"accuracy (the paper's: mean over rows)": 59.47, "official CV-Bench score": 60.12}
    assert {r.dataset_type for r in loaded.data.eval_results} == {"nyu-visionx/CV-Bench"}
    # Not this model's score (other weights, a subset) or not CV-Bench itself: no results are claimed.
    assert card_data(config, data, summary, False, "grpo").eval_results is None
    local = {**summary, "dataset": {"name": str(tmp_path / "cvbench.parquet"), "split": "test"}}
    assert card_data(config, data, local, True, "grpo").eval_results is None
    # A license only when the base model's own card states one (here a local base model's card).
    base = tmp_path / "base"
    base.mkdir()
    (base / "README.md").write_text("---\nlicense: apache-2.0\n---\n\nA model.\n")
    config["model"]["model_name_or_path"] = str(base)
    assert card_data(config, data, None, False, "grpo").license == "apache-2.0"
    assert card_data(config, data, None, False, "grpo").base_model is None  # a path is no Hub id
