"""What the recipes share: every entry script in ``recipes/`` is a thin `main` over these modules and TRL.

============  =======================================================================================================
module        what it holds
============  =======================================================================================================
args          `RecipeArguments`: every option of ours beside TRL's (data, template, rewards, reporting, snapshots)
cli           the command line: YAML + flags, contradiction checks, one-line errors (`run_cli`)
errors        `RecipeError` (printed as ``error: ...``, exit 2)
prepare       what every `main` does before and around the trainer: checks, processor, prompts, callbacks
models        model, processor and LoRA loading; pixel bounds
data          records → prompts (reading prepared records, the template, the completion end)
prompts       every prompt and template, exactly as the paper's model saw them
batch         the global batch (derived from ``prompts_per_step``) and the fp32 master-weights guard
sft_loss      the paper's SFT loss through TRL's own
run_folder    what a run owns in its output folder; claim, train and save (`check_run`, `claim`, `train_and_save`)
runs          checkpoints (complete, sound), the model folder, data-size checks
resolved      the resolved configuration (``resolved_config.yaml``): written, copied into checkpoints, compared
provenance    the one record of what made an output (``provenance.json``): inspect, record, delete what we own
preflight     checks before the model loads (W&B, Hub, data, disk) and the disk estimate
cards         the model card (``README.md``) of a run folder, from its own files; replaces TRL's generic card
hub           pushing a finished run folder (what is uploaded, what never is); records from a Hub dataset id
snapshots     half-precision model snapshots along training (``models/step-<N>``)
callbacks     reporting (W&B, console, trajectories, ZeRO partition log)
heldout       held-out accuracy along training
compat        upstream workarounds, each version-gated and citing its upstream issue
stages        a launcher's stages: side by side, logs per stage, Python stages sharing one import (quickstart)
============  =======================================================================================================
"""
