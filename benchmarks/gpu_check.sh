#!/usr/bin/env bash
# One prepared GPU session (run on a lent GPU machine from the repository root, with $OUT set): CUDA training smoke,
# torchrun + nccl, prediction on CUDA, training throughput on the GPU. Each step runs even if an earlier one fails;
# logs go to $OUT.
export PYTHONPATH=$PWD/src OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
PY=${PY:-python3}
DEV=${DEV:-cuda}
step() { local name=$1; shift; local t0=$SECONDS; timeout "${T:-150}" "$@" > "$OUT/$name.log" 2>&1; local rc=$?;
         echo "== $name rc=$rc $((SECONDS - t0)) s"; grep -v "^\s*$" "$OUT/$name.log" | grep -v "OMP_NUM_THREADS\|^\*\*\*" | tail -${TAILN:-8}; }
nvidia-smi -L 2>/dev/null
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
if [ "${PART:-all}" = all ]; then
T=300 step cuda_tests $PY -m pytest tests/train/test_cuda.py -p no:cacheprovider -rs
step cuda_train $PY -m defocus train --config tiny out_dir=/tmp/gr name=cuda1 device=$DEV --quiet
step nccl_train $PY -m torch.distributed.run --standalone --nproc_per_node=1 -m defocus train --config tiny \
    out_dir=/tmp/gr name=nccl1 device=$DEV --quiet
fi
step nccl_whole_det $PY -m torch.distributed.run --standalone --nproc_per_node=1 -m defocus train --config tiny \
    out_dir=/tmp/gr name=whole_det device=$DEV save_every_steps=2 deterministic=true --quiet
step nccl_resume_kill env DEFOCUS_FAULT=kill@step=4 $PY -m torch.distributed.run --standalone --nproc_per_node=1 \
    -m defocus train --config tiny out_dir=/tmp/gr name=kill device=$DEV save_every_steps=2 deterministic=true --quiet
step nccl_resume $PY -m torch.distributed.run --standalone --nproc_per_node=1 -m defocus train --config tiny \
    out_dir=/tmp/gr name=kill device=$DEV save_every_steps=2 deterministic=true --quiet --resume
$PY - <<'PYEOF'
from safetensors.torch import load_file
try:
    a, b = load_file("/tmp/gr/whole_det/last.safetensors"), load_file("/tmp/gr/kill/last.safetensors")
    print("resume on CUDA (deterministic): max |w_resumed - w_whole| =", max(float((a[k] - b[k]).abs().max()) for k in a))
    a = load_file("/tmp/gr/nccl1/last.safetensors")
    c = load_file("/tmp/gr/cuda1/last.safetensors")
    print("1-process CUDA vs torchrun nccl: max diff =", max(float((a[k] - c[k]).abs().max()) for k in a))
except Exception as e:
    print("compare failed:", e)
PYEOF
[ "${PART:-all}" = resume ] && exit 0
step render $PY -m defocus render --procedural 3 --preset nyuv2 -o /tmp/gs
step predict_cuda $PY -m defocus predict /tmp/gs -o /tmp/gp --device $DEV
step predict_cuda_refine $PY -m defocus predict /tmp/gs -o /tmp/gp2 --device $DEV --refine-steps 10
T=400 TAILN=12 step throughput $PY benchmarks/bench_train_throughput.py --nproc 1 --device $DEV --batch 8 64 \
    --epochs 3 --steps 20 --scenes 16 --json "$OUT/gpu_throughput.json"
