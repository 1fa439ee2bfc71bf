#!/usr/bin/env bash
# CycleGAN on a GPU, paper profile: training steps/s in fp32 and bf16, sliding-window
# inference voxels/s on a 400x400x300 volume, peak GPU memory. Needs only python3
# with torch and numpy (no harmkit install, no SimpleITK).
#
#   benchmarks/cyclegan_gpu.sh                      # on a CUDA machine
#   benchmarks/cyclegan_gpu.sh --device cpu --small # test the script on a CPU (tiny sizes)
#   OUT=results benchmarks/cyclegan_gpu.sh          # also writes results/cyclegan_gpu.json
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=cuda
EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --device=*) DEVICE="${1#*=}"; shift ;;
    --small) EXTRA+=(--small); shift ;;
    --threads) EXTRA+=(--threads "$2"); shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
done
PY="${PYTHON:-$(command -v python3 || command -v python)}"
OUT="${OUT:-.}"
mkdir -p "$OUT"
if [ "$DEVICE" = cuda ] && command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi
"$PY" -c "import torch, numpy; print('torch', torch.__version__, 'numpy', numpy.__version__, 'cuda', torch.cuda.is_available())"
"$PY" benchmarks/cyclegan.py --suite gpu --device "$DEVICE" "${EXTRA[@]}" --json "$OUT/cyclegan_gpu.json"
