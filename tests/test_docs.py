"""Docs that cannot drift: every repository path and every `module:name` the markdown and docstrings name exists."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import itertools
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("recipes", "rewards", "data_prep")
TOP = ("recipes", "rewards", "data_prep", "launch", "tests", "benchmarks")
# `recipes/shared/runs.py`, `launch/lib.sh`, `recipes/configs/paper/{grpo_base,grpo_instruct}_vllm.yaml`,
# `data_prep/files.py:write_atomic`; a path with a placeholder (<name>, a|b) stands for many and is not checked.
PATH = re.compile(r"(?<![\w/.-])((?:" + "|".join(TOP) + r")/[\w./{},*-]*[\w}*])(?::(\w+))?")
# `recipes.report.compare`, `python -m data_prep.sat`, `recipes.evaluation.fingerprint:run_key`
METRIC_ENDINGS = ("/", "/mean", "/std", "/min", "/max")  # W&B keys such as rewards/accuracy_reward/mean are no paths
DOTTED = re.compile(r"(?<![\w/.-])((?:" + "|".join(PACKAGES) + r")(?:\.\w+)+)(?::(\w+))?")


def docs() -> list[Path]:
    """The markdown of the repository and its Python sources (for their docstrings and comments)."""
    found = [ROOT / "README.md", *ROOT.glob("*/*.md"), *ROOT.glob("recipes/**/*.md")]
    for package in (*PACKAGES, "benchmarks", "launch"):
        found += [p for p in (ROOT / package).rglob("*") if p.suffix in (".py", ".sh", ".yaml")]
    return sorted(set(found))


def prose(path: Path) -> str:
    """What a reader reads: a markdown file whole, a Python file's docstrings and comments, a script's comments."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".md":
        return text
    if path.suffix != ".py":
        return "\n".join(line for line in text.splitlines() if line.lstrip().startswith("#"))
    parts = [line.split("#", 1)[1] for line in text.splitlines() if "#" in line and not line.lstrip().startswith("'")]
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            parts.append(ast.get_docstring(node) or "")
    return "\n".join(parts)


def expand(pattern: str) -> list[str]:
    """Brace alternatives spelled out: ``a/{b,c}.py`` -> ``a/b.py``, ``a/c.py``."""
    pieces = re.split(r"\{([^{}]*)\}", pattern)
    options = [[p] if i % 2 == 0 else p.split(",") for i, p in enumerate(pieces)]
    return ["".join(choice) for choice in itertools.product(*options)]


def has_name(path: Path, name: str) -> bool:
    """``name`` is defined (not merely imported) at the top level of a Python file, or is a shell script's function."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".sh":
        return re.search(rf"^{re.escape(name)}\(\)", text, re.M) is not None
    tree = ast.parse(text)
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef) and node.name == name:
            return True
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            return True
    return False


def path_problem(ref: str, name: str | None) -> str | None:
    for candidate in expand(ref):
        matches = sorted(ROOT.glob(candidate)) if "*" in candidate else [ROOT / candidate]
        if not any(m.exists() for m in matches):
            return f"{candidate} does not exist"
        if name and matches[0].is_file() and matches[0].suffix in (".py", ".sh") and not has_name(matches[0], name):
            return f"{candidate} defines no {name}"
    return None


def dotted_problem(ref: str, name: str | None) -> str | None:
    parts = ref.split(".")
    for cut in range(len(parts), 0, -1):
        module = ".".join(parts[:cut])
        try:
            if importlib.util.find_spec(module) is None:
                continue
        except ModuleNotFoundError:  # a dotted name below a module, not a package: look shorter
            continue
        obj = importlib.import_module(module)
        for attr in [*parts[cut:], *([name] if name else [])]:
            if not hasattr(obj, attr):
                return f"{module} has no {'.'.join(parts[cut:] + ([name] if name else []))}"
            obj = getattr(obj, attr)
        return None
    return f"no module {ref}"


def references() -> list[tuple[str, str, str, str]]:
    found = []
    for path in docs():
        text = prose(path)
        for match in PATH.finditer(text):
            ref = match.group(1).rstrip(".").split("#")[0]
            if re.search(r"[<>|$]", text[match.start() : match.end() + 1]) or ref.endswith(METRIC_ENDINGS):
                continue
            found.append(("path", ref, match.group(2) or "", str(path.relative_to(ROOT))))
        for match in DOTTED.finditer(text):
            ref = match.group(1).rstrip(".")
            if ref.endswith((".py", ".md", ".yaml", ".sh", ".json", ".jsonl", ".txt")):
                continue
            found.append(("dotted", ref, match.group(2) or "", str(path.relative_to(ROOT))))
    return sorted(set(found))


def test_the_docs_name_things_that_exist():
    problems = []
    for kind, ref, name, where in references():
        problem = path_problem(ref, name) if kind == "path" else dotted_problem(ref, name)
        if problem:
            problems.append(f"{where}: `{ref}{':' + name if name else ''}`: {problem}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("ref", "name", "ok"),
    [
        ("recipes/shared/provenance.py", "delete_owned", True),
        ("recipes/shared/provenance.py", "no_such_function", False),
        ("recipes/configs/paper/{grpo_base,grpo_instruct}.yaml", None, True),
        ("recipes/configs/paper/{grpo_base,nothing}.yaml", None, False),
        ("launch/lib.sh", "die", True),
    ],
)
def test_the_path_check_can_fail(ref, name, ok):
    assert (path_problem(ref, name) is None) is ok


def test_the_module_check_can_fail():
    assert dotted_problem("recipes.shared.provenance", "delete_owned") is None
    assert dotted_problem("recipes.shared.provenance", "nothing") is not None
    assert dotted_problem("recipes.nothing_here", None) is not None
