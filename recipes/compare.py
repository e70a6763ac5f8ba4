"""Entry point: `python -m recipes.compare` runs `recipes.report.compare` (see its docstring)."""

from recipes.report.compare import main

if __name__ == "__main__":
    raise SystemExit(main())
