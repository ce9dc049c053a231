"""The page in a real browser (Debian's chromium, headless, driven by Playwright) against a real server.

One server and one browser for the module; each test opens its own tab. The browser's fake microphone
(``--use-fake-device-for-media-stream``) plays a beep, so recording in the page needs no hardware.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from urllib.parse import quote

import pytest
import soundfile as sf

from .helpers import HTML_NAME, SR, start_server, stop_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).is_file(),
    reason="needs Debian's chromium (apt-get install -y chromium); .ci/run installs it",
)
LONG_S = 40.0  # long.wav of the collection


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
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--autoplay-policy=no-user-gesture-required",
                "--use-fake-device-for-media-stream",
                "--use-fake-ui-for-media-stream",
            ],
        )
        yield instance
        instance.close()


def open_page(browser, url: str, *, width: int = 1280, address: str = "/", **context):
    tab = browser.new_context(viewport={"width": width, "height": 900}, **context).new_page()
    tab.errors = []
    tab.on("pageerror", lambda exc: tab.errors.append(str(exc)))
    tab.goto(url + address)
    tab.wait_for_function("document.getElementById('summary').textContent.includes('5 files')")
    return tab


@pytest.fixture
def page(browser, server):
    tab = open_page(browser, server)
    yield tab
    tab.context.close()
    assert tab.errors == [], tab.errors


# The status line once an answer is shown (while a search runs it ends with "…").
STATUS = "document.getElementById('status').textContent"
ANSWERED = r"/: (\d+ hits? in \d+ ms|no hits.*)$/.test(document.getElementById('status').textContent)"


def search(page, text: str) -> None:
    page.fill("#query", text)
    page.press("#query", "Enter")  # keyboard: Enter searches
    page.wait_for_function(ANSWERED)


def long_hit(page):
    """A segment of long.wav that does not start at 0 (with every segment shown), its waveform drawn."""
    page.check("#segments")
    page.wait_for_function(ANSWERED)
    hits = page.locator(".hit")
    for i in range(hits.count()):
        hit = hits.nth(i)
        if hit.locator(".path").text_content() == "long.wav" and not hit.locator(
            ".segment"
        ).text_content().startswith("00:00"):
            hit.scroll_into_view_if_needed()
            page.wait_for_function("el => el.classList.contains('drawn')", arg=hit.element_handle())
            return hit
    raise AssertionError("no later segment of long.wav among the hits")


def span(hit) -> tuple[float, float]:
    return float(hit.get_attribute("data-start")), float(hit.get_attribute("data-end"))


def test_search_shows_hits_with_paths_as_text_and_readable_facts(page):
    assert "idx: 5 files" in page.text_content("#summary")
    search(page, "a low tone")
    paths = page.locator(".hit .path").all_text_contents()
    assert len(paths) == 5 and "long.wav" in paths
    # A file named with HTML is shown as its name, and nothing in it runs.
    assert HTML_NAME in [page.locator(".hit .path").nth(i).get_attribute("data-full") for i in range(5)]
    assert page.evaluate("window.__vela_injected") is None
    assert page.locator(".results img").count() == 0
    first = page.locator(".hit").first
    score = float(first.locator(".score").text_content())
    width = first.locator(".score-bar .fill").evaluate("el => el.getBoundingClientRect().width")
    total = first.locator(".score-bar").evaluate("el => el.getBoundingClientRect().width")
    assert abs(width / total - max(0.0, score)) < 0.05
    page.wait_for_function("document.querySelectorAll('.hit.drawn').length === 5")
    assert (
        "16 kHz · mono · WAV"
        in page.locator(".hit", has=page.locator(".path", has_text="long.wav")).text_content()
    )
    # An idle hit shows no "0:00 / 0:00": the file's length is known before it is played.
    assert "of 00:40" in page.locator(".hit", has=page.locator(".path", has_text="long.wav")).text_content()
    assert page.locator("#k").count() == 0  # no fixed "Hits" box: more results on demand


def test_waveform_highlights_the_segment_and_a_click_seeks(page):
    search(page, "a low tone")
    hit = long_hit(page)
    start, end = span(hit)
    box = hit.locator(".wave.overview").bounding_box()
    region = hit.locator(".wave.overview .region").bounding_box()
    assert abs(region["x"] - (box["x"] + start / LONG_S * box["width"])) <= 3
    assert abs(region["x"] + region["width"] - (box["x"] + end / LONG_S * box["width"])) <= 3
    # The canvas is drawn: the segment's columns are in the highlight colour, others not.
    drawn = hit.locator(".wave.overview canvas").evaluate(
        "c => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        " let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n / (c.width * c.height); }"
    )
    assert drawn > 0.2
    hit.locator(".wave.overview").click(position={"x": box["width"] * 0.25, "y": box["height"] / 2})
    player = hit.locator(".player")
    page.wait_for_function("el => !el.paused && el.currentTime > 0", arg=player.element_handle())
    assert abs(player.evaluate("el => el.currentTime") - 0.25 * LONG_S) < 1.0
    # The playhead moves with the sound.
    head = hit.locator(".wave.overview .playhead")
    page.wait_for_timeout(400)
    x = head.bounding_box()["x"]
    assert abs(x - (box["x"] + player.evaluate("el => el.currentTime") / LONG_S * box["width"])) < 8


def test_keyboard_selects_plays_seeks_and_runs_more_like_this(page):
    search(page, "a low tone")
    target = long_hit(page)
    position = target.evaluate("el => [...el.parentNode.children].indexOf(el)")
    page.evaluate("document.activeElement.blur()")
    page.keyboard.press("?")
    assert page.locator("#help").is_visible()
    page.keyboard.press("Escape")
    assert not page.locator("#help").is_visible()
    page.keyboard.press("ArrowDown")
    for _ in range(position):
        page.keyboard.press("j")
    assert "selected" in target.get_attribute("class") and target.get_attribute("aria-current") == "true"
    start, _ = span(target)
    page.keyboard.press(" ")
    player = target.locator(".player")
    page.wait_for_function("el => !el.paused && el.currentTime > 0", arg=player.element_handle())
    before = player.evaluate("el => el.currentTime")
    assert start - 0.1 <= before < start + 1.5
    page.keyboard.press("ArrowRight")
    page.wait_for_function(f"el => el.currentTime >= {before + 1.8}", arg=player.element_handle())
    # Playing another hit stops this one.
    page.keyboard.press("k")
    page.keyboard.press(" ")
    page.wait_for_function("el => el.paused", arg=player.element_handle())
    name = page.locator(".hit.selected .path").get_attribute("data-full")
    page.keyboard.press("m")
    page.wait_for_function(
        f"document.getElementById('status').textContent.startsWith('More like') && {ANSWERED}"
    )
    assert page.locator(".hit").first.locator(".path").get_attribute("data-full") == name
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "query"


def test_microphone_records_and_searches(page):
    page.click("#record")
    page.wait_for_function("document.getElementById('record').getAttribute('aria-pressed') === 'true'")
    page.wait_for_timeout(1500)
    page.click("#record")
    page.wait_for_function(
        f"document.getElementById('status').textContent.startsWith('Sounds like recording') && {ANSWERED}"
    )
    assert page.locator(".hit").count() == 5, page.text_content("#status")


def test_segment_download_is_the_exact_span(page, serve_collection):
    search(page, "a low tone")
    hit = long_hit(page)
    start, end = span(hit)
    with page.expect_download() as info:
        hit.locator(".download-clip").click()
    download = info.value
    assert download.suggested_filename.startswith("long_") and download.suggested_filename.endswith(".wav")
    wave, rate = sf.read(io.BytesIO(Path(download.path()).read_bytes()))
    assert rate == SR and abs(len(wave) / SR - (end - start)) < 0.11
    assert hit.locator(".download-file").get_attribute("href").startswith("/api/file/")
    # Dragged out of the page, a hit is its segment as a file (Chromium's DownloadURL).
    dragged = hit.locator(".hit-head").evaluate(
        "el => { const dt = new DataTransfer();"
        " el.dispatchEvent(new DragEvent('dragstart', {dataTransfer: dt, bubbles: true}));"
        " return dt.getData('DownloadURL'); }"
    )
    assert (
        dragged.startswith("audio/wav:long_")
        and f"/api/clip/{hit.get_attribute('data-segment-id')}?" in dragged
    )


def test_a_bookmarked_address_restores_query_and_filters(browser, server):
    address = "/?q=" + quote("a low tone") + "&type=flac&segments=1"
    tab = open_page(browser, server, address=address)
    tab.wait_for_function(ANSWERED)
    assert tab.input_value("#query") == "a low tone" and tab.is_checked("#segments")
    paths = tab.locator(".hit .path").all_text_contents()
    assert paths and all(p.endswith(".flac") for p in paths)
    assert tab.locator(".facet[data-facet=type] button[aria-pressed=true]").text_content().startswith("FLAC")
    # A facet filters without retyping, and the address follows.
    tab.locator(".facet[data-facet=type] button[aria-pressed=true]").click()
    tab.wait_for_function("document.querySelectorAll('.hit').length > 1")
    assert "type=" not in tab.url
    tab.locator(".facet[data-facet=length] button", has_text="< 5 s").click()
    tab.wait_for_function("location.search.includes('length=0-5')")
    tab.wait_for_function(ANSWERED)
    assert "long.wav" not in tab.locator(".hit .path").all_text_contents()
    # The folder facet: the files under tones/ only (glob characters in a folder name match themselves).
    tab.locator(".facet[data-facet=folder] button", has_text="tones/").click()
    tab.wait_for_function("location.search.includes('folder=')")
    tab.wait_for_function(ANSWERED)
    paths = tab.locator(".hit .path").all_text_contents()
    assert paths and all(p.startswith("tones/") for p in paths)
    where = tab.evaluate(
        "import('/static/facets.js').then(f => f.filterParams({folder: '/a/[x]', type: 'wav'}).where)"
    )
    assert where == "/a/[[]x[]]/*.[wW][aA][vV]"
    tab.context.close()
    assert tab.errors == []


def test_no_hits_says_that_a_filter_removed_them(browser, server):
    tab = open_page(browser, server, address="/?q=tone&type=flac&length=30-300")
    tab.wait_for_function(ANSWERED)
    assert tab.locator(".hit").count() == 0
    assert "no hits match the filters (type FLAC, length 30 s–5 min)" in tab.text_content("#status")
    tab.click("#clear-filters")
    tab.wait_for_function("document.querySelectorAll('.hit').length === 5")
    tab.context.close()


def test_phone_width_has_no_horizontal_scroll_and_labelled_controls(browser, server):
    tab = open_page(browser, server, width=390, address="/?q=tone&segments=1")
    tab.wait_for_function("document.querySelectorAll('.hit.drawn').length > 3")
    assert tab.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    unlabelled = tab.evaluate(
        "[...document.querySelectorAll('button, a, select, textarea, input:not([hidden]), [role=slider]')]"
        ".filter(el => !el.closest('[hidden], template'))"
        ".filter(el => !(el.getAttribute('aria-label') || el.textContent.trim() || el.closest('label')))"
        ".map(el => el.outerHTML)"
    )
    assert unlabelled == []
    tab.context.close()


def test_more_results_on_demand_and_long_paths_shortened_in_the_middle(browser, server):
    tab = open_page(browser, server, width=390, address="/?q=tone&segments=1&k=3")
    tab.wait_for_function(ANSWERED)
    assert tab.locator(".hit").count() == 3 and tab.locator("#more").is_visible()
    tab.click("#more")
    tab.wait_for_function("document.querySelectorAll('.hit').length > 3")
    tab.wait_for_function(ANSWERED)
    assert "k=23" in tab.url and not tab.locator("#more").is_visible()  # fewer than 23: all of them
    html = tab.locator(".hit .path").filter(has_text="…").first
    assert html.get_attribute("title").endswith(HTML_NAME) and html.text_content().endswith(".wav")
    # The zoomed view of a long file: the segment and as much again on each side, from the fine peaks.
    zoom = tab.evaluate(
        "import('/static/wave.js').then(w => w.viewsFor({start_s: 600, end_s: 610, duration_s: 2700},"
        " {duration_s: 2700, overview: [[0, 0]], fine: [[0, 0]], fine_rate: 20}).zoom)"
    )
    assert (zoom["start"], zoom["end"], zoom["step"]) == (590, 620, 0.05)
    tab.context.close()
    assert tab.errors == []


def test_copy_path(browser, server):
    tab = open_page(browser, server, address="/?q=tone")
    tab.context.grant_permissions(["clipboard-read", "clipboard-write"])
    tab.wait_for_function(ANSWERED)
    first = tab.locator(".hit").first
    first.locator(".copy").click()
    tab.wait_for_function(f"{STATUS}.startsWith('Copied the path')")
    assert tab.evaluate("navigator.clipboard.readText()") == first.locator(".path").get_attribute("title")
    tab.context.close()


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


def test_files_being_added_are_shown_while_a_writer_works(page, serve_collection):
    from vela_search.store.activity import ActivityRecorder
    from vela_search.store.layout import ACTIVITY_FILE

    index = serve_collection[1]
    recorder = ActivityRecorder(index)  # this process plays the live writer
    try:
        assert page.locator("#activity").is_hidden()
        recorder.update(files_waiting=3)
        page.wait_for_function(
            "document.getElementById('activity').textContent === '3 files being added'", timeout=15_000
        )
        assert page.locator("#activity").is_visible()
        recorder.update(files_waiting=0, caught_up=True)
        page.wait_for_function("document.getElementById('activity').hidden", timeout=15_000)
    finally:
        (index / ACTIVITY_FILE).unlink(missing_ok=True)
