"""`mmr1 pipeline`: the multi-stage R1 recipe (the logic: `mmr1.pipeline`)."""

from __future__ import annotations

from pathlib import Path

from mmr1.cli.common import parser_for


def main(argv: list[str]) -> int:
    """`mmr1 pipeline`:

    mmr1 pipeline --config configs/r1_tiny.yaml [--only STAGE] [--rerun STAGE …] [--out-dir D]
    """
    parser = parser_for(main, "pipeline")
    parser.add_argument("--config", type=Path, required=True, help="a recipe YAML, e.g. configs/r1_tiny.yaml")
    parser.add_argument("--only", help="run this stage alone (its inputs must exist)")
    parser.add_argument("--rerun", nargs="+", default=(), help="redo these stages even if done")
    parser.add_argument("--out-dir", type=Path, help="override the recipe's out_dir")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    from mmr1.pipeline import Pipeline, Recipe

    recipe = Recipe.from_file(args.config)
    if args.out_dir is not None:
        recipe.out_dir = args.out_dir
    Pipeline(recipe, progress=not args.no_progress).run(args.only, tuple(args.rerun))
    return 0
