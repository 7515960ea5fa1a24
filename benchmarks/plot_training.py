"""Time-to-accuracy plot of a training run, from its metrics.csv (validation AbsRel and δ1 vs wall-clock minutes).

Usage: python benchmarks/plot_training.py RUN_DIR [-o docs/release_training.png]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from defocus.eval.visualize import plot_curve


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("-o", "--output", type=Path, default=Path("docs/release_training.png"))
    args = ap.parse_args()
    rows = list(csv.DictReader((args.run_dir / "metrics.csv").open()))
    minutes = [float(r["seconds"]) / 60 for r in rows]
    series = {
        "validation AbsRel": [float(r["val_abs_rel"]) for r in rows],
        "validation delta1": [float(r["val_delta1"]) for r in rows],
    }
    plot_curve(minutes, series, "training time (minutes, 2-core CPU)", "metric",
               f"time to accuracy: {args.run_dir.name}", args.output)
    print(f"written {args.output}")


if __name__ == "__main__":
    main()
