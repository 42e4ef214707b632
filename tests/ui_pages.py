"""What a user opens in MLflow's UI, in a real Chromium: a real `mlflow ui` on 127.0.0.1 and Playwright
(from PyPI) driving Debian's `chromium` (never `playwright install`). Shared by the browser test and
`scripts/screenshots.py`."""
import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ML = "workflowType=machine_learning"  # MLflow 3's classic (model training) UI


def browser_problem():
    """Why no browser can be driven here (None when one can)."""
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[test]')"
    if not os.path.exists(CHROMIUM):
        return f"no Chromium at {CHROMIUM} (apt-get install -y chromium; scripts/setup.sh does it as root)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def mlflow_ui(db: Path, log: Path, port: int = 0):
    """`mlflow ui` on a SQLite store; yields its base URL once it answers."""
    port = port or free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", f"sqlite:///{db}",
                             "--host", "127.0.0.1", "--port", str(port)],
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, cwd=db.parent,
                            # (MLflow 3's GenAI job runner: seven more processes that nothing here uses)
                            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            try:
                if urllib.request.urlopen(f"{url}/health", timeout=2).status == 200:
                    break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    raise RuntimeError("mlflow ui did not start: " + log.read_text()[-2000:])
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@contextmanager
def chromium_page(width: int = 1400, height: int = 900):
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(60_000)
            yield page
        finally:
            browser.close()


def open_page(page, url: str, waits_for: str) -> str:
    """Go to `url`, wait until `waits_for` shows, close MLflow's assistant panel; returns the page's text."""
    page.goto(url)
    page.get_by_text(waits_for).first.wait_for()
    close = page.get_by_role("button", name="Close")
    if close.count():
        close.last.click()
    page.wait_for_timeout(500)
    return page.inner_text("body")


def scroll_to(page, selector: str, tries: int = 40):
    """Scroll the charts (MLflow renders cards only near the viewport) until `selector` exists."""
    page.mouse.move(page.viewport_size["width"] * 0.7, page.viewport_size["height"] * 0.6)
    for _ in range(tries):
        if page.locator(selector).count():
            return page.locator(selector).first
        page.mouse.wheel(0, 500)
        page.wait_for_timeout(300)
    raise AssertionError(f"{selector} never appeared on {page.url}")


def sidebar_is_classic(text: str) -> bool:
    """MLflow 3's model-training sidebar (Runs, Models, Model registry), not the GenAI one."""
    return "Model registry" in text and "AI Gateway" not in text and "Prompts" not in text


def image_shown(locator) -> tuple:
    """(natural width, rendered width, rendered height) of an <img> once it has loaded."""
    locator.wait_for()
    locator.page.wait_for_function("e => e.complete && e.naturalWidth > 0", arg=locator.element_handle())
    return tuple(locator.evaluate("e => [e.naturalWidth, e.clientWidth, e.clientHeight]"))
