"""Full-page screenshots of the site, light and dark: ``nox -s screenshots``.

Builds the site (``mkdocs build --strict``) for a random free port of
127.0.0.1, so that site_url matches the address and Material's instant
navigation is active, serves it, opens every page in headless Chromium
(Debian's /usr/bin/chromium, driven by Playwright) in both colour schemes,
waits for the figures, and writes PNGs and a report of console errors and
requests that left 127.0.0.1 to build/screenshots/. ``--site DIR`` shows an
already built site instead.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
FIGURE_TIMEOUT_MS = 20_000


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def serve(
    site: Path, build: bool = False
) -> tuple[http.server.ThreadingHTTPServer, str]:
    """Serve ``site`` on a free port of 127.0.0.1, building it first if asked."""
    handler = functools.partial(QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    base = f"http://127.0.0.1:{server.server_port}/"
    if build:
        env = dict(os.environ, CARRYDEMO_SITE_URL=base, NO_MKDOCS_2_WARNING="1")
        command = [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)]
        subprocess.run(command, check=True, env=env)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, base


def site_pages(site: Path) -> list[str]:
    """Every page's URL path, from the built index.html files."""
    pages = []
    for path in sorted(site.rglob("index.html")):
        relative = path.parent.relative_to(site).as_posix()
        if relative.startswith(("assets", "search")) or relative == "404":
            continue
        pages.append("" if relative == "." else relative + "/")
    return pages


def shoot(page, url: str, out: Path, problems: list) -> None:
    """Open ``url``, wait for its figures to be drawn, save a full-page PNG."""
    page.goto(url, wait_until="networkidle")
    page.wait_for_function(
        "[...document.querySelectorAll('.cd-plot')].filter(d => d.offsetWidth > 0)"
        ".every(d => ['drawn', 'failed'].includes(d.dataset.state))",
        timeout=FIGURE_TIMEOUT_MS,
    )
    failed = page.locator(".cd-plot[data-state=failed]").count()
    if failed:
        problems.append(f"{url}: {failed} figure(s) failed to draw")
    raw_math = page.evaluate(
        "document.querySelector('.md-content').innerText.match(/\\$[^$\\s][^$]*\\$/g)"
    )
    if raw_math:
        problems.append(f"{url}: raw math left on the page: {raw_math[:3]}")
    wide = page.evaluate(
        "document.documentElement.scrollWidth > document.documentElement.clientWidth"
    )
    if wide:
        problems.append(f"{url}: the page scrolls sideways")
    page.screenshot(path=str(out), full_page=True)


def toggle_check(browser, base: str, out_dir: Path, problems: list) -> None:
    """Switch the scheme on the results page; the figure's text colour must follow."""
    page = browser.new_page(
        color_scheme="light", viewport={"width": 1280, "height": 900}
    )
    page.goto(base + "results/", wait_until="networkidle")
    page.wait_for_selector(".cd-plot[data-state=drawn]", timeout=FIGURE_TIMEOUT_MS)
    colour = (
        "() => document.querySelector('.cd-plot[data-state=drawn]')"
        "._fullLayout.font.color"
    )
    before = page.evaluate(colour)
    page.locator("label.md-header__button[for^='__palette']:visible").first.click()
    page.wait_for_timeout(500)
    after = page.evaluate(colour)
    if before == after:
        problems.append(f"results/: figure text stayed {before} after the toggle")
    page.screenshot(path=str(out_dir / "results.toggled-dark.png"), full_page=True)
    page.close()


def navigation_check(browser, base: str, problems: list) -> None:
    """Reach the results page by instant navigation; open the second tab."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(base, wait_until="networkidle")
    page.evaluate("window.carrydemoMarker = true")
    page.locator(".md-nav__link[href$='results/']").first.click()
    page.wait_for_url("**/results/")
    if not page.evaluate("window.carrydemoMarker === true"):
        problems.append("results/: reached by a full page load, not instant navigation")
    try:
        page.wait_for_selector(".cd-plot[data-state=drawn]", timeout=FIGURE_TIMEOUT_MS)
    except PlaywrightTimeout:
        problems.append("results/: no figure drawn after instant navigation")
    page.locator(".tabbed-labels label").nth(1).click()
    drawn = "() => document.querySelectorAll('.cd-plot[data-state=drawn]').length"
    try:
        page.wait_for_function(f"({drawn})() >= 2", timeout=FIGURE_TIMEOUT_MS)
        width = page.evaluate(
            "() => [...document.querySelectorAll('.cd-plot')]"
            ".map(d => d.querySelector('.main-svg')?.getAttribute('width'))"
        )
        if len(set(width)) != 1:
            problems.append(f"results/: figures in tabs differ in width: {width}")
    except PlaywrightTimeout:
        problems.append("results/: the figure in the second tab was not drawn")
    page.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--site", type=Path, help="show this built site (default: build one)"
    )
    parser.add_argument("--out", type=Path, default=Path("build/screenshots"))
    parser.add_argument("--width", type=int, default=1280)
    args = parser.parse_args(argv)
    build = args.site is None
    site = args.out / "site" if build else args.site
    if not build and not (site / "index.html").exists():
        print(f"screenshots: no site at {site}; run `nox -s docs`", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    server, base = serve(site, build=build)
    problems, outside = [], set()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
            )
            for scheme in ("light", "dark"):
                page = browser.new_page(
                    color_scheme=scheme, viewport={"width": args.width, "height": 900}
                )
                page.on(
                    "console",
                    lambda m: (
                        m.type == "error" and problems.append(f"console: {m.text}")
                    ),
                )
                page.on(
                    "request",
                    lambda r: (
                        r.url.startswith(base)
                        or r.url.startswith("data:")
                        or outside.add(r.url)
                    ),
                )
                for path in site_pages(site):
                    name = (
                        path.strip("/").replace("/", "-") or "home"
                    ) + f".{scheme}.png"
                    shoot(page, base + path, args.out / name, problems)
                page.close()
            toggle_check(browser, base, args.out, problems)
            navigation_check(browser, base, problems)
            browser.close()
    finally:
        server.shutdown()
    problems += [f"request outside the site: {url}" for url in sorted(outside)]
    report = {"pages": site_pages(site), "problems": problems}
    (args.out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    print("\n".join(problems) or "no problems found")
    print(f"screenshots in {args.out}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
