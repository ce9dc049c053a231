"""The page in a real browser (Debian's chromium, headless, driven by Playwright) against a real server."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .helpers import HTML_NAME, start_server, stop_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).is_file(),
    reason="needs Debian's chromium (apt-get install -y chromium); .ci/run installs it",
)


@pytest.fixture(scope="module")
def server(serve_collection):
    proc, url = start_server(serve_collection[1])
    yield url
    stop_server(proc)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # The system chromium: nothing is downloaded at run time.
        instance = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--autoplay-policy=no-user-gesture-required"],
        )
        yield instance
        instance.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.goto(server + "/")
    tab.wait_for_function("document.getElementById('summary').textContent.includes('5 files')")
    yield tab
    context.close()
    assert errors == [], errors


# The status line once an answer is shown (while a search runs it ends with "…").
ANSWERED = r"/: (\d+ hits? in \d+ ms|no hits)$/.test(document.getElementById('status').textContent)"


def search(page, text: str) -> None:
    page.fill("#query", text)
    page.press("#query", "Enter")  # keyboard: Enter searches
    page.wait_for_function(ANSWERED)


def test_search_shows_hits_with_paths_as_text(page):
    assert "idx: 5 files" in page.text_content("#summary")
    assert "tiny random model" in page.text_content("#summary")
    search(page, "a low tone")
    paths = page.locator(".hit .path").all_text_contents()
    assert len(paths) == 5 and "long.wav" in paths
    # A file named with HTML is shown as its name, and nothing in it runs.
    assert HTML_NAME in paths
    assert page.evaluate("window.__vela_injected") is None
    assert page.locator(".results img").count() == 0
    assert page.locator(".hit .score").first.text_content().startswith("0.")


def test_play_starts_at_the_segment_and_advances(page):
    page.check("#segments")
    page.fill("#k", "30")
    search(page, "a low tone")
    hits = page.locator(".hit")
    index = next(
        i
        for i in range(hits.count())
        if hits.nth(i).locator(".path").text_content() == "long.wav"
        and float(hits.nth(i).locator(".player").get_attribute("data-segment-start")) > 0
    )
    hit = hits.nth(index)
    start = float(hit.locator(".player").get_attribute("data-segment-start"))
    hit.locator(".play").click()
    player = hit.locator(".player")
    page.wait_for_function(
        "([el, start]) => !el.paused && el.currentTime > start + 0.3", arg=[player.element_handle(), start]
    )
    current = player.evaluate("el => el.currentTime")
    assert start < current < start + 10
    assert "/api/audio/" in player.evaluate("el => el.src")


def test_more_like_this_puts_the_hit_first(page):
    search(page, "a low tone")
    # A file whose sound no other file shares (long.wav opens with t220.wav's tone: a near tie in fp16).
    name = "tones/t1320.flac"
    page.locator(".hit", has=page.locator(".path", has_text=name)).locator(".like").click()
    like_answered = f"document.getElementById('status').textContent.startsWith('More like') && {ANSWERED}"
    page.wait_for_function(like_answered)
    first = page.locator(".hit").first
    assert first.locator(".path").text_content() == name
    assert float(first.locator(".score").text_content()) > 0.99


def test_a_failed_query_shows_a_message(page):
    page.fill("#query", "   ")
    page.click("#search-button")
    page.wait_for_function("document.getElementById('status').classList.contains('error')")
    assert "the query is empty" in page.text_content("#status")
    assert page.locator(".hit").count() == 0


def test_the_rerank_switch_shows_the_judgement(page):
    page.check("#rerank")
    search(page, "a low tone")
    scores = page.locator(".hit .score").all_text_contents()
    assert len(scores) == 5 and all("judge" in s for s in scores)  # 5 files, all within the top 20
