"""`mmr1 plot RUN_DIR`: a run's logged curves as PNGs (the logic: `mmr1.plot`)."""

from __future__ import annotations

from pathlib import Path

from mmr1.cli.common import parser_for


def main(argv: list[str]) -> int:
    """`mmr1 plot`:

    mmr1 plot RUN_DIR [--out FOLDER]      every metrics.csv under RUN_DIR; a resumed run's versions join
    """
    parser = parser_for(main, "plot")
    parser.add_argument("run_dir", type=Path, help="a run folder holding metrics.csv (searched recursively)")
    parser.add_argument("--out", type=Path, help="where the PNGs go; default RUN_DIR/plots")
    args = parser.parse_args(argv)
    from mmr1.plot import plot_run

    for path in plot_run(args.run_dir, args.out):
        print(path)
    return 0
