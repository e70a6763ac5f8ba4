"""`recipes.compare` on hand-made run folders and W&B files: mixed logging steps, missing metrics, bad inputs.

`tests/test_dashboards.py` runs it on real runs (the tiny ablation suite); here every case is built by hand.
"""

from __future__ import annotations

import base64
import json
import re
import struct
import zlib
from pathlib import Path

import pytest

from recipes import compare
from recipes.compare import CompareError, load_run_dir, load_wandb_api, read_wandb_offline, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def grpo_entry(step: int, **overrides) -> dict:
    entry = {
        "step": step,
        "epoch": step / 100,
        "loss": 0.01 * step,
        "reward": 0.1 * step,
        "reward_std": 0.05,
        "rewards/accuracy_reward/mean": 0.05 * step,
        "rewards/format_reward/mean": 0.05 * step,
        "rewards/reflection_reward/mean": 0.01 * step,
        "completions/mean_length": 100.0 + step,
        "completions/min_length": 50.0,
        "completions/max_length": 200.0,
        "completions/clipped_ratio": 0.0,
        "kl": 0.001 * step,
        "entropy": 1.0,
    }
    entry.update(overrides)
    return entry


def write_state(folder: Path, history: list[dict], global_step: int | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    step = global_step if global_step is not None else max((e["step"] for e in history), default=0)
    path = folder / "trainer_state.json"
    path.write_text(json.dumps({"global_step": step, "log_history": history}))
    return path


@pytest.fixture
def runs(tmp_path):
    """Three runs: every step, every 5th step (with the Trainer's final summary entry), SFT (no rewards)."""
    every = tmp_path / "suite" / "grpo_base"
    write_state(every, [grpo_entry(s) for s in range(1, 21)])
    sparse = tmp_path / "suite" / "grpo_instruct"
    history = [grpo_entry(s, kl=None) for s in range(5, 21, 5)]  # TRL logs None for a metric with no valid value
    history.append({"step": 20, "train_runtime": 12.0, "train_loss": 0.3, "total_flos": 0.0})
    write_state(sparse, history)
    sft = tmp_path / "suite" / "sft_baseline"
    write_state(sft, [{"step": s, "loss": 2.0 / s, "entropy": 0.5, "mean_token_accuracy": 0.3} for s in (2, 4, 6)])
    (sft / "eval_cvbench").mkdir()
    (sft / "eval_cvbench" / "summary.json").write_text(json.dumps({"accuracy": 0.5123, "official_score": 0.4987}))
    return [every, sparse, sft]


def test_runs_with_different_logging_steps_and_missing_metrics_make_one_report(runs, tmp_path):
    output = tmp_path / "out" / "report.html"
    loaded = [load_run_dir(r) for r in runs]
    assert [p[0] for p in loaded[1].series["reward"]] == [5.0, 10.0, 15.0, 20.0]
    assert "kl" not in loaded[1].series  # only None values: an absent line, not a line of zeros
    assert "train_loss" not in loaded[1].series  # the end-of-training summary is no curve

    png_path = write_report(loaded, output)

    assert png_path == output.with_suffix(".png") and png_path.read_bytes().startswith(PNG_MAGIC)
    page = output.read_text()
    for name in ("grpo_base", "grpo_instruct", "sft_baseline"):
        assert name in page
    embedded = re.search(r'src="data:image/png;base64,([^"]+)"', page).group(1)
    assert base64.b64decode(embedded) == png_path.read_bytes()  # one self-contained file
    sft_row = next(row for row in re.findall(r"<tr>(.*?)</tr>", page) if "sft_baseline" in row)
    assert "not logged: accuracy reward, format reward, total reward" in sft_row
    assert "0.5123" in sft_row and "0.4987" in sft_row  # its CV-Bench summary, next to the run
    instruct_row = next(row for row in re.findall(r"<tr>(.*?)</tr>", page) if "grpo_instruct" in row)
    assert "not logged: KL" in instruct_row and "no CV-Bench summary" in instruct_row
    assert not [p for p in output.parent.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_an_optional_curve_appears_only_when_a_run_logged_it(runs, tmp_path):
    plain = write_report([load_run_dir(r) for r in runs], tmp_path / "plain.html")
    assert "held-out accuracy" not in plain.with_suffix(".html").read_text()
    write_state(runs[0], [grpo_entry(s, **{"heldout/accuracy": 0.3}) for s in range(1, 21)])
    page = (write_report([load_run_dir(r) for r in runs], tmp_path / "with.html")).with_suffix(".html").read_text()
    assert "<th>held-out accuracy</th>" in page
    instruct_row = next(row for row in re.findall(r"<tr>(.*?)</tr>", page) if "grpo_instruct" in row)
    assert "held-out accuracy" in instruct_row  # listed as not logged by the runs that lack it


def test_the_cli_writes_the_report_and_overwrites_an_old_one(runs, tmp_path, capsys):
    output = tmp_path / "report.html"
    output.write_text("old")
    assert compare.main([*map(str, runs), "--output", str(output), "--title", "My <suite>"]) == 0
    page = output.read_text()
    assert page.startswith("<!DOCTYPE html>") and "My &lt;suite&gt;" in page
    assert (tmp_path / "report.png").is_file()
    assert "wrote" in capsys.readouterr().out


def test_a_folder_without_log_history_is_a_clear_error(tmp_path, capsys):
    empty = tmp_path / "not_a_run"
    empty.mkdir()
    with pytest.raises(CompareError, match=r"no log history in .*not_a_run.*trainer_state\.json"):
        load_run_dir(empty)
    assert compare.main([str(empty), "--output", str(tmp_path / "r.html")]) == 2
    assert "error: no log history" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()
    with pytest.raises(CompareError, match="not a folder"):
        load_run_dir(tmp_path / "missing")
    write_state(empty, [])
    with pytest.raises(CompareError, match="no logged metrics"):
        load_run_dir(empty)


def test_the_most_advanced_history_wins_checkpoints_sorted_by_step(tmp_path):
    run = tmp_path / "grpo_base"
    write_state(run / "checkpoint-9", [grpo_entry(s) for s in range(1, 10)])
    write_state(run / "checkpoint-10", [grpo_entry(s) for s in range(1, 11)])
    assert load_run_dir(run).last_step == 10  # numeric order: checkpoint-10 after checkpoint-9
    write_state(run, [grpo_entry(s) for s in range(1, 4)])  # an older trainer_state.json of the run itself
    assert load_run_dir(run).source.endswith("checkpoint-10/trainer_state.json")
    write_state(run, [grpo_entry(s) for s in range(1, 13)])
    assert load_run_dir(run).source == str(run / "trainer_state.json")


def test_runs_with_the_same_name_are_told_apart(tmp_path):
    a = write_state(tmp_path / "seed1" / "grpo_base", [grpo_entry(1)]).parent
    b = write_state(tmp_path / "seed2" / "grpo_base", [grpo_entry(1)]).parent
    loaded = [load_run_dir(a), load_run_dir(b)]
    write_report(loaded, tmp_path / "r.html")
    assert [r.name for r in loaded] == ["seed1/grpo_base", "seed2/grpo_base"]


class FakeRun:
    name = "grpo_base-Qwen2-VL-2B-seed42"
    id = "abc123"
    group = "ablations-seed42"
    tags = ["experiment:grpo_base"]

    def scan_history(self):
        yield {"_step": 0, "train/global_step": 1, "train/reward": 0.5, "train/kl": 0.0}
        yield {"_step": 1, "train/global_step": 1, "profiling/Time taken: generate": 3.0}
        yield {"_step": 2, "train/global_step": 2, "train/reward": 0.75, "train/kl": 0.1, "completions": {"a": 1}}


class FakeApi:
    def __init__(self):
        self.asked = []

    def run(self, path):
        self.asked.append(path)
        if path != "me/proj/abc123":
            raise ValueError(f"Could not find run {path}")
        return FakeRun()


def test_a_wandb_run_read_through_the_public_api():
    api = FakeApi()
    run = load_wandb_api("me/proj/runs/abc123", api=api)
    assert api.asked == ["me/proj/abc123"]
    assert run.name == "grpo_base-Qwen2-VL-2B-seed42" and run.source == "wandb:me/proj/runs/abc123"
    assert run.series["reward"] == [(1.0, 0.5), (2.0, 0.75)] and run.series["kl"][-1] == (2.0, 0.1)
    with pytest.raises(CompareError, match=r"(?s)cannot read W&B run me/proj/nope.*wandb login"):
        load_wandb_api("me/proj/nope", api=api)
    with pytest.raises(CompareError, match="neither a local offline run folder nor"):
        compare.load_wandb("not-a-path-or-run")


def _wandb_file(path: Path, records: list[bytes]) -> None:
    """A .wandb file framed like W&B's writer does (32 KiB blocks, records chunked across them)."""
    block, out = 32 * 1024, bytearray(b":W&B" + struct.pack("<HB", 0xBEE1, 0))
    for record in records:
        first = True
        while True:
            room = block - len(out) % block
            if room < 7:
                out += b"\x00" * room
                continue
            chunk, record = record[: room - 7], record[room - 7 :]
            kind = (1 if first else 4) if not record else (2 if first else 3)
            out += struct.pack("<IHB", zlib.crc32(chunk, zlib.crc32(bytes([kind]))), len(chunk), kind) + chunk
            first = False
            if not record:
                break
    path.write_bytes(bytes(out))


def test_the_offline_wandb_reader_reassembles_records_across_blocks(tmp_path):
    from wandb.proto import wandb_internal_pb2 as pb

    run = pb.Record()
    run.run.run_id, run.run.display_name, run.run.run_group = "xyz", "grpo_base-tiny", "suite"
    run.run.tags.extend(["seed:1"])
    rows = []
    for step in (1, 2):
        record = pb.Record()
        for key, value in {"train/global_step": step, "train/reward": step / 4, "train/note": "x" * 40000}.items():
            item = record.history.item.add()
            item.nested_key.append(key)
            item.value_json = json.dumps(value)
        rows.append(record.SerializeToString())
    folder = tmp_path / "wandb" / "offline-run-20260101_000000-xyz"
    folder.mkdir(parents=True)
    _wandb_file(folder / "run-xyz.wandb", [run.SerializeToString(), *rows])

    data = read_wandb_offline(tmp_path)  # a run's output_dir: its newest offline run is read
    assert data["run"] == {"id": "xyz", "name": "grpo_base-tiny", "project": "", "group": "suite", "tags": ["seed:1"]}
    assert [row["train/reward"] for row in data["history"]] == [0.25, 0.5]
    assert compare.load_wandb(str(folder)).series["reward"] == [(1.0, 0.25), (2.0, 0.5)]

    torn = folder / "run-xyz.wandb"
    torn.write_bytes(torn.read_bytes()[:-100])  # a run killed mid-write: the complete records still read
    assert len(read_wandb_offline(torn)["history"]) == 1
    with pytest.raises(CompareError, match="no W&B run file"):
        read_wandb_offline(tmp_path / "wandb" / "nothing-here")
