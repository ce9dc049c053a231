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
if [ "$extras" = none ]; then target="$src"; else target="$src[$extras]"; fi
# The README's set-up: the CPU build of torch first, then the package with its extras (editable). Timed as
# wall seconds and CPU seconds (user + system; less sensitive to other work on the machine).
TIMEFORMAT='%R %U %S'
{ time {
  python -m pip install --quiet torch==2.13.0 && python -m pip install --quiet -e "$target"
} 2>&3; } 3>&2 2>"$work/time.txt"
read -r wall_s user_s sys_s <"$work/time.txt"
python -m pip check
size_mb=$(du -sm "$work/venv" | cut -f1)
dists=$(python -m pip list --format=freeze | wc -l)
printf 'source=%s extras=%s install_s=%.0f cpu_s=%.0f venv_mb=%s distributions=%s\n' \
  "$src" "$extras" "$wall_s" "$(echo "$user_s + $sys_s" | bc)" "$size_mb" "$dists"
