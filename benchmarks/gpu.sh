#!/usr/bin/env bash
# GPU figures for pathfuse in one short run (≤ 4 minutes on one H100): bf16 GEMM peak, ViT-L/16 and
# ViT-g/14 model-only tiles/s and MFU, end-to-end tiles/s from a generated 40x slide (OpenSlide /
# JPEG-native reader with CPU decode / nvJPEG), ABMIL training bags/s, head bank vs loop. What is measured and how:
# benchmarks/gpu_bench.py. Runs pathfuse from src/ (no install needed; the GPU image has no
# OpenSlide, imagecodecs or pandas, and the script needs none of them).
#
#   bash benchmarks/gpu.sh                 # → benchmarks/results/gpu.json
#   bash benchmarks/gpu.sh --out "$OUT/gpu.json"
#   bash benchmarks/gpu.sh --dry           # CPU, tiny sizes, seconds (the test suite runs this)
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
dry=()
out=benchmarks/results/gpu.json
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry) dry=(--dry); out="${TMPDIR:-/tmp}/pathfuse_gpu_dry.json"; shift ;;
    --out) out="$2"; shift 2 ;;
    *) echo "usage: bash benchmarks/gpu.sh [--dry] [--out FILE]" >&2; exit 2 ;;
  esac
done
exec "${PYTHON:-python3}" benchmarks/gpu_bench.py "${dry[@]}" --out "$out"
