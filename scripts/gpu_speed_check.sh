#!/usr/bin/env bash
# Speed benchmark on a CUDA machine with the random-weight Qwen2-Audio-7B shape: no weights to download,
# no faiss, librosa or soundfile needed (torch, transformers, typer, rich, numpy, pyarrow are).
#
# Usage, from the repository root:   scripts/gpu_speed_check.sh [OUT_DIR]
# OUT_DIR defaults to $OUT, else ./gpu-speed. It receives env.txt (GPU, driver, versions), speed.json (the
# full report), speed.log (the printed tables) and, if something failed, the error in speed.log.
#
# What it measures (see docs/benchmarks.md): 10 s clips behind the paper-size demo prefix (35 audio x 5 s +
# 65 text demos, ~7.9k tokens) and without demos, 30 s clips without demos (30 s clips do not fit behind the
# paper prefix in 8,192 positions and are reported as skipped there), the naive loop in the same run, the
# ratio, the fraction of the chip's bf16 peak, text-query latency, and top-10 search over 1M fp16 vectors.
set -euo pipefail

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

args=(
  speed --model shape:qwen2-audio-7b --device cuda --dtype bf16
  --demos paper --demos none --clip-seconds 10 --clip-seconds 30
  --clips 256 --naive-clips 4 --queries 64 --naive-queries 3
  --search-vectors 1000000 --json "$out/speed.json"
)
# The full CLI imports every command module; if one of them needs a package this image lacks, run the
# bench sub-app alone instead of losing the measurement.
if python -m vela_search --help > /dev/null 2>&1; then
  cmd=(python -m vela_search bench "${args[@]}")
else
  echo "note: 'python -m vela_search --help' failed here; running the bench commands directly" | tee "$out/speed.log"
  cmd=(python -c 'import sys; from vela_search.cli.bench_cmd import bench_app; from vela_search.cli.common import run_app; sys.exit(run_app(bench_app, sys.argv[1:]))' "${args[@]}")
fi
set +e
COLUMNS=160 "${cmd[@]}" 2>&1 | tee -a "$out/speed.log"
status=${PIPESTATUS[0]}
set -e
echo "exit status: $status" | tee -a "$out/speed.log"
exit "$status"
