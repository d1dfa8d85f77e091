"""Screenshot the report of a real run for the README (Playwright + Debian's /usr/bin/chromium).

    python scripts/screenshot.py                       # runs examples/predict_loop.py, writes docs/report.png
    python scripts/screenshot.py --report DIR|FILE     # screenshot an existing report instead
    python scripts/screenshot.py --full-page -o docs/report-full.png
    python scripts/screenshot.py --selector '#phases' --out-for docs/report-phases.png   # also one section

The run happens in a fresh process (``python -m tfdiag analyze``), exactly as a user would
start it; the page is opened from its file:// URL with the network off.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def chromium_path() -> str:
    for candidate in (shutil.which("chromium"), shutil.which("chromium-browser"), "/usr/bin/chromium"):
        if candidate and os.path.exists(candidate):
            return candidate
    raise SystemExit("screenshot: Debian's chromium is required (apt-get install chromium)")


def run_example(out: Path, script: str, script_args: list[str]) -> Path:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    command = [sys.executable, "-m", "tfdiag", "analyze", "--quiet", "-o", str(out), script, *script_args]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        raise SystemExit(f"screenshot: `{' '.join(command)}` exited with {result.returncode}")
    return out / "report.html"


def screenshot(report: Path, target: Path, width: int = 1280, height: int = 1500, full_page: bool = False,
               selector: str | None = None) -> Path:
    from playwright.sync_api import sync_playwright

    target.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height}, device_scale_factor=1)
            page.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file://")
                       else route.abort())
            page.goto(report.resolve().as_uri())
            page.wait_for_load_state("load")
            if selector:
                page.locator(selector).screenshot(path=str(target))
            else:
                page.screenshot(path=str(target), full_page=full_page)
        finally:
            browser.close()
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--report", help="an existing report (its folder or report.html); default: run an example")
    parser.add_argument("--script", default="examples/predict_loop.py", help="the example to run")
    parser.add_argument("-o", "--out", default=str(ROOT / "docs" / "report.png"), help="PNG to write")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1500, help="viewport height (ignored with --full-page)")
    parser.add_argument("--full-page", action="store_true")
    parser.add_argument("--selector", action="append", default=[], metavar="CSS",
                        help="also screenshot this element (e.g. '#phases'); repeatable, see --out-for")
    parser.add_argument("--out-for", action="append", default=[], metavar="PNG",
                        help="where the element of the matching --selector goes (default: OUT with a suffix)")
    parser.add_argument("script_args", nargs="*", default=None,
                        help="arguments for the example (default for predict_loop.py: --calls 20)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tfdiag-shot-") as tmp:
        if args.report:
            report = Path(args.report)
            report = report / "report.html" if report.is_dir() else report
        else:
            script_args = args.script_args or (["--calls", "20"] if args.script.endswith("predict_loop.py") else [])
            report = run_example(Path(tmp) / "report", args.script, script_args)
        print(screenshot(report, Path(args.out), args.width, args.height, args.full_page))
        for i, selector in enumerate(args.selector):
            out = Path(args.out_for[i]) if i < len(args.out_for) else Path(args.out).with_suffix(f".{i}.png")
            print(screenshot(report, out, args.width, args.height, selector=selector))
    return 0


if __name__ == "__main__":
    sys.exit(main())
