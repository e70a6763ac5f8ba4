"""The mini ablation suite: stages keyed by what defines them, the summary and report over seeds, the launcher, and
one shortened suite (one seed, two arms, few steps) in which GRPO must raise held-out accuracy.

The stage tests run real processes (one-line Python commands standing in for the recipes, so that they take
seconds); the aggregation tests build runs with known log histories and check every number the summary, the Markdown
table and the `recipes.report.compare` report give for them. The slow test runs the real launcher, recipes and scoring.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures.files import tree_hashes

from recipes.mini import ablations as mini_ablations
from recipes.mini.ablation_arms import ARMS, OOD_FILE, Settings
from recipes.mini.ablation_summary import report_arms, summary_table
from recipes.mini.ablations import finish
from recipes.mini.runs import KIND, Stage, StageError, config_definition, plan, run_stages
from recipes.report.arms import aggregate
from recipes.shared import provenance
from recipes.shared.cli import CONFIG_DIR, REPO_ROOT

LAUNCHER = REPO_ROOT / "launch" / "mini_ablations.sh"
START_OVER = "START OVER HERE"


def writer(folder: Path, text: str) -> list[str]:
    """A command that writes ``folder/out.txt`` (what a recipe stage does, in a fraction of a second)."""
    code = "import pathlib, sys; p = pathlib.Path(sys.argv[1]); p.mkdir(parents=True); sum(range(3 * 10**6)); "
    code += "(p / 'out.txt').write_text(sys.argv[2])"
    return [sys.executable, "-c", code, str(folder), text]


def chain(home: Path, steps: int = 2, seed: int = 0) -> list[Stage]:
    """Three stages, each reading nothing but defined by its own settings and its upstream's: data → model → arm."""
    data = Stage("data", home, (home / "data",), {"seed": seed}, [writer(home / "data", f"data {seed}")])
    model = Stage(
        "model", home, (home / "model",), {"steps": steps, "data": data.defined_by},
        [writer(home / "model", f"model {steps}")], after=(data.key,),
    )  # fmt: skip
    arm = Stage(
        "arm", home, (home / "arm",), {"lr": 1, "model": model.defined_by}, [writer(home / "arm", "arm")],
        after=(model.key,),
    )  # fmt: skip
    return [data, model, arm]


