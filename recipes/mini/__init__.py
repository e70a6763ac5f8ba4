"""The mini experiments: the paper's recipe on a CPU, in minutes, with the real TRL trainers.

Run them with ``bash launch/mini_r1.sh`` and ``bash launch/mini_ablations.sh``.

================  =====================================================================================================
module            what it holds
================  =====================================================================================================
r1                mini R1-Zero (stage A, then GRPO raises held-out accuracy; ``MINI_R1.md``): its inputs, stages, CLI
r1_result         its result: ``result.json``, ``curve.png``, the PASS/FAIL summary line
ablations         the paper's ablations over seeds (``MINI_ABLATIONS.md``): the suite's stages, run, CLI
ablation_arms     what defines a suite: its arms (recipe, config) and `Settings`
ood               an arm's out-of-distribution scoring at every saved step
ablation_summary  the suite's ``summary.json``, comparison report, figure and Markdown table
runs              stages keyed by what defines them, through `recipes.shared.provenance`
================  =====================================================================================================
"""
