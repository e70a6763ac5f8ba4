"""One environment: requirements.txt is what is installed, the GPU extras add to it without changing a pin, and no
pinned package needs a newer Python than the floor the project states.

The GPU check asks the package registry (pip's resolver, dry run: nothing is installed); where the registry cannot
be reached it is skipped, saying so.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO_ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = REPO_ROOT / "requirements.txt"
GPU_REQUIREMENTS = REPO_ROOT / "requirements-gpu.txt"
# Built from source against the installed torch (no wheel on the registry): pip cannot resolve them in a dry run
# without compiling, and they ask only for torch (any version) and einops, which requirements-gpu.txt pins itself.
BUILT_FROM_SOURCE = {"flash-attn"}


def requirement_lines(path: Path) -> list[str]:
    """The requirement lines of a requirements file (no comments, options or editable installs)."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("-")]


def pins(path: Path) -> dict[str, str]:
    """name -> pinned version for every `name==version` line."""
    found = {}
    for line in requirement_lines(path):
        requirement = Requirement(line)
        (spec,) = requirement.specifier  # every line of our requirements files is one exact pin
        assert spec.operator == "==", f"{path.name}: {line!r} is not an exact pin"
        found[canonicalize_name(requirement.name)] = spec.version
    return found


def python_floor() -> Version:
    spec = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    match = re.fullmatch(r">=\s*(\d+\.\d+)", spec)
    assert match, f"pyproject.toml's requires-python {spec!r} is not a plain floor (>=X.Y)"
    return Version(match[1])


# --- the Python floor ----------------------------------------------------------------------------------------------


def test_no_pinned_package_requires_a_newer_python_than_the_stated_floor():
    floor = python_floor()
    too_new, missing = [], []
    for name, pinned in pins(REQUIREMENTS).items():
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            missing.append(name)
            continue
        assert dist.version == pinned, f"{name} {dist.version} is installed, requirements.txt pins {pinned}"
        requires = dist.metadata.get("Requires-Python")
        # The floor's first release (3.11.0) must be allowed: a user on any 3.11 can then install the set.
        if requires and not SpecifierSet(requires).contains(f"{floor}.0"):
            too_new.append(f"{name}=={pinned} requires Python {requires}")
    assert not missing, f"not installed: {missing} (pip install -r requirements.txt)"
    assert not too_new, f"the stated floor is Python {floor} (pyproject.toml) but " + "; ".join(too_new)


def test_the_python_floor_is_stated_the_same_everywhere():
    floor = python_floor()
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert pyproject["tool"]["ruff"]["target-version"] == f"py{floor.major}{floor.minor}"
    assert f"Python {floor}+" in (REPO_ROOT / "README.md").read_text()
    assert f"Python {floor}" in REQUIREMENTS.read_text().splitlines()[0]
    assert sys.version_info >= (floor.major, floor.minor)


# --- the GPU extras on top of the installed environment -------------------------------------------------------------


def test_the_gpu_extras_pin_only_packages_requirements_txt_does_not():
    overlap = set(pins(GPU_REQUIREMENTS)) & set(pins(REQUIREMENTS))
    assert not overlap, f"requirements-gpu.txt re-pins {sorted(overlap)}: pin them once, in requirements.txt"
    assert BUILT_FROM_SOURCE <= set(pins(GPU_REQUIREMENTS)), "BUILT_FROM_SOURCE names a package the file lacks"


def _registry_unreachable() -> str | None:
    """Why pip cannot reach the package registry from here, or None when it can (one small query)."""
    probe = subprocess.run(
        [sys.executable, "-m", "pip", "index", "versions", "vllm", "--timeout", "15", "--retries", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if probe.returncode == 0:
        return None
    lines = (probe.stderr or probe.stdout).strip().splitlines()
    return lines[-1] if lines else f"pip index exited {probe.returncode}"


@pytest.mark.slow
def test_the_gpu_extras_resolve_on_the_installed_environment_without_changing_a_pin(tmp_path):
    reason = _registry_unreachable()
    if reason is not None:
        pytest.skip(f"the package registry is not reachable from here, so pip cannot resolve the GPU extras: {reason}")
    wanted = [line for line in requirement_lines(GPU_REQUIREMENTS) if Requirement(line).name not in BUILT_FROM_SOURCE]
    extras = tmp_path / "gpu-extras.txt"
    extras.write_text("\n".join(wanted) + "\n")
    report = tmp_path / "report.json"
    # No --ignore-installed: pip resolves against what is installed, and lists what it would install or replace.
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--report", str(report), "-r", str(extras)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert result.returncode == 0, f"pip cannot resolve requirements-gpu.txt here:\n{result.stderr[-3000:]}"
    would_install = {
        canonicalize_name(item["metadata"]["name"]): item["metadata"]["version"]
        for item in json.loads(report.read_text())["install"]
    }
    pinned = pins(REQUIREMENTS)
    changed = {name: f"{pinned[name]} -> {version}" for name, version in would_install.items() if name in pinned}
    assert not changed, f"installing requirements-gpu.txt would change pins of requirements.txt: {changed}"
    for line in wanted:  # and the environment ends with exactly the versions the file pins
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert requirement.specifier.contains(would_install.get(name) or distribution(name).version), line
