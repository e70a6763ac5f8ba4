"""The comparison report (``python -m recipes.compare``): runs side by side, curves, seeds grouped.

`compare` reads run folders and writes the report; `checks` decides which results count (a CV-Bench summary only
when it scored the run's final weights on the whole dataset; seeds grouped only when their configurations agree).
"""
