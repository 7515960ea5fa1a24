"""Time-to-accuracy plot of a training run, from its metrics.csv (validation AbsRel and δ1 vs wall-clock minutes).

Needs the ``plot`` extra (matplotlib): ``pip install -e ".[plot]"``.

Usage: python benchmarks/plot_training.py RUN_DIR [-o docs/release_training.png] [--seconds-per-step S]

``--seconds-per-step`` puts the time axis at steps × S instead of the recorded wall time (for a run whose wall time
is not representative, e.g. one that shared its CPU with other work for a while).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("-o", "--output", type=Path, default=Path("docs/release_training.png"))
    ap.add_argument("--seconds-per-step", type=float, default=0.0)
    args = ap.parse_args()
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit('this script needs matplotlib: pip install -e ".[plot]"') from None
    rows = list(csv.DictReader((args.run_dir / "metrics.csv").open()))
    if args.seconds_per_step > 0:
        minutes = [int(r["step"]) * args.seconds_per_step / 60 for r in rows]
    else:
        minutes = [float(r["seconds"]) / 60 for r in rows]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    ax.plot(minutes, [float(r["val_abs_rel"]) for r in rows], marker="o", ms=3, label="validation AbsRel")
    ax.plot(minutes, [float(r["val_delta1"]) for r in rows], marker="o", ms=3, label="validation δ1")
    ax.set_xlabel("training time (minutes, 2-core CPU)")
    ax.set_ylabel("metric")
    ax.set_title(f"time to accuracy: {args.run_dir.name}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output)
    print(f"written {args.output}")


if __name__ == "__main__":
    main()
