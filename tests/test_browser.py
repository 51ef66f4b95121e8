"""The notebooks in a real browser: JupyterLab + headless Chromium, as a learner would use them.

Each scenario starts a fresh JupyterLab server on a free local port (settings in a temporary
JUPYTERLAB_SETTINGS_DIR: no autosave, so nothing is ever written into a tracked notebook, and no news popup; and
its own workspace folder, so no tabs come back from an earlier server), opens
one notebook in Debian's Chromium driven by Playwright's Python package, runs all cells with MARIOFM_SMOKE=1, then
does what a learner does and checks what they would see; a screenshot goes to outputs/browser/.

To add a scenario (e.g. notebook 06: hold "right", check that the picture changes), write a function
`act(page) -> None` that clicks and asserts, and append `Scenario("06_play.ipynb", act)` to SCENARIOS.
Selectors and timings that work are in the field notes (ipywidgets 8: button.widget-button, img.widget-image,
div.widget-label; a slider's value is typed into its .widget-readout).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = ROOT / "outputs" / "browser"
RUN_ALL_TIMEOUT_S = 300  # smoke mode ran all cells of 05 in 40-70 s on 2 shared cores

pytestmark = pytest.mark.skipif(
    not CHROMIUM.is_file(),
    reason=f"no Chromium at {CHROMIUM}: install Debian's package (`sudo apt-get install -y chromium`) to run the "
           "browser tests; Playwright's own browser download is not used")


# ------------------------------------------------------------------------------------------------ the server
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def jupyterlab(workdir: Path) -> Iterator[str]:
    """A JupyterLab server on notebooks/, with the kernel seeing MARIOFM_SMOKE=1 and this checkout's mariofm."""
    settings = workdir / "lab-settings"
    for plugin, values in {"@jupyterlab/docmanager-extension/plugin": {"autosave": False},
                           "@jupyterlab/apputils-extension/notification": {"fetchNews": "false"},
                           # render every cell (JupyterLab 4 skips painting cells that are off screen)
                           "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"}}.items():
        path = settings / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    env = {**os.environ, "MARIOFM_SMOKE": "1", "JUPYTERLAB_SETTINGS_DIR": str(settings),
           "JUPYTER_RUNTIME_DIR": str(workdir / "runtime"), "PYTHONPATH": str(ROOT),
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    port = free_port()
    # its own workspace folder: JupyterLab otherwise restores the tabs of the last server run by this user from
    # ~/.jupyter/lab/workspaces, and "Run All Cells" then runs whichever notebook that left in front
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ServerApp.token=",
               "--ServerApp.password=", f"--ServerApp.root_dir={ROOT / 'notebooks'}",
               f"--LabApp.workspaces_dir={workdir / 'workspaces'}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")
    log = (workdir / "jupyterlab.log").open("w")
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"JupyterLab did not start; its log: {workdir / 'jupyterlab.log'}\n"
                                       + (workdir / "jupyterlab.log").read_text()[-2000:]) from None
                time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


# ------------------------------------------------------------------------------------------------ the page
def open_and_run_all(page, url: str, notebook: str) -> None:
    """Open the notebook, wait for its kernel, run all cells and wait until none is left running."""
    page.goto(f"{url}/lab/tree/{notebook}")
    # the execution indicator reads idle while the kernel is still starting; the status bar does not
    page.wait_for_function("document.querySelector('#jp-main-statusbar')?.textContent.includes('| Idle')",
                           timeout=120_000)
    tabs = page.locator(".lm-DockPanel-tabBar .lm-TabBar-tabLabel")
    opened = sorted({t for t in tabs.all_text_contents() if t.endswith(".ipynb")})
    assert opened == [notebook], f"the page should show {notebook} alone, but its tabs are {opened}"
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
    busy = "[...document.querySelectorAll('.jp-InputPrompt')].some(p => p.textContent.includes('[*]'))"
    page.wait_for_function(busy, timeout=30_000)
    page.wait_for_function(f"!({busy})", timeout=RUN_ALL_TIMEOUT_S * 1000, polling=1000)
    errors = page.evaluate("[...document.querySelectorAll('.jp-OutputArea-output')].map(o => o.textContent)"
                           ".filter(t => t.includes('Traceback (most recent call last)'))")
    assert not errors, f"{notebook}: a cell raised when run in the browser:\n{errors[0][:2000]}"


def set_slider(page, description: str, value: int) -> None:
    """Type a value into an ipywidgets slider's readout, as a learner can."""
    slider = page.locator(".widget-slider", has=page.locator("label.widget-label", has_text=description)).first
    readout = slider.locator(".widget-readout")
    readout.click()
    readout.fill(str(value))
    readout.press("Enter")
    handle = slider.locator(".noUi-handle").first
    page.wait_for_function("([el, v]) => Number(el.getAttribute('aria-valuenow')) === v",
                           arg=[handle.element_handle(), value], timeout=10_000)


