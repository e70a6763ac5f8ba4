"""The hub datasets this project reads, each pinned to one revision, in one place.

A hub dataset's ``main`` branch can change under a run; a commit hash cannot. Every reader takes its revision from
here unless the user overrides it (``python -m data_prep.sat --revision``, the evaluation's ``--dataset_revision``),
and records the revision it used (``prep_report.json``, the evaluation's ``summary.json`` and run fingerprint).

Each pin is a commit of the dataset's repository whose data files are the ones the paper read (read from the hub's
commit pages; not fetched here): for SAT, the newest commit known, which changed only the README after
``SAT_train.parquet`` was added; for CV-Bench, the commit holding the single ``test.parquet`` (2,638 rows) the
paper's evaluation loaded as split ``test`` — later commits split it into ``test_2d``/``test_3d`` files. A value
that is not a 40-hex commit (a branch such as ``main``, given with ``--revision``) is read with a warning that the
data is not pinned.
"""

from __future__ import annotations

import logging
import re

logger = logging.getLogger(__name__)

SAT_DATASET = "array/SAT"
CVBENCH_DATASET = "nyu-visionx/CV-Bench"
SAT_REVISION = "bda5dde942d7f7b41bff7935f086ed9a9e348ae3"
CVBENCH_REVISION = "22409a927ab5cf68e3655023d51694587455fc99"
PINNED = {SAT_DATASET: SAT_REVISION, CVBENCH_DATASET: CVBENCH_REVISION}

COMMIT = re.compile(r"^[0-9a-f]{40}$")
_REVISION = re.compile(r"^[\w./-]+$")


def check_revision(revision: str) -> str:
    """A hub revision as given (a branch, tag or commit hash); a blank or spaced value is refused.

    Example:
        >>> check_revision("4bc3e3eb7b2b4d7e2e1d9c7f0a6d5e4c3b2a1908")
        '4bc3e3eb7b2b4d7e2e1d9c7f0a6d5e4c3b2a1908'
    """
    if not isinstance(revision, str) or not _REVISION.match(revision):
        raise ValueError(f"dataset revision {revision!r} is not a branch, tag or commit hash (e.g. a 40-hex commit)")
    return revision


def revision_for(name: str, revision: str | None = None) -> str | None:
    """The revision to read hub dataset ``name`` at: ``revision`` when given, else its pin (None: not pinned here).

    Logs a warning when the result is not a commit hash (a branch or tag can move).
    """
    chosen = PINNED.get(name) if revision is None else check_revision(revision)
    if chosen is not None and not COMMIT.match(chosen):
        logger.warning(
            "dataset %s is read at revision %r, not a commit hash: the hub may change it between runs "
            "(pin a commit in data_prep/sources.py or pass one)",
            name,
            chosen,
        )
    return chosen
