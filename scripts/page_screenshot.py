#!/usr/bin/env python
"""Take the README's screenshots of the page: laptop and phone widths, light and dark themes.

A server on an index, a query typed, the hits with their waveforms shown, the first hit selected. Without
--index, a demo index is built first (the tiny model) from data/samples and a generated three-minute
"field recording" made of those samples, so that the zoomed view of a long file shows too.

Needs Debian's chromium (``apt-get install -y chromium``) and the test extra (Playwright).

Usage: python scripts/page_screenshot.py [--index DIR] --query "a bird chirping" --out-dir docs
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import soundfile as sf

SHOTS = {  # name: (width, height, colour scheme)
    "page-laptop-light.png": (1200, 860, "light"),
    "page-laptop-dark.png": (1200, 860, "dark"),
    "page-phone-light.png": (390, 844, "light"),
    "page-phone-dark.png": (390, 844, "dark"),
}


def demo_index(work: Path) -> Path:
    """data/samples plus a long file built from them, indexed with the tiny model."""
    from vela_search.audio import SAMPLE_RATE, decode_audio

    audio = work / "library"
    (audio / "effects").mkdir(parents=True)
    (audio / "field").mkdir()
    clips = []
    for path in sorted(Path("data/samples").iterdir()):
        if path.suffix in (".wav", ".flac", ".ogg"):
            (audio / "effects" / path.name).write_bytes(path.read_bytes())
            clips.append(decode_audio(path))
    rng = np.random.default_rng(7)
    parts = []
    while sum(len(p) for p in parts) < 180 * SAMPLE_RATE:
        parts.append(rng.normal(0, 0.01, int(rng.uniform(4, 12) * SAMPLE_RATE)).astype(np.float32))
        parts.append(clips[rng.integers(len(clips))])
    sf.write(audio / "field" / "harbour-morning-2024-05-03-long-take.wav", np.concatenate(parts), SAMPLE_RATE)
    index = work / "idx"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "vela_search",
            "index",
            str(audio),
            "--index",
            str(index),
            "--model",
            "tiny",
            "--demos",
            "none",
        ],
        check=True,
    )
    return index


def shoot(url: str, query: str, out_dir: Path, chromium: str) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        for name, (width, height, scheme) in SHOTS.items():
            context = browser.new_context(viewport={"width": width, "height": height}, color_scheme=scheme)
            page = context.new_page()
            page.goto(url + "/?" + urllib.parse.urlencode({"q": query, "segments": "1"}))
            page.wait_for_function("document.querySelectorAll('.hit.drawn').length >= 3")
            page.evaluate("document.activeElement.blur()")
            page.keyboard.press("j")
            page.evaluate("window.scrollTo(0, 0)")
            page.screenshot(path=str(out_dir / name), full_page=False)
            context.close()
            print(f"wrote {out_dir / name}")
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", help="an index to show (default: a demo index built from data/samples)")
    parser.add_argument("--query", default="a bird chirping")
    parser.add_argument("--out-dir", default="docs")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        index = args.index or str(demo_index(Path(tmp)))
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            [sys.executable, "-m", "vela_search", "serve", "--index", index, "--port", str(port)],
            stderr=subprocess.DEVNULL,
        )
        try:
            for _ in range(600):
                try:
                    urllib.request.urlopen(url + "/healthz", timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.2)
            Path(args.out_dir).mkdir(parents=True, exist_ok=True)
            shoot(url, args.query, Path(args.out_dir), args.chromium)
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
