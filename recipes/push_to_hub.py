"""Push a finished run folder to the Hugging Face Hub: its model, processor, model card and evaluation results.

    python -m recipes.push_to_hub outputs/paper/grpo_base --repo_id ORG/visualthinker-grpo-base
    python -m recipes.push_to_hub outputs/paper/grpo_base --repo_id ORG/NAME --dry_run true   # list the files only

The card (``README.md``) is rendered again first, so a CV-Bench evaluation or curve added since training appears on
it. What is uploaded, and what never is: `recipes.shared.hub`. The folder must hold a finished recipe run that
trained at least one step; offline, without a token or with an invalid id it is refused before anything is read.
"""

from __future__ import annotations

import argparse
import logging
import sys

from recipes.shared.cards import write_card
from recipes.shared.errors import RecipeError
from recipes.shared.hub import PushRequest, check_push, check_pushable, evaluation_counts, push_run, upload_files


def _bool(value: str) -> bool:
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m recipes.push_to_hub", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="the output_dir of a finished recipe run")
    parser.add_argument("--repo_id", required=True, help="Hub model repository: NAME or ORG/NAME (created if absent)")
    parser.add_argument("--revision", default=None, help="branch to push to (created if absent); default: main")
    parser.add_argument("--private", type=_bool, default=None, help="create the repository private (true/false)")
    parser.add_argument("--token", default=None, help="Hub token; default: HF_TOKEN or `huggingface-cli login`")
    parser.add_argument(
        "--include_checkpoints", type=_bool, default=False, help="also the checkpoints' model files (true/false)"
    )
    parser.add_argument(
        "--include_optimizer_states",
        type=_bool,
        default=False,
        help="with --include_checkpoints: the checkpoints whole, optimizer and scheduler states included",
    )
    parser.add_argument(
        "--dry_run", type=_bool, default=False, help="render the card and print the files, upload nothing"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.include_optimizer_states and not args.include_checkpoints:
            raise RecipeError("--include_optimizer_states needs --include_checkpoints true")
        request = PushRequest(args.repo_id, args.token, args.private, args.revision)
        if args.dry_run:
            check_pushable(args.run_dir)
            write_card(args.run_dir, args.repo_id)
            counts = evaluation_counts(args.run_dir)
            for name in upload_files(args.run_dir, args.include_checkpoints, args.include_optimizer_states, counts):
                print(name)
            return 0
        check_push(request.repo_id, request.token, "push_to_hub", "give --repo_id NAME or ORG/NAME")
        url = push_run(args.run_dir, request, args.include_checkpoints, args.include_optimizer_states)
    except RecipeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"pushed {args.run_dir} to {url}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
