"""The page at GET / in a real browser: headless Chromium (Debian's package) driven by Playwright, against the
service started as a real process, with Chromium's fake microphone playing a bundled EMO-DB clip.

The browser tests are skipped, saying why, where Playwright or a Chromium is missing (``.ci/run`` installs
both). Chromium is ``$SER_CHROMIUM``, else ``chromium`` or ``chromium-browser`` on the PATH; Playwright's own
browser downloads are never used. ``SER_PAGE_SCREENSHOT=docs/page.png`` makes the timeline test save the README's
screenshot.
"""

from __future__ import annotations

import json
import os
import shutil

import httpx
import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from tests.conftest import BUNDLED, ROOT
from tests.test_api import _free_port, _start_service
from speech_emotion.model import resolve_model_dir

try:
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None

CHROMIUM = os.environ.get("SER_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")

# The microphone's clip: speaker 08, sadness, 3.0 s; the default model answers "sad" with p ~0.98 for the file,
# a clear answer that survives the browser's capture path (resampled to the audio device's rate, 16 bits).
MIC_CLIP = BUNDLED / "wav" / "08a02Tb.flac"
# For the timeline: anger, then silence, then sadness (12 s, more than the default model's 9 s span).
LONG_CLIPS = [BUNDLED / "wav" / "03a01Wa.flac", BUNDLED / "wav" / "13b03Td.flac"]
SILENCE = 4.0
# one bar per label of the served default model
LABELS = json.loads((resolve_model_dir(ROOT / "models") / "metadata.json").read_text())["labels"]


def _read16k(path) -> np.ndarray:
    y, sr = sf.read(path, dtype="float32")
    assert sr == 16000
    return y


@pytest.fixture(scope="module")
def mic_wav(tmp_path_factory):
    """The fake microphone's input: the clip between short silences, as 16-bit WAV (what Chromium reads)."""
    y = _read16k(MIC_CLIP)
    y = np.concatenate([np.zeros(8000, np.float32), y, np.zeros(16000, np.float32)])
    path = tmp_path_factory.mktemp("page") / "mic.wav"
    sf.write(path, y, 16000, subtype="PCM_16")
    return path, len(y) / 16000


@pytest.fixture(scope="module")
def service():
    port = _free_port()
    proc = _start_service(port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def browser(mic_wav):
    if sync_playwright is None:  # pragma: no cover - depends on the machine
        pytest.skip("Playwright is not installed (pip install -e '.[dev]')")
    if not CHROMIUM:  # pragma: no cover - depends on the machine
        pytest.skip("no Chromium found (apt-get install chromium, or set SER_CHROMIUM to its executable)")
    with sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=[
                "--use-fake-ui-for-media-stream",       # grant the microphone without asking
                "--use-fake-device-for-media-stream",   # a fake microphone ...
                f"--use-file-for-fake-audio-capture={mic_wav[0]}",  # ... that plays this file (in a loop)
                "--autoplay-policy=no-user-gesture-required",
            ])
        except PlaywrightError as exc:  # pragma: no cover - depends on the machine
            pytest.skip(f"Chromium at {CHROMIUM} does not start under Playwright: {exc}")
        yield browser
        browser.close()


@pytest.fixture
def page(browser, service):
    """A fresh page at GET /, recording every request it makes."""
    context = browser.new_context(viewport={"width": 800, "height": 900})
    page = context.new_page()
    page.requests = []
    page.on("request", lambda request: page.requests.append(request))
    page.console = []
    page.on("console", lambda message: page.console.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda exc: page.console.append(f"pageerror: {exc}"))
    page.goto(f"{service}/")
    yield page
    context.close()


def last_result(page) -> dict:
    return page.evaluate("window.lastResult")


def shown_bars(page) -> list[tuple[str, float]]:
    """The bars as shown: (emotion, percent) from top to bottom."""
    return [(li.get_attribute("data-emotion"), float(li.locator(".value").inner_text().split()[0]))
            for li in page.locator("#bars li").all()]


def test_record_with_the_microphone_shows_the_apis_answer_as_bars(page, service, mic_wav):
    path, seconds = mic_wav
    # by keyboard, as someone without a mouse: Record, then Stop has the focus
    page.get_by_role("button", name="Record").press("Enter")
    expect(page.get_by_role("button", name="Stop")).to_be_focused()
    page.wait_for_timeout(seconds * 1000 + 300)  # the clip once (the fake microphone loops it)
    page.keyboard.press("Enter")
    expect(page.locator("#bars li")).to_have_count(len(LABELS), timeout=60_000)

    result = last_result(page)
    assert result["status"] == 200, (result, page.console)
    body = result["body"]
    # what was posted is the recording: a WAV of about the time recorded, at the browser's audio rate
    assert body["audio"]["format"] == "WAV" and body["audio"]["channels"] == 1
    assert seconds - 0.5 < body["audio"]["duration"] < 6, body["audio"]
    assert body["speech_seconds"] > 2, body
    # the page shows the API's answer: bars sorted, the top one highlighted and named
    bars = shown_bars(page)
    assert [p for _, p in bars] == sorted((p for _, p in bars), reverse=True)
    assert {e: p for e, p in bars} == {e: pytest.approx(100 * p, abs=0.051) for e, p in body["probabilities"].items()}
    assert page.locator("#bars li.top").get_attribute("data-emotion") == body["emotion"] == bars[0][0]
    assert page.locator("#top-emotion").inner_text() == body["emotion"]
    expect(page.locator("#summary")).to_contain_text(f"{body['speech_seconds']:.2f} s of speech")
    # and the answer is the clip's: the file posted directly is "sad", and so is its recording through the
    # browser (resampled to the audio device's rate and back, quantised to 16 bits, between short silences)
    direct = httpx.post(f"{service}/predict", files={"file": (path.name, path.read_bytes())}, timeout=60).json()
    assert direct["emotion"] == "sad"
    assert body["emotion"] == direct["emotion"], (body["probabilities"], direct["probabilities"])
    # everything the page loaded came from the service itself (no CDN, no fonts from elsewhere; blob: is the
    # recording, played back)
    assert all(r.url.startswith((f"{service}/", f"blob:{service}/")) for r in page.requests), [
        r.url for r in page.requests]
    # a recording shorter than two of the model's 3 s windows: no timeline chart
    assert page.locator("#timeline").is_hidden()
    assert not [line for line in page.console if line.startswith(("error", "pageerror"))], page.console


