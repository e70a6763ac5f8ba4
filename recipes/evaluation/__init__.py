"""The CV-Bench evaluation behind ``recipes/eval_cvbench.py``, one concern per module.

==============  =====================================================================================================
module          what it holds
==============  =====================================================================================================
config          `EvalArguments` (every option; the paper's preset is ``recipes/configs/eval/paper.yaml``), checks
data            loading CV-Bench (hub, parquet, folder), decoding one row's image, the dataset's content fingerprint
fingerprint     the model's local files and their content hash; the run key predictions are resumed under
output          the output folder: run key, append-only predictions per process, merge, summaries (atomic writes)
generation      the processor and its pixel bounds, the transformers and vLLM backends, the loop over rows
summary         the paper's plain mean, CV-Bench's official score, breakdowns, summary.json / summary.md
curve           CV-Bench along training (``recipes/eval_curve.py``): each snapshot's summary, curve.json, W&B points
==============  =====================================================================================================

The scorer itself (`score_response`, the paper's verdict, the strict companion) lives with the rewards it shares
its answer extraction and math-verify calls with: `rewards.cvbench`.
"""