def contents(home: Path) -> dict[str, str]:
    return {str(p.relative_to(home)): p.read_text() for p in sorted(home.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------------------------------------------
# stages keyed by what defines them
# --------------------------------------------------------------------------------------------------------------


def test_a_rerun_with_the_same_settings_skips_every_finished_stage(tmp_path, capsys):
    assert set(run_stages(chain(tmp_path), jobs=2, start_over=START_OVER).values()) == {"run"}
    before = contents(tmp_path)
    assert set(run_stages(chain(tmp_path), jobs=2, start_over=START_OVER).values()) == {"done"}
    assert contents(tmp_path) == before
    assert capsys.readouterr().out.count("done already") == 3
    record = provenance.read(tmp_path)
    assert record["model"]["state"] == "finished" and record["model"]["defined_by"]["steps"] == 2
    assert record["model"]["seconds"] > 0 and record["model"]["cpu_seconds"] > 0  # the command's own CPU time
    assert record["model"]["kind"] == KIND and record["model"]["owns"] == ["logs/model.log", "model"]


def test_other_settings_are_refused_naming_each_difference_and_nothing_changes(tmp_path):
    run_stages(chain(tmp_path, steps=2), jobs=1, start_over=START_OVER)
    before = contents(tmp_path)
    with pytest.raises(StageError) as refused:
        run_stages(chain(tmp_path, steps=3), jobs=1, start_over=START_OVER)
    message = str(refused.value)
    assert "model (model) was made with other settings" in message and "steps: 2 there, 3 now" in message
    assert "arm (arm) was made with other settings" in message and "model.steps: 2 there, 3 now" in message
    assert "data (data)" not in message  # unchanged upstream
    assert message.endswith(START_OVER)
    assert contents(tmp_path) == before


def test_redo_changed_remakes_what_changed_and_what_was_made_from_it(tmp_path):
    run_stages(chain(tmp_path, steps=2), jobs=1, start_over=START_OVER)
    fates = run_stages(chain(tmp_path, steps=3), jobs=1, start_over=START_OVER, redo_changed=True)
    assert [fates[s.key] for s in chain(tmp_path)] == ["done", "run", "run"]
    assert (tmp_path / "model" / "out.txt").read_text() == "model 3"
    assert provenance.read(tmp_path)["arm"]["defined_by"]["model"]["steps"] == 3


def test_a_stage_whose_upstream_is_remade_is_remade_too(tmp_path):
    run_stages(chain(tmp_path), jobs=1, start_over=START_OVER)
    (tmp_path / "model" / "out.txt").unlink()  # the model is gone: remade; the arm was made from the old one
    (tmp_path / "model").rmdir()
    fates = run_stages(chain(tmp_path), jobs=1, start_over=START_OVER)
    assert [fates[s.key] for s in chain(tmp_path)] == ["done", "run", "run"]


def test_folders_without_a_record_are_refused_even_when_asked_to_redo(tmp_path):
    """Outputs of an older launcher (or of another seed copied in, or the user's): never "done already", never
    deleted, whatever the options; the way out is another folder."""
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.safetensors").write_text("weights of unknown origin")
    for redo in (False, True):
        with pytest.raises(StageError, match=r"(?s)holds files but no provenance.json.*Choose another output folder"):
            run_stages(chain(tmp_path), jobs=1, start_over=START_OVER, redo_changed=redo)
    assert contents(tmp_path) == {"model/model.safetensors": "weights of unknown origin"}
    # With a record there (a run of these stages), a stage folder it does not own is refused just the same.
    run_stages(chain(tmp_path / "run")[:1], jobs=1, start_over=START_OVER)
    (tmp_path / "run" / "model").mkdir()
    (tmp_path / "run" / "model" / "mine.txt").write_text("mine")
    with pytest.raises(StageError, match=r"model \(model\) holds files but provenance.json has no record"):
        run_stages(chain(tmp_path / "run"), jobs=1, start_over=START_OVER, redo_changed=True)
    assert (tmp_path / "run" / "model" / "mine.txt").read_text() == "mine"


def test_an_unfinished_stage_is_redone_from_scratch(tmp_path):
    stages = chain(tmp_path)
    run_stages(stages[:1], jobs=1, start_over=START_OVER)
    # A killed model stage: recorded as running with these settings, a partial file left behind.
    provenance.start(tmp_path, KIND, stages[1].defined_by, "model", owns=["model"])
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "partial.bin").write_text("torn")
    fates = run_stages(chain(tmp_path), jobs=1, start_over=START_OVER)
    assert [fates[s.key] for s in stages] == ["done", "run", "run"]
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["out.txt"]


def test_a_failing_stage_stops_the_run_with_the_end_of_its_log(tmp_path):
    stages = chain(tmp_path)
    stages[1].commands = [[sys.executable, "-c", "import sys; print('the loss is nan'); sys.exit(3)"]]
    with pytest.raises(StageError, match=r"(?s)model failed \(exit status 3\).*the loss is nan"):
        run_stages(stages, jobs=2, start_over=START_OVER)
    assert not (tmp_path / "arm").exists()  # built on the failed stage: never started
    assert provenance.read(tmp_path)["model"]["state"] == "running"  # so that the next run redoes it


def test_stages_run_in_parallel_only_once_what_they_build_on_has_finished(tmp_path):
    # Two seeds' chains; with two jobs, every stage starts after its upstream finished.
    stages = chain(tmp_path / "s0") + chain(tmp_path / "s1", seed=1)
    order = tmp_path / "order.txt"
    for stage in stages:
        code = "import sys, time; open(sys.argv[1], 'a').write(sys.argv[2] + ' start\\n'); time.sleep(0.3); "
        code += "open(sys.argv[1], 'a').write(sys.argv[2] + ' end\\n')"
        stage.commands.insert(0, [sys.executable, "-c", code, str(order), stage.key])
    run_stages(stages, jobs=2, start_over=START_OVER)
    events = order.read_text().splitlines()
    for stage in stages:
        for upstream in stage.after:
            assert events.index(f"{upstream} end") < events.index(f"{stage.key} start")
    # and two ran at the same time at least once
    running, most = 0, 0
    for event in events:
        running += 1 if event.endswith("start") else -1
        most = max(most, running)
    assert most == 2


def test_a_config_is_defined_by_its_values_not_its_comments(tmp_path):
    config = tmp_path / "arm.yaml"
    config.write_text("# GRPO arm\nlearning_rate: 2.0e-4\nloss_type: grpo\n")
    first = config_definition(config)
    config.write_text("# GRPO arm, a comment corrected\nloss_type: grpo   # the paper's\nlearning_rate: 0.0002\n")
    assert config_definition(config) == first
    config.write_text("learning_rate: 1.0e-4\nloss_type: grpo\n")
    assert config_definition(config)["values_sha256"] != first["values_sha256"]


def test_differences_name_nested_settings():
    assert provenance.differences({"a": {"b": 1}, "c": 2}, {"a": {"b": 2}, "c": 2}) == ["a.b: 1 there, 2 now"]
    assert plan([], START_OVER) == {}


# --------------------------------------------------------------------------------------------------------------
# the suite's definitions
# --------------------------------------------------------------------------------------------------------------


def test_every_arm_has_its_config_and_the_arms_share_stage_a_records_and_steps(tmp_path):
    settings = Settings(out=tmp_path, seeds=[0, 1], arms=list(ARMS), stage_b_steps=12, every_b=4)
    stages = mini_ablations.suite_stages(settings)
    names = [(s.home.name, s.name) for s in stages]
    assert names[:6] == [(f"seed{n}", name) for n in (0, 1) for name in ("prepare", "color_records", "stage_a")]
    arms = [s for s in stages if s.name in ARMS]
    assert len(arms) == 2 * len(ARMS)
    for stage in arms:
        seed = int(stage.home.name.removeprefix("seed"))
        train = stage.commands[0]
        option = dict(zip(train[4::2], train[5::2], strict=False))
        assert option["--model_name_or_path"] == str(tmp_path / f"seed{seed}" / "stage_a")
        assert option["--dataset_path"] == str(tmp_path / f"seed{seed}" / "data" / "color")
        assert option["--max_steps"] == "12" and option["--seed"] == str(seed)
        assert option["--save_steps"] == option["--heldout_eval_steps"] == "4"  # OOD scored at the same steps
        assert stage.env["WANDB_TAGS"] == f"suite:mini_ablations,arm:{stage.name},seed:{seed}"
        assert option["--wandb_group"] == "mini_ablations"
        assert stage.defined_by["stage_a"]["seed"] == seed and stage.defined_by["records"]["color_rows"] == 48


def test_every_arm_config_parses_with_its_recipe():
    """The arm configs load through their recipe's parser (a misspelt key fails here), and differ from the GRPO
    arm only where they say."""
    from recipes import grpo_base, sft_baseline

    parsed = {}
    for name, spec in ARMS.items():
        module = sft_baseline if spec.recipe.name == "sft_baseline.py" else grpo_base
        parsed[name] = module.make_parser().parse_args_and_config(["--config", str(spec.config)])
    grpo = parsed["grpo"][1]
    assert (grpo.loss_type, grpo.importance_sampling_level, grpo.scale_rewards) == ("grpo", "token", "group")
    assert (parsed["dr_grpo"][1].loss_type, parsed["dr_grpo"][1].scale_rewards) == ("dr_grpo", "none")
    assert parsed["dapo"][1].loss_type == "dapo"
    gspo = parsed["gspo"][1]
    assert (gspo.importance_sampling_level, gspo.epsilon, gspo.epsilon_high) == ("sequence", 3e-4, 4e-4)
    assert gspo.generation_batch_size == 4 * gspo.per_device_train_batch_size  # off-policy steps 2-4 of each
    length = parsed["grpo_length"][0]
    assert length.reward_funcs == ["accuracy", "format", "length"] and length.length_scale == 0.03
    sft_args, sft_training, _ = parsed["sft"]
    for name, (script_args, training, _) in parsed.items():
        # Same records per step, steps, schedule and scoring in every arm.
        per_step = training.per_device_train_batch_size // getattr(training, "num_generations", 1)
        assert per_step == 4, name
        assert (training.learning_rate, training.lr_scheduler_type, training.max_steps) == (2e-4, "linear", 150)
        assert script_args.accuracy_requires_format and script_args.prompt_template == "base_short", name
    assert sft_args.completion_template.endswith("</think><answer> {answer} </answer>")


# --------------------------------------------------------------------------------------------------------------
# summary and report: aggregation over seeds on known log histories
# --------------------------------------------------------------------------------------------------------------


def fake_run(
    home: Path, arm: str, seed: int, heldout: list[float], ood: list[float], seconds: float, shades: dict | None = None
) -> None:
    """A finished arm as the suite leaves it: log history (held-out accuracy at steps 0, 5, 10 and rewards), its
    ood.json (``shades``: accuracy per shade at those steps) and its record in the seed's provenance.json."""
    run = home / arm
    run.mkdir(parents=True)
    history = [{"step": 5 * i, "heldout/accuracy": v, "heldout/format": 1.0} for i, v in enumerate(heldout)]
    history += [{"step": 5 * i, "rewards/accuracy_reward/mean": v / 2, "loss": 0.1} for i, v in enumerate(heldout)]
    (run / "trainer_state.json").write_text(json.dumps({"global_step": 10, "log_history": history}))
    (run / "resolved_config.yaml").write_text(f"training:\n  seed: {seed}\n  output_dir: {run}\n")
    curve = [[5 * i, v] for i, v in enumerate(ood)]
    by_type = {
        f"mini_color_shade:{name}": [[5 * i, v] for i, v in enumerate(values)]
        for name, values in (shades or {}).items()
    }
    ood_file = {"curve": curve, "format": [[s, 1.0] for s, _ in curve], "by_type": by_type}
    (run / OOD_FILE).write_text(json.dumps(ood_file))
    provenance.start(home, KIND, {"arm": arm}, arm, owns=[arm])
    provenance.finish(home, arm, seconds=seconds, cpu_seconds=seconds - 1)


@pytest.fixture
def two_seeds(tmp_path) -> Settings:
    for seed, shift in ((0, 0.0), (1, 0.1)):
        home = tmp_path / f"seed{seed}"
        (home / "stage_a").mkdir(parents=True)
        history = [{"step": 100, "heldout/accuracy": 0.9 + shift}]
        (home / "stage_a" / "trainer_state.json").write_text(json.dumps({"log_history": history}))
        shades = {"dark red": [0.1, 0.2, 0.3 + shift], "light blue": [0.0, 0.1, 0.2]}
        fake_run(home, "grpo", seed, [0.5, 0.8, 0.9 + shift], [0.5, 0.6, 0.7 + shift], 100 + 20 * seed, shades)
        fake_run(home, "sft", seed, [0.5, 0.5, 0.6 - shift], [0.5, 0.5, 0.5], 30, shades)
    return Settings(out=tmp_path, seeds=[0, 1], arms=["grpo", "sft"], stage_b_steps=10, every_b=5)


def test_summary_gives_every_run_and_the_mean_and_sd_per_arm(two_seeds):
    summary = finish(two_seeds, {"invocation": {"wall_seconds": 7.0}})
    saved = json.loads((two_seeds.out / "summary.json").read_text())
    assert saved == json.loads(json.dumps(summary))
    runs = {(r["arm"], r["seed"]): r for r in saved["runs"]}
    assert set(runs) == {("grpo", 0), ("grpo", 1), ("sft", 0), ("sft", 1)}
    assert runs["grpo", 1]["heldout"] == {"before": 0.5, "after": 1.0, "curve": [[0, 0.5], [5, 0.8], [10, 1.0]]}
    assert runs["grpo", 1]["ood"]["after"] == pytest.approx(0.8) and runs["grpo", 1]["seconds"] == 120
    grpo = saved["per_arm"]["grpo"]
    assert grpo["seeds"] == [0, 1]
    assert grpo["heldout_after"]["mean"] == pytest.approx(0.95) and grpo["heldout_after"]["n"] == 2
    assert grpo["heldout_after"]["sd"] == pytest.approx(0.0707107, abs=1e-6)  # sample s.d. of 0.9 and 1.0
    assert (grpo["ood_after"]["min"], grpo["ood_after"]["max"]) == pytest.approx((0.7, 0.8))
    assert saved["per_arm"]["sft"]["heldout_after"]["mean"] == pytest.approx(0.55)
    assert saved["per_arm"]["sft"]["ood_after"]["sd"] == 0.0
    assert grpo["seconds"]["mean"] == 110 and grpo["cpu_seconds"]["mean"] == 109
    assert saved["stage_a"]["1"]["shape_accuracy"] == 1.0
    assert saved["invocation"] == {"wall_seconds": 7.0}

    assert runs["grpo", 1]["ood"]["by_shade"] == {"dark red": [0.1, pytest.approx(0.4)], "light blue": [0.0, 0.2]}
    assert grpo["ood_after_by_shade"]["dark red"]["mean"] == pytest.approx(0.35)
    assert grpo["ood_before_by_shade"]["light blue"]["mean"] == 0.0

    table = summary_table(saved)
    assert "| OOD accuracy per shade | dark red | light blue |" in table
    assert "| before (stage A) | 10.0 ± 0.0% (10.0–10.0) | 0.0 ± 0.0% (0.0–0.0) |" in table
    assert "| grpo | 35.0 ± 7.1% (30.0–40.0) | 20.0 ± 0.0% (20.0–20.0) |" in table
    assert "| grpo | 2 | 50.0 ± 0.0% (50.0–50.0) | 95.0 ± 7.1% (90.0–100.0) | 50.0 ± 0.0% (50.0–50.0) |" in table
    assert "| sft | 2 |" in table and "55.0 ± 7.1% (50.0–60.0)" in table


def test_report_draws_each_arm_as_the_mean_over_its_seeds(two_seeds):
    finish(two_seeds, {})
    page = (two_seeds.out / "report.html").read_text()
    png = (two_seeds.out / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert (two_seeds.out / "figure.png").read_bytes()[:8] == png[:8]  # the write-up's figure
    assert "2 arms, 4 runs" in page  # an arm per name, its seeds inside it
    for arm in ("grpo", "sft"):
        assert f"<td>{arm}</td><td>2</td><td>0, 1</td>" in page
    # Final values: mean ± s.d. over the two seeds of each run's last point (held-out, OOD) and of the scalars.
    assert "0.95 ± 0.07071" in page  # grpo held-out accuracy at the end
    assert "0.75 ± 0.07071" in page  # grpo OOD accuracy at the end (curve and scalar)
    assert "OOD accuracy" in page and "held-out before" in page

    # What is drawn: per arm, the mean and min–max over its seeds of each curve, the seeds counted in the legend.
    arms = {arm.name: arm for arm in report_arms(two_seeds, json.loads((two_seeds.out / "summary.json").read_text()))}
    assert arms["grpo"].label == "grpo (n=2)" and [run.seed for run in arms["grpo"].runs] == [0, 1]
    ood = aggregate([run.series["ood/accuracy"] for run in arms["grpo"].runs])
    assert ood.steps == [0, 5, 10] and ood.n == 2
    assert ood.mean == pytest.approx([0.5, 0.6, 0.75]) and ood.high == pytest.approx([0.5, 0.6, 0.8])
    heldout = aggregate([run.series["heldout/accuracy"] for run in arms["sft"].runs])
    assert heldout.mean == pytest.approx([0.5, 0.5, 0.55]) and heldout.low == pytest.approx([0.5, 0.5, 0.5])


def test_fresh_deletes_what_the_records_own_and_a_folder_of_unknown_origin_is_refused(two_seeds, tmp_path):
    finish(two_seeds, {})  # the report files, recorded in OUT's provenance.json before they were written
    (tmp_path / "notes.txt").write_text("the user's notes")
    (tmp_path / "seed0" / "grpo" / "my_eval.json").write_text("the user's file in a run folder")  # goes with it
    before = tree_hashes(tmp_path)
    one_seed = Settings(out=tmp_path, seeds=[0], arms=["grpo", "sft"])
    removed = mini_ablations.delete_recorded(one_seed, mini_ablations.check_out(one_seed))
    assert {str(p.relative_to(tmp_path)) for p in removed} == {
        "seed0/grpo", "seed0/sft", "summary.json", "report.html", "report.png", "figure.png"
    }  # fmt: skip
    after = tree_hashes(tmp_path)
    kept = {k for k in before if not k.startswith(("seed0/grpo/", "seed0/sft/", "summary", "report", "figure"))}
    assert {k: before[k] for k in kept if "provenance" not in k} == {
        k: after[k] for k in kept if "provenance" not in k
    }
    assert all(k in after for k in before if k.startswith("seed1/"))  # another seed: untouched

    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "results.csv").write_text("someone's results")
    with pytest.raises(StageError, match="holds files but no provenance.json"):
        mini_ablations.check_out(Settings(out=stranger, seeds=[0], arms=["grpo"]))


def test_summary_refuses_a_run_that_logged_no_heldout_accuracy(two_seeds):
    state = two_seeds.out / "seed1" / "sft" / "trainer_state.json"
    state.write_text(json.dumps({"global_step": 10, "log_history": [{"step": 10, "loss": 1.0}]}))
    with pytest.raises(StageError, match="logged no heldout/accuracy"):
        finish(two_seeds, {})


# --------------------------------------------------------------------------------------------------------------
# the launcher
# --------------------------------------------------------------------------------------------------------------


def launch(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", **env}
    return subprocess.run(["bash", str(LAUNCHER), *args], capture_output=True, text=True, env=environment, cwd=cwd)


def test_launcher_prints_its_usage(tmp_path):  # tests/test_launch.py runs shellcheck on every launcher
    usage = launch("-h", cwd=tmp_path).stdout
    for name in ("Usage: bash launch/mini_ablations.sh [SEED ...]", "ARMS", "JOBS", "STAGE_B_STEPS", "OOD_ROWS"):
        assert name in usage


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["x"], {}, "error: SEED='x' must be a whole number >= 0"),
        (["0", "0"], {}, "error: seed 0 is given twice"),
        ([], {"ARMS": "grpo nope"}, "error: unknown arm 'nope' in ARMS; valid arms: grpo grpo_length sft"),
        ([], {"JOBS": "0"}, "error: JOBS='0' must be a positive whole number"),
        ([], {"STAGE_B_STEPS": "1e3"}, "error: STAGE_B_STEPS='1e3' must be a positive whole number"),
        ([], {"REPORT_TO": "tensorboard"}, "error: REPORT_TO='tensorboard' must be one of: none wandb"),
    ],
)
def test_launcher_refuses_bad_settings_before_writing_anything(args, env, message, tmp_path):
    result = launch(*args, cwd=tmp_path, OUT=str(tmp_path / "out"), **env)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_launcher_refuses_results_of_another_seed_or_config_and_changes_nothing(tmp_path):
    """A seed folder made with other settings (here: stage A made with 400 steps, asked now with 600) is refused
    before anything runs, with the difference and how to start over; FRESH=1 would delete it."""
    out = tmp_path / "out"
    home = out / "seed0"
    settings = Settings(out=out, seeds=[0], arms=["grpo"], stage_a_steps=400)
    stages = mini_ablations.suite_stages(settings)
    for stage in stages:
        for folder in stage.folders:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "made.txt").write_text(stage.name)
        provenance.start(home, KIND, stage.defined_by, stage.name, owns=[f.relative_to(home) for f in stage.folders])
        provenance.finish(home, stage.name)
    before = contents(out)
    result = launch("0", cwd=tmp_path, OUT=str(out), ARMS="grpo", STAGE_A_STEPS="600")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "stage_a (stage_a) was made with other settings" in result.stderr
    assert "max_steps: 400 there, 600 now" in result.stderr and "shape_rows: 6400 there, 9600 now" in result.stderr
    assert "REDO=1 bash launch/mini_ablations.sh 0" in result.stderr and "FRESH=1" in result.stderr
    assert contents(out) == before


