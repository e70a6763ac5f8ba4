"""What you run, and what it is made of.

This folder's top level holds only what a user runs, with its YAMLs in ``configs/{paper,tiny,mini,eval}/``:

==================  =================================================================================================
grpo_base.py        GRPO on the base model (the paper's main experiment)
grpo_instruct.py    GRPO on the instruct model (the paper's instruct experiments)
sft_baseline.py     SFT on the same records (the paper's SFT comparison)
eval_cvbench.py     CV-Bench evaluation of a run or a model
eval_curve.py       CV-Bench along training (the accuracy curve)
compare.py          ``python -m recipes.compare``: the comparison report (code in ``report/``)
mini_r1.py          ``python -m recipes.mini_r1``: mini R1-Zero on a CPU (code in ``mini/``)
mini_ablations.py   ``python -m recipes.mini_ablations``: the paper's ablations in miniature (code in ``mini/``)
==================  =================================================================================================

Below it, one package per concern: ``shared/`` (what the recipes share: options, command line, model and data
loading, prompts, run folders and provenance, reporting, upstream workarounds), ``evaluation/`` (the CV-Bench
pipeline and the curve), ``report/`` (the comparison report), ``mini/`` (the mini experiments and their write-ups).
"""
