"""The aha task's inputs: the random mini model and every record set of one seed (issue #26, recipes/mini/AHA.md).

    python -m recipes.mini.aha prepare --out outputs/mini_aha/seed0 --seed 0

writes ``OUT/init`` (`data_prep.fixtures.tiny_model`, preset ``mini``) and, under ``OUT/data``: ``stage_a``
(descriptions, direct answers and describe-then-answer text, `data_prep.fixtures.aha_scenes.stage_a_records`),
``instruct`` (direct answers only: what makes the instruct-style model), ``count`` (the arms' training records) and
``heldout`` (another seed). The stages then run through the unmodified recipes with the configs
``recipes/configs/mini/*_aha*.yaml`` (commands in AHA.md), and ``python -m recipes.mini.aha_probe`` checks the premise.
An existing ``OUT`` is refused: nothing is overwritten.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from data_prep.fixtures import aha_scenes
from recipes.shared.errors import RecipeError

logger = logging.getLogger(__name__)

HELDOUT_SEED_OFFSET = 1000


def prepare(
    out: Path,
    seed: int,
    stage_a_rows: int,
    reasoning_share: float,
    describe_share: float,
    count_rows: int,
    instruct_rows: int,
    heldout_rows: int,
) -> None:
    from data_prep.fixtures.tiny_model import build_tiny_model

    if out.exists():
        raise RecipeError(f"{out} exists: choose another --out (nothing there is overwritten)")
    if not (0.0 <= reasoning_share <= 1.0 and 0.0 <= describe_share < 1.0):
        raise RecipeError("--reasoning-share must be in [0, 1] and --describe-share in [0, 1)")
    build_tiny_model(out / "init", variant="base", seed=seed, preset="mini")
    data = out / "data"
    sets = {
        "stage_a": aha_scenes.stage_a_records(seed, stage_a_rows, reasoning_share, describe_share),
        "instruct": aha_scenes.count_records(seed, instruct_rows, "instruct"),
        "count": aha_scenes.count_records(seed, count_rows, "count"),
        "heldout": aha_scenes.count_records(seed + HELDOUT_SEED_OFFSET, heldout_rows, "heldout"),
    }
    for name, records in sets.items():
        aha_scenes.save_records(records, data / name)
        logger.info("%s: %d records", data / name, len(records))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recipes.mini.aha", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    prep = commands.add_parser("prepare", help="the random model and the record sets of one seed")
    prep.add_argument("--out", type=Path, required=True)
    prep.add_argument("--seed", type=int, default=0)
    prep.add_argument("--stage-a-rows", type=int, default=11200, help="stage A records (steps x batch 16)")
    prep.add_argument("--reasoning-share", type=float, default=0.2, help="count questions answered by listing")
    prep.add_argument("--describe-share", type=float, default=0.3, help="share of description records")
    prep.add_argument("--count-rows", type=int, default=600, help="the arms' training records")
    prep.add_argument("--instruct-rows", type=int, default=2400, help="direct answers of the instruct-style model")
    prep.add_argument("--heldout-rows", type=int, default=200)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        prepare(
            args.out,
            args.seed,
            args.stage_a_rows,
            args.reasoning_share,
            args.describe_share,
            args.count_rows,
            args.instruct_rows,
            args.heldout_rows,
        )
    except RecipeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
