#!/usr/bin/env bash
# Hashes of every output of demo, render, evaluate (with and without refinement), predict and a tiny training run,
# for checking that a change that should not change behaviour does not. Usage (from the repository root):
#   bash benchmarks/output_hashes.sh OUTDIR [CONFIG]      then: diff <(sort -k2 A/HASHES) <(sort -k2 B/HASHES)
# Needs ../shared/data/rgbd (the real RGB-D frames).
set -euo pipefail
OUT=$1; TINY=${2:-tiny}
D=.venv/bin/defocus
if [ -e "$OUT" ] && [ ! -f "$OUT/HASHES" ]; then echo "refusing to replace $OUT: not an earlier output of this script" >&2; exit 2; fi
rm -rf "$OUT"; mkdir -p "$OUT"
export OMP_NUM_THREADS=2
$D demo -o "$OUT/demo" > "$OUT/demo.txt" 2>&1
$D demo -o "$OUT/demo_ref" --refine-steps 2 --stacks-per-group 1 > "$OUT/demo_ref.txt" 2>&1
R="$(cd "$(dirname "$0")/.." && pwd)/../shared/data/rgbd"
for proto in paper realistic; do
  $D render --rgb $R/nyuv2_labeled_0045_hollyjackson/rgb_0045.png --depth $R/nyuv2_labeled_0045_hollyjackson/depth_0045_0.1mm.png --depth-scale 0.0001 --preset nyuv2 --protocol $proto -o "$OUT/stacks_$proto/nyu0045"
  for i in 0 1 2 3 4; do
    $D render --rgb $R/open3d_testdata_rgbd/RGBD/color/0000$i.jpg --depth $R/open3d_testdata_rgbd/RGBD/depth/0000$i.png --depth-scale 0.001 --preset nyuv2 --protocol $proto -o "$OUT/stacks_$proto/ps$i"
  done
  $D evaluate "$OUT"/stacks_$proto/* --json "$OUT/eval_$proto.json" > "$OUT/eval_$proto.txt"
  $D evaluate "$OUT"/stacks_$proto/nyu0045 --refine-steps 3 --json "$OUT/eval_${proto}_refdisk.json" > /dev/null
  $D evaluate "$OUT"/stacks_$proto/nyu0045 --refine-steps 3 --refine-psf gaussian --json "$OUT/eval_${proto}_refgauss.json" > /dev/null
done
$D render --procedural 7 --preset defocusnet -o "$OUT/proc7"
$D render --procedural 8 --preset nyuv2 --protocol realistic --seed 3 -o "$OUT/proc8"
$D predict "$OUT"/stacks_paper/* "$OUT/proc7" -o "$OUT/pred" > "$OUT/pred.txt"
mkdir -p "$OUT/noexif/plain"; cp "$OUT"/stacks_realistic/ps2/focus_*.png "$OUT/noexif/plain/"
$D predict "$OUT/noexif/plain" --focus 1,1.5,2.5,4,6 --focal-length-mm 50 --f-number 8 --pixel-size-um 12 --refine-steps 2 -o "$OUT/pred2" > "$OUT/pred2.txt"
$D train --config "$TINY" out_dir="$OUT/runs" name=tiny --quiet > "$OUT/train.txt" 2>&1
# strip volatile columns (time) from metrics.csv into a copy
python3 - "$OUT" <<'PY'
import csv, sys, pathlib
out = pathlib.Path(sys.argv[1])
rows = list(csv.reader(open(out/"runs/tiny/metrics.csv")))
i = rows[0].index("seconds")
with open(out/"train_metrics_noseconds.csv", "w") as f:
    for r in rows: f.write(",".join(x for j, x in enumerate(r) if j != i) + "\n")
PY
cd "$OUT"
find . -type f ! -name '*.txt' ! -path './runs/*' ! -name 'metrics.csv' | sort | xargs sha256sum > HASHES
