"""Entry point: `python -m recipes.mini_r1` runs `recipes.mini.r1` (see its docstring)."""

from recipes.mini.r1 import main

if __name__ == "__main__":
    raise SystemExit(main())
