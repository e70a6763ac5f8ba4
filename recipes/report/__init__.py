"""The comparison report (``python -m recipes.compare``): runs side by side, curves, seeds grouped.

==========  =========================================================================================================
module      what it holds
==========  =========================================================================================================
compare     the command line and `write_report`; its docstring says where every number comes from
runlog      what the report is made of: `RunLog` (one run's metric series), `Arm` (runs over seeds), `Panel`s
read        reading a run folder (log history, CV-Bench summary, resolved configuration) or a W&B run
arms        runs grouped into arms over seeds, two runs of one seed refused; mean/s.d./min–max (`stat`, `aggregate`)
checks      what counts: a CV-Bench summary only when it scored the run's final weights on the whole dataset; seeds
            grouped only when their configurations agree
figure      the curves of every panel (`make_figure`, `plot`)
render      the tables (final values per arm, CV-Bench per task and source) and the self-contained HTML page
==========  =========================================================================================================
"""
