#!/usr/bin/env bash
# The GPU rows of bench/RESULTS.md (issue 12), as one call on a lent GPU machine: the CUDA-path check
# (bench/cuda_check.py: bf16, fp32, bf16 + torch.compile), the benchmark row of bench/configs/gpu-wide.toml and,
# if the call's time allows, the default (fast64x2) on the same GPU.
# The data travels packed (bench/pack_data.py: pbc-dev at 128 px, JPEG 90, the benchmark's split re-keyed):
#   python bench/pack_data.py ../shared/data/pbc-dev .gpu/pbc128 --split runs/bench-quality/split.json
#   (device) bash bench/gpu_rows.sh     # carry .gpu; OUT: the reports; GPU_MINUTES: the rows' GAN budget;
#                                       # LIMIT: the call's seconds (the default row only starts with time left)
set -uo pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-runs/gpu-out}; MIN=${GPU_MINUTES:-4.5}; LIMIT=${LIMIT:-585}; mkdir -p "$OUT" runs/gpu
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc; uptime
  python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"; } \
  > "$OUT/machine.txt" 2>&1
timeout 170 python3 bench/cuda_check.py --data .gpu/pbc128 --out "$OUT/cuda_check.json" --steps 40 > "$OUT/row.log" 2>&1
python3 -c "import json,sys; v=json.load(open('$OUT/cuda_check.json'))['variants']; sys.exit(0 if v.get('bf16',{}).get('ok') else 1)" \
  || { echo "bf16 training path failed: no row"; tail -40 "$OUT/row.log"; exit 1; }
cp .gpu/pbc128-split.json runs/gpu/split.json
row() {  # LABEL METHOD MINUTES
  timeout $((LIMIT - SECONDS)) python3 bench/bench_quality.py --method "$2" --minutes "$3" --data .gpu/pbc128 \
    --out runs/gpu --label "$1" --threads 8 --table "$OUT/table.md" >> "$OUT/row.log" 2>&1
  local rc=$?
  cp "runs/gpu/$1/results.json" "$OUT/results-$1.json" 2>/dev/null; cp "bench/quality_$1.png" "$OUT/" 2>/dev/null
  echo "$1: rc $rc at ${SECONDS}s" | tee -a "$OUT/machine.txt"
}
row gpu-wide-h200 bench/configs/gpu-wide.toml "$MIN"
if (( LIMIT - SECONDS > 200 )); then row fast64x2-h200 fast64x2 3; fi
uptime >> "$OUT/machine.txt"; tail -30 "$OUT/row.log"
