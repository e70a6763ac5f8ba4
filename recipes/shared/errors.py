"""The one error type of the recipes: a problem the user can fix, reported as its message (exit 2), not a traceback."""


class RecipeError(RuntimeError):
    """A problem the user can fix; the recipes print its message instead of a stack trace."""