def test_a_dropped_text_file_shows_the_apis_error_and_sends_the_key(page, service, tmp_path):
    page.get_by_label("API key").fill("a-key-from-the-field")
    page.get_by_label("API key").press("Tab")
    # drop a text file on the drop zone, as a person dragging it from their desktop
    transfer = page.evaluate_handle("""() => {
        const transfer = new DataTransfer();
        transfer.items.add(new File(["these are notes, not audio"], "notes.txt", {type: "text/plain"}));
        return transfer;
    }""")
    page.locator("#drop").dispatch_event("drop", {"dataTransfer": transfer})
    error = page.locator("#error")
    expect(error).to_be_visible(timeout=30_000)
    result = last_result(page)
    assert result["status"] == 415 and result["body"]["code"] == "unsupported_audio", result
    assert error.locator(".detail").inner_text() == result["body"]["detail"]
    assert "notes.txt" in result["body"]["detail"]
    expect(page.locator("#bars li")).to_have_count(0)
    posted = [r for r in page.requests if r.url.startswith(f"{service}/predict")]
    assert len(posted) == 1 and posted[0].headers.get("x-api-key") == "a-key-from-the-field"
    # the key is kept in the browser for the next visit
    page.reload()
    expect(page.get_by_label("API key")).to_have_value("a-key-from-the-field")


def test_a_chosen_long_file_shows_the_timeline_with_silence_marked(page, service, tmp_path):
    parts = [_read16k(LONG_CLIPS[0]), np.zeros(int(SILENCE * 16000), np.float32), _read16k(LONG_CLIPS[1])]
    path = tmp_path / "angry-then-sad.wav"
    sf.write(path, np.concatenate(parts), 16000, subtype="PCM_16")
    page.set_viewport_size({"width": 375, "height": 1100})  # a phone's width
    page.get_by_label("choose one", exact=False).set_input_files(path)
    expect(page.locator("#bars li")).to_have_count(len(LABELS), timeout=60_000)
    body = last_result(page)["body"]
    timeline = body["timeline"]
    silent = [w for w in timeline if not w["speech"]]
    assert len(timeline) > 2 and silent, timeline  # the silence in the middle fills at least one whole window
    expect(page.locator("#timeline")).to_be_visible()
    chart = page.locator("#chart svg")
    expect(chart.locator("path.series")).to_have_count(len(body["probabilities"]))
    expect(chart.locator("rect.no-speech")).to_have_count(len(silent))
    expect(page.locator("#windows tr")).to_have_count(len(timeline))
    expect(page.locator("#windows tr.no-speech")).to_have_count(len(silent))
    # each emotion's line has a point for every window with speech, and none for those without
    points = chart.locator("path.series").first.get_attribute("d").count(",")
    assert points == len(timeline) - len(silent)
    assert page.locator("#top-emotion").inner_text() == body["emotion"]
    # nothing wider than the phone's screen
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    if os.environ.get("SER_PAGE_SCREENSHOT"):
        page.set_viewport_size({"width": 720, "height": 900})
        page.screenshot(path=os.environ["SER_PAGE_SCREENSHOT"], full_page=True)
        _shrink_png(os.environ["SER_PAGE_SCREENSHOT"])


def _shrink_png(path: str) -> None:
    """256 colours instead of true colour: a third of the bytes for the README's screenshot (Pillow, where there)."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover
        return
    with Image.open(path) as image:
        small = image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    small.save(path, optimize=True)



def test_page_is_served_by_the_app_and_left_out_of_the_api_schema():
    with TestClient(create_app(Settings(model_path=ROOT / "models"))) as client:
        page = client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert 'href="docs"' in page.text  # Swagger UI stays reachable, and linked
        assert client.get("/docs").status_code == 200
        for asset, kind in [("app.js", "text/javascript"), ("recorder-worklet.js", "text/javascript"),
                            ("style.css", "text/css")]:
            r = client.get(f"/page/{asset}")
            assert r.status_code == 200 and r.headers["content-type"].startswith(kind)
        missing = client.get("/page/nothing.js")
        assert missing.status_code == 404 and missing.json()["code"] == "not_found"
        assert client.get("/page/..%2Fmain.py").status_code == 404
        paths = client.get("/openapi.json").json()["paths"]
        assert "/" not in paths and not any(p.startswith("/page") for p in paths)
