"""Entry point: `python -m recipes.mini_ablations` runs `recipes.mini.ablations` (see its docstring)."""

from recipes.mini.ablations import main

if __name__ == "__main__":
    raise SystemExit(main())
