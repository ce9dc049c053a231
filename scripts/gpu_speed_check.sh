#!/usr/bin/env bash
# Speed benchmark on a CUDA machine with the random-weight Qwen2-Audio-7B shape: no weights to download,
# no faiss, librosa or soundfile needed (torch, transformers, typer, rich, numpy, pyarrow are).
#
# Usage, from the repository root:   scripts/gpu_speed_check.sh [OUT_DIR]
# OUT_DIR defaults to $OUT, else ./gpu-speed. It receives env.txt (GPU, driver, versions), speed.json (the
# full report), speed.log (the printed tables) and, if something failed, the error in speed.log.
#
# 4-bit NF4 beside bf16: when bitsandbytes is importable, or its wheel lies in wheels/ (a 43 MB
# `pip download bitsandbytes==0.50.2 --no-deps -d wheels/`, carried to a machine without it), the paper-prefix
# run is repeated with --quantize 4bit into speed-4bit.json / speed-4bit.log. The shape model is then saved
# to a temporary checkpoint (~17 GB under $TMPDIR) and loaded back quantized, as real weights would be.
#
# What it measures (see docs/benchmarks.md): 10 s clips behind the paper-size demo prefix (35 audio x 5 s +
# 65 text demos, ~7.9k tokens) and without demos, 30 s clips without demos (30 s clips do not fit behind the
# paper prefix in 8,192 positions and are reported as skipped there), the naive loop in the same run, the
# ratio, the fraction of the chip's bf16 peak, text-query latency, and top-10 search over 1M fp16 vectors.
#
# VELA_GPU_CHECK=quick (for a few minutes of device time): the paper-size prefix and 10 s clips only, fewer
# clips (96) and queries (32), no 1M-vector search; the 4-bit run likewise.
#
# A dry run of the script itself on a CPU: VELA_BENCH_MODEL=shape:mini VELA_BENCH_DEVICE=cpu
# VELA_BENCH_DTYPE=fp32 scripts/gpu_speed_check.sh /tmp/dry-run
set -euo pipefail
model="${VELA_BENCH_MODEL:-shape:qwen2-audio-7b}"
device="${VELA_BENCH_DEVICE:-cuda}"
dtype="${VELA_BENCH_DTYPE:-bf16}"
quick=$([ "${VELA_GPU_CHECK:-full}" = quick ] && echo 1 || true)

out="${1:-${OUT:-gpu-speed}}"
mkdir -p "$out"
# The tiny checkpoint (tokenizer and processor for the shape model) is built here once, offline.
export VELA_CACHE_DIR="${VELA_CACHE_DIR:-${TMPDIR:-/tmp}/vela-cache}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 || true
  python - <<'PY'
import importlib.util, platform, torch, transformers
print(f"python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
      f"transformers {transformers.__version__}")
print("absent:", [m for m in ("faiss", "librosa", "soundfile", "bitsandbytes") if importlib.util.find_spec(m) is None])
print("device:", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device")
PY
} > "$out/env.txt" 2>&1
cat "$out/env.txt"

if [ -n "$quick" ]; then
  args=(
    speed --model "$model" --device "$device" --dtype "$dtype" --demos paper --clip-seconds 10
    --clips 96 --naive-clips 2 --queries 32 --naive-queries 2 --search-vectors 0 --json "$out/speed.json"
  )
  nf4_sizes=(--clips 64 --queries 32)
else
  args=(
    speed --model "$model" --device "$device" --dtype "$dtype"
    --demos paper --demos none --clip-seconds 10 --clip-seconds 30
    --clips 256 --naive-clips 4 --queries 64 --naive-queries 3
    --search-vectors 1000000 --json "$out/speed.json"
  )
  nf4_sizes=(--clips 128 --queries 64)
fi
# The full CLI imports every command module; if one of them needs a package this image lacks, run the
# bench sub-app alone instead of losing the measurement.
if python -m vela_search --help > /dev/null 2>&1; then
  bench=(python -m vela_search bench)
else
  echo "note: 'python -m vela_search --help' failed here; running the bench commands directly" | tee "$out/speed.log"
  bench=(python -c 'import sys; from vela_search.cli.bench_cmd import bench_app; from vela_search.cli.common import run_app; sys.exit(run_app(bench_app, sys.argv[1:]))')
fi
set +e
COLUMNS=160 "${bench[@]}" "${args[@]}" 2>&1 | tee -a "$out/speed.log"
status=${PIPESTATUS[0]}
set -e
echo "exit status: $status" | tee -a "$out/speed.log"

# 4-bit NF4, behind the paper-size prefix only (the naive loop is skipped: its ratio is the bf16 run's).
if ! python -c "import bitsandbytes" > /dev/null 2>&1; then
  wheel=$(ls wheels/bitsandbytes-*.whl 2>/dev/null | head -n 1 || true)
  if [ -n "$wheel" ]; then
    python -m pip install --quiet --no-index --no-deps --target "${TMPDIR:-/tmp}/vela-bnb" "$wheel"
    export PYTHONPATH="${TMPDIR:-/tmp}/vela-bnb${PYTHONPATH:+:$PYTHONPATH}"
  fi
fi
if python -c "import bitsandbytes" > /dev/null 2>&1; then
  nf4_args=(speed --model "$model" --device "$device" --dtype "$dtype" --quantize 4bit --demos paper
    --clip-seconds 10 "${nf4_sizes[@]}" --naive-clips 0 --naive-queries 0 --search-vectors 0
    --json "$out/speed-4bit.json")
  set +e
  COLUMNS=160 "${bench[@]}" "${nf4_args[@]}" 2>&1 | tee "$out/speed-4bit.log"
  nf4_status=${PIPESTATUS[0]}
  set -e
  echo "exit status (4-bit): $nf4_status" | tee -a "$out/speed-4bit.log"
else
  echo "4-bit NF4: skipped, bitsandbytes is not installed and no wheel in wheels/" | tee -a "$out/speed.log"
fi
exit "$status"
