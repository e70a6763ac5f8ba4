"""GRPO on the instruct model (the paper's ablation): Qwen2-VL-2B-Instruct with the instruct prompt.

    accelerate launch recipes/grpo_instruct.py                               # the paper config
    python recipes/grpo_instruct.py --config recipes/configs/tiny/grpo_instruct.yaml   # offline, CPU

The training code is the base recipe's (`recipes/grpo_base.py`): the experiments differ only in their YAML
(model id, ``prompt_template: instruct``), so there is one GRPO code path to test and to trust.
"""

from recipes.grpo_base import main, make_parser
from recipes.shared.cli import run_cli

DEFAULT_CONFIG = "paper/grpo_instruct.yaml"

__all__ = ["main", "make_parser", "DEFAULT_CONFIG"]

if __name__ == "__main__":
    run_cli(main, make_parser(), None, DEFAULT_CONFIG)
