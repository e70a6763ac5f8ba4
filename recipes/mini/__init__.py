"""The mini experiments: the paper's recipe on a CPU, in minutes, with the real TRL trainers.

`r1` (mini R1-Zero: stage A, then GRPO raises held-out accuracy; ``MINI_R1.md``), `ablations` (the paper's ablations
over seeds; ``MINI_ABLATIONS.md``) and `runs` (stages keyed by what defines them, through `recipes.shared.provenance`).
Run them with ``bash launch/mini_r1.sh`` and ``bash launch/mini_ablations.sh``.
"""