def screenshot(page, element, name: str) -> Path:
    """Scroll the element into view (JupyterLab scrolls inside its own panel) and save the viewport."""
    element.evaluate("el => el.scrollIntoView({block: 'center'})")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


# ------------------------------------------------------------------------------------------------ scenarios
def generate_a_new_gif(page) -> None:
    """05_generation: change the seed, click Generate, and see a new GIF in the image widget."""
    image = page.locator("img.widget-image").first
    image.wait_for(state="attached", timeout=30_000)
    image.evaluate("el => el.scrollIntoView({block: 'center'})")
    before = image.get_attribute("src")
    assert before and before.startswith("blob:"), "the Generate cell should have shown a first GIF when run"
    set_slider(page, "seed", 1)
    button = page.locator("button.widget-button", has_text="Generate").first
    button.click()
    page.wait_for_function("([img, old]) => img.getAttribute('src') !== old", arg=[image.element_handle(), before],
                           timeout=120_000)
    page.wait_for_function("b => !b.disabled", arg=button.element_handle(), timeout=60_000)  # enabled again
    label = page.locator("div.widget-label", has_text="network evaluations").first
    assert "seed 1" in label.text_content(), f"the label should describe the new clips: {label.text_content()!r}"
    assert page.locator(".widget-html pre").count() == 0, "the widget shows an error"
    shown = image.bounding_box()
    assert shown and shown["width"] > 50 and shown["height"] > 50, f"the GIF is not visible: {shown}"
    path = screenshot(page, image, "05_generation")
    assert path.stat().st_size > 10_000, f"{path} looks empty"
    # the screenshot's pixels where the GIF sits must vary (a real picture, not a blank box)
    from PIL import Image, ImageStat

    box = image.bounding_box()
    crop = Image.open(path).convert("L").crop((box["x"], box["y"], box["x"] + box["width"],
                                                box["y"] + box["height"]))
    assert ImageStat.Stat(crop).stddev[0] > 5, "the image widget looks blank in the screenshot"


@dataclass
class Scenario:
    notebook: str  # in notebooks/
    act: Callable  # act(page): what a learner does after "Run All Cells", with its assertions


def play_holding_right(page) -> None:
    """06_play: reset, toggle →, press ▶ and see frames come (the frame count in the fps label rises, the picture
    changes), then pause and see them stop."""
    image = page.locator("img.widget-image").first  # the play view: 06's only image widget
    image.wait_for(state="attached", timeout=120_000)
    label = page.locator("div.widget-label", has_text="frame").first
    label.wait_for(state="attached", timeout=120_000)  # widget views render after the run: slow on a busy machine
    assert label.text_content().startswith("frame 30 "), \
        f"the notebook's last cell should have played 30 frames headless: {label.text_content()!r}"
    page.locator("button.widget-button", has_text="reset").first.click()
    page.wait_for_function("el => el.textContent.startsWith('frame 0 ')", arg=label.element_handle(), timeout=30_000)
    right = page.locator("button.widget-toggle-button", has_text="→").first
    if "mod-active" in (right.get_attribute("class") or ""):  # the headless cell left it held: start released
        right.click()
    right.click()
    page.wait_for_function("el => el.classList.contains('mod-active')", arg=right.element_handle(), timeout=10_000)
    before = image.get_attribute("src")
    page.locator(".widget-play button:has(i.fa-play)").first.click()  # ipywidgets.Play: the browser's timer
    frames = "el => Number((el.textContent.match(/^frame (\\d+)/) || [0, 0])[1])"
    page.wait_for_function(f"el => ({frames})(el) >= 10", arg=label.element_handle(), timeout=120_000)
    assert image.get_attribute("src") != before, "the picture did not change while playing"
    assert " · right · " in label.text_content(), f"the label should say right is held: {label.text_content()!r}"
    page.locator(".widget-play button:has(i.fa-pause)").first.click()
    time.sleep(2)  # a tick already sent may still arrive
    paused = label.text_content()
    time.sleep(3)
    assert label.text_content() == paused, f"frames kept coming after pause: {paused!r} -> {label.text_content()!r}"
    assert page.locator(".widget-html pre").count() == 0, "the play widget shows an error"
    screenshot(page, page.locator(".widget-play").first, "06_play")


SCENARIOS = [Scenario("05_generation.ipynb", generate_a_new_gif), Scenario("06_play.ipynb", play_holding_right)]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.notebook.removesuffix(".ipynb") for s in SCENARIOS])
def test_notebook_in_a_real_browser(scenario, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra has it)")
    with jupyterlab(tmp_path) as url, playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                    args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            open_and_run_all(page, url, scenario.notebook)
            scenario.act(page)
        finally:
            browser.close()
