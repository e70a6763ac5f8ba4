"""Shared, session-scoped fixtures: the tiny models and synthetic data are built once per test run.

Everything here is offline: the HF offline switches are set before any Hugging Face library is imported.
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# W&B stages offline table images under the user's home until `wandb sync`; keep the tests' copies out of it.
os.environ.setdefault("WANDB_DATA_DIR", tempfile.mkdtemp(prefix="wandb-data-"))

import pytest  # noqa: E402
from fixtures import properties  # noqa: E402


def pytest_configure(config):
    """The quick loop (`-m "not slow"`) draws fewer examples per property test; the whole suite draws them all."""
    properties.quick = "not slow" in (config.getoption("markexpr") or "")


def pytest_collection_modifyitems(items):
    """Files with end-to-end (slow) tests first, each file in its own order: pytest-xdist hands out whole files
    (``--dist loadfile``) in this order, so the long ones start at once and short ones fill in at the end."""
    heavy = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in heavy)


@pytest.fixture(scope="session")
def tiny_base_dir(tmp_path_factory):
    """A tiny random Qwen2-VL with no chat template (the base-model stand-in)."""
    from data_prep.fixtures.tiny_model import build_tiny_model

    out = tmp_path_factory.mktemp("models") / "tiny-base"
    build_tiny_model(out, variant="base", seed=0)
    return out


@pytest.fixture(scope="session")
def tiny_instruct_dir(tmp_path_factory):
    """A tiny random Qwen2-VL with a Qwen2-VL-style chat template (the instruct stand-in)."""
    from data_prep.fixtures.tiny_model import build_tiny_model

    out = tmp_path_factory.mktemp("models") / "tiny-instruct"
    build_tiny_model(out, variant="instruct", seed=0)
    return out


@pytest.fixture(scope="session")
def sat_parquet(tmp_path_factory):
    """64 synthetic rows in SAT's exact schema (single- and two-image rows)."""
    from data_prep.fixtures.synthetic import write_synthetic

    out = tmp_path_factory.mktemp("data") / "sat.parquet"
    write_synthetic("sat", rows=64, seed=0, output=out)
    return out


@pytest.fixture(scope="session")
def cvbench_parquet(tmp_path_factory):
    """48 synthetic rows in CV-Bench's exact schema."""
    from data_prep.fixtures.synthetic import write_synthetic

    out = tmp_path_factory.mktemp("data") / "cvbench.parquet"
    write_synthetic("cvbench", rows=48, seed=0, output=out)
    return out


@pytest.fixture(scope="session")
def sat_records_dir(sat_parquet, tmp_path_factory):
    """The synthetic SAT rows converted by `data_prep.sat` (single-image rows only, as in the paper)."""
    from data_prep.sat import convert

    out = tmp_path_factory.mktemp("records") / "sat"
    convert(str(sat_parquet), out, seed=0, multi_image="skip")
    return out
