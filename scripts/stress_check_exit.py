"""Run `vela-search check` on a small index many times and count abnormal exits (a stress loop).

The command once ended, after printing a correct result, with ``terminate called without an active
exception`` (exit -6, SIGABRT) when a native thread was still joinable as the process exited. This script
builds a small index of random vectors (a few shards, a files table, compressed codes), then runs the
installed ``vela-search check`` (and, with ``--json``, its JSON form) ``--runs`` times, each in a fresh
process, optionally with a competing CPU load to widen timing windows, and prints a one-line summary:

    python scripts/stress_check_exit.py --runs 200 --workdir /tmp/vela-stress-check

Exit status 0 when every run exited 0 with the expected output, 1 otherwise (the failing runs' stderr is
printed).
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

_FINGERPRINT = {"model": "stress-check", "revision": "1", "prompt_version": "1", "dim": 16}


def build_index(root: Path, shards: int = 4, per_shard: int = 64) -> None:
    """An index of `shards` shards of random unit vectors with a files table and a deleted row."""
    from vela_search.store import AudioIndex

    if root.exists():
        shutil.rmtree(root)
    index = AudioIndex.create(root, fingerprint=_FINGERPRINT, dim=16)
    rng = np.random.default_rng(0)
    with index.writer(fingerprint=_FINGERPRINT) as writer:
        for s in range(shards):
            vectors = rng.standard_normal((per_shard, 16)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            rows = [
                {"path": f"/audio/s{s}.wav", "start_s": float(i), "end_s": float(i + 1)}
                for i in range(per_shard)
            ]
            writer.add(vectors, rows)
            writer.put_files([{"path": f"/audio/s{s}.wav", "status": "indexed", "segments": per_shard}])
            writer.commit()
    index.close()


def _burn(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def main() -> int:
    """Build the index, run the loop, print the summary; 0 when every run was clean."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/vela-stress-check"))
    parser.add_argument("--load", type=int, default=0, help="busy-looping processes to run alongside")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    root = args.workdir / "index"
    build_index(root)
    cli = str(Path(sys.executable).with_name("vela-search"))
    burners = [multiprocessing.Process(target=_burn, args=(86400,), daemon=True) for _ in range(args.load)]
    for burner in burners:
        burner.start()
    outcomes: collections.Counter[int] = collections.Counter()
    failures: list[str] = []
    started = time.monotonic()
    try:
        for run in range(args.runs):
            extra = ["--json"] if run % 2 else []
            command = [cli, "check", "--index", str(root), *extra]
            done = subprocess.run(command, capture_output=True, text=True)
            outcomes[done.returncode] += 1
            if done.returncode != 0 or ("intact" not in done.stdout and '"damaged": []' not in done.stdout):
                failures.append(f"run {run}: exit {done.returncode}: {done.stderr.strip()[-300:]}")
            if (run + 1) % 20 == 0:
                print(f"{run + 1} runs: exit statuses {dict(outcomes)}", flush=True)
    finally:
        for burner in burners:
            burner.terminate()
    seconds = time.monotonic() - started
    print("\n".join(failures))
    print(
        f"{args.runs} runs of `vela-search check` in {seconds:.0f} s (load {args.load}): "
        f"exit statuses {dict(outcomes)}; {len(failures)} failed"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
