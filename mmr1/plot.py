"""The curves of a run's metrics.csv files (CSVLogger) as PNGs, headless.

One figure per group: training loss terms, validation metrics, learning rates and the rest.
Every metrics.csv under RUN_DIR is read, so a resumed run's versions join into one curve.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path
from typing import Optional

GROUPS = {"train": "train_", "val": "val_", "lr": "lr"}  # metric prefix ("/" already replaced) -> file name


def read_metrics(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """{metric: [(step, value), ...] sorted by step} from every metrics.csv under run_dir."""
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run folder")
    files = sorted(run_dir.rglob("metrics.csv"))
    if not files:
        raise FileNotFoundError(f"{run_dir}: no metrics.csv (log with lightning.pytorch.loggers.CSVLogger)")
    series: dict[str, dict[int, float]] = defaultdict(dict)
    for path in files:
        for line, row in enumerate(csv.DictReader(path.open()), start=2):
            try:
                for name, value in row.items():
                    if name not in ("step", "epoch") and value:
                        series[name][int(row["step"])] = float(value)
            except (KeyError, TypeError, ValueError) as e:
                raise ValueError(f"{path}:{line}: expected CSVLogger rows with a step column and numbers ({e})") from e
    return {name: sorted(points.items()) for name, points in series.items()}


def group_of(metric: str) -> str:
    name = metric.replace("/", "_")
    return next((group for group, prefix in GROUPS.items() if name.startswith(prefix)), "other")


def plot_run(run_dir: Path, out_dir: Optional[Path] = None) -> list[Path]:
    """Write <out_dir>/<group>.png for each group that has metrics; returns the files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = read_metrics(run_dir)  # before creating anything: a wrong folder is left as it was
    out_dir = out_dir or run_dir / "plots"
    out_dir.mkdir(parents=True, exist_ok=True)
    groups: dict[str, dict[str, list]] = defaultdict(dict)
    for metric, points in series.items():
        groups[group_of(metric)][metric] = points
    written = []
    for group, metrics in sorted(groups.items()):
        fig, ax = plt.subplots(figsize=(7, 4))
        for metric, points in sorted(metrics.items()):
            steps, values = zip(*points)
            ax.plot(steps, values, marker="." if len(points) < 20 else None, label=metric)
        ax.set(xlabel="step", title=f"{run_dir.name}: {group}")
        ax.legend(fontsize="small")
        fig.tight_layout()
        written.append(out_dir / f"{group}.png")
        fig.savefig(written[-1], dpi=100)
        plt.close(fig)
    return written