# --------------------------------------------------------------------------------------------------------------
# one shortened suite, end to end
# --------------------------------------------------------------------------------------------------------------

# Stage A long enough for the base to learn the output format and to look at the image (at 200 steps both arms stayed
# at chance on the colour question), 30 GRPO steps, 100 held-out and 100 OOD scenes; the GRPO and SFT arms in
# parallel. About 3 minutes on two free cores.
CI_ENV = {
    "ARMS": "grpo sft",
    "STAGE_A_STEPS": "400",
    "STAGE_B_STEPS": "30",
    "HELDOUT_ROWS": "100",
    "OOD_ROWS": "100",
    "HELDOUT_EVERY_A": "400",
    "HELDOUT_EVERY_B": "10",
}


@pytest.mark.slow
def test_a_shortened_suite_raises_grpos_heldout_accuracy_and_summarizes_it(tmp_path):
    out = tmp_path / "suite"
    result = launch("0", cwd=tmp_path, OUT=str(out), **CI_ENV)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    runs = {r["arm"]: r for r in summary["runs"]}
    assert set(runs) == {"grpo", "sft"} and summary["settings"]["seeds"] == [0]
    grpo = runs["grpo"]
    # The base was taught another question: GRPO alone makes it answer the colour question.
    assert grpo["heldout"]["before"] <= 0.6 and grpo["heldout"]["after"] - grpo["heldout"]["before"] >= 0.25, grpo
    for run in runs.values():
        # Both sets scored at the same steps, from the same starting model (step 0) in every arm.
        assert [s for s, _ in run["heldout"]["curve"]] == [s for s, _ in run["ood"]["curve"]] == [0, 10, 20, 30]
        assert run["seconds"] > 0 and run["cpu_seconds"] > 0
        # The OOD set is scored per shade too: every shade that no training record shows.
        assert set(run["ood"]["by_shade"]) == {"dark red", "light red", "dark blue", "light blue"}
        assert not list((out / "seed0" / run["arm"]).glob("checkpoint-*"))  # scored, then dropped
    assert runs["grpo"]["ood"]["before"] == runs["sft"]["ood"]["before"]
    assert runs["grpo"]["heldout"]["before"] == runs["sft"]["heldout"]["before"]
    assert "| grpo | 1 |" in result.stdout and (out / "report.html").stat().st_size > 10_000

    # A rerun with the same settings redoes nothing and gives the same summary.
    again = launch("0", cwd=tmp_path, OUT=str(out), **CI_ENV)
    assert again.returncode == 0 and again.stdout.count("done already") == 5, again.stdout
    assert json.loads((out / "summary.json").read_text())["runs"] == summary["runs"]


def test_config_dir_holds_every_arm():
    assert {spec.config for spec in ARMS.values()} <= set((CONFIG_DIR / "mini").glob("*.yaml"))
