"""Drive the demo in headless Chromium: start it, type a description, submit, wait for the ranked gallery, and save
a screenshot. Used by the browser test and to make docs/images/demo.png:

    python -m demo.screenshot --index INDEX_DIR [--model FOLDER_OR_HUB_ID] --query "a man in a red coat" \\
        --output docs/images/demo.png

Needs playwright (`pip install "ivt-hf[demo]"`) and a Chromium binary (Debian: `apt-get install chromium`); no browser
is downloaded.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from modeling_ivt.cli import CommandParser, user_errors
from modeling_ivt.safe_io import atomic_output

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def find_chromium() -> str | None:
    """The Chromium executable on PATH (Debian names it `chromium`), or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def running_demo(
    index_dir: str | os.PathLike | None = None,
    model: str | None = None,
    app_dir: str | os.PathLike | None = None,
    timeout_s: float = 120,
):
    """
    Start the demo's `app.py` on 127.0.0.1 and a free port: this repository's demo/ by default, or a Space folder
    made by `demo.build_space` (`app_dir`, run with its own copy of the packages). Yields the URL once the app answers
    and stops it afterwards; if it does not come up, the error carries the end of its output.
    """
    port = free_port()
    repository = Path(__file__).resolve().parents[1]
    app_dir = Path(app_dir) if app_dir else repository / "demo"
    command = [sys.executable, "app.py", "--port", str(port), "--host", "127.0.0.1"]
    if index_dir:
        command += ["--index", str(Path(index_dir).resolve())]
    if model:
        command += ["--model", str(model)]
    env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    if app_dir == repository / "demo":
        env["PYTHONPATH"] = str(repository)
    url = f"http://127.0.0.1:{port}/"
    with tempfile.TemporaryFile(mode="w+", prefix="ivt-demo-", suffix=".log") as log:
        process = subprocess.Popen(command, cwd=app_dir, env=env, stdout=log, stderr=subprocess.STDOUT)

        def output_tail() -> str:
            log.seek(0)
            return log.read()[-3000:]

        try:
            deadline = time.monotonic() + timeout_s
            while True:
                if process.poll() is not None:
                    raise RuntimeError(
                        f"the demo exited with code {process.returncode} before serving {url}:\n{output_tail()}"
                    )
                try:
                    with urllib.request.urlopen(url, timeout=2) as response:
                        if response.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the demo did not answer at {url} within {timeout_s} s:\n{output_tail()}")
                time.sleep(0.5)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def capture_search(
    url: str, query: str, output: str | os.PathLike, chromium: str, timeout_s: float = 90
) -> tuple[int, str]:
    """Type `query` into the demo at `url`, press Search, wait for results, save a full-page PNG at `output`; returns
    how many result images the page shows and the text of the results panel."""
    from playwright.sync_api import sync_playwright

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ivt-demo-chromium-") as profile, sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=chromium,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            page = browser.new_page()
            page.goto(url, wait_until="domcontentloaded", timeout=timeout_s * 1000)
            page.locator("#description textarea").fill(query, timeout=timeout_s * 1000)
            page.locator("#search").click()
            images = page.locator("#results img")
            images.first.wait_for(state="visible", timeout=timeout_s * 1000)
            page.wait_for_function(
                "() => [...document.querySelectorAll('#results img')].every(img => img.complete && img.naturalWidth > 0)",
                timeout=timeout_s * 1000,
            )
            count, text = images.count(), page.locator("#results").inner_text()
            with atomic_output(output) as partial:
                page.screenshot(path=str(partial), full_page=True, type="png")
        finally:
            browser.close()
    return count, text


def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(prog="python -m demo.screenshot", description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", help="an index folder (default: the app's own, e.g. in a Space folder)")
    parser.add_argument("--model", help="default: the model recorded in the index")
    parser.add_argument("--app-dir", help="a Space folder made by demo.build_space (default: this repository's demo/)")
    parser.add_argument("--query", required=True)
    parser.add_argument("--output", default="docs/images/demo.png")
    parser.add_argument("--chromium", default=find_chromium())
    args = parser.parse_args(argv)
    if not args.chromium:
        parser.error("no chromium on PATH: install it (apt-get install chromium) or pass --chromium")
    with user_errors(), running_demo(args.index, args.model, args.app_dir) as url:
        count, _ = capture_search(url, args.query, args.output, args.chromium)
    print(f"{count} results shown; screenshot -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
