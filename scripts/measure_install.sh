#!/usr/bin/env bash
# Time the README set-up in a clean virtual environment and report its size.
#
#   bash scripts/measure_install.sh [SOURCE_DIR] [EXTRAS]
#
# SOURCE_DIR: a checkout of vela-search (default: this one); EXTRAS: the extras to install (default: test;
# "none" installs the package alone).
# Prints one line per step and a summary: install seconds, venv size, installed distributions, `pip check`.
# The venv is made in a temporary folder and removed afterwards. pip's download cache is left as it is, so
# run it twice and keep the second figure when comparing two checkouts (both then install from the cache).
set -euo pipefail
src="$(cd "${1:-$(dirname "$0")/..}" && pwd)"
extras="${2:-test}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

python3 -m venv "$work/venv"
. "$work/venv/bin/activate"
start=$(date +%s.%N)
# The README's set-up: the CPU build of torch first, then the package with its extras (editable).
python -m pip install --quiet torch==2.13.0
if [ "$extras" = none ]; then target="$src"; else target="$src[$extras]"; fi
python -m pip install --quiet -e "$target"
end=$(date +%s.%N)
python -m pip check
size_mb=$(du -sm "$work/venv" | cut -f1)
dists=$(python -m pip list --format=freeze | wc -l)
printf 'source=%s extras=%s install_s=%.0f venv_mb=%s distributions=%s\n' \
  "$src" "$extras" "$(echo "$end - $start" | bc)" "$size_mb" "$dists"
