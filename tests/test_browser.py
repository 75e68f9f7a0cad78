"""The built site in headless Chromium: pages, figures, math, the Try it page.

A session fixture trains a tiny real run, draws its figures, builds the site
with ``mkdocs build --strict`` and serves it on 127.0.0.1; the tests drive
Debian's chromium through Playwright. Without /usr/bin/chromium they are
skipped on a workstation and fail in CI (where the variable CI is set).
"""

from __future__ import annotations

import copy
import functools
import http.server
import json
import os
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from carrydemo import models, results
from carrydemo.webexport import MAX_RNN_DIGITS

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TINY_RUN = ["--seeds", "0", "--epochs", "30", "--eval-every", "10"]
SCHEMES = ("light", "dark")
PARITY_INPUTS = 1000  # random sums per model
# Below this gap between its best two log-probabilities, float32 rounding may
# decide a digit: PyTorch and the page may then differ and both be right.
TIE_MARGIN = 1e-5
MIN_CONTRAST = 4.5  # WCAG AA for body text
PAGE_BUDGET = 1_500_000  # bytes per page, the shared plotly.js not counted
SEARCH_INDEX_BUDGET = 1_000_000
SHARED_SCRIPTS = ("plotly.min.js",)


# --- the site under test ----------------------------------------------------


@dataclass(frozen=True)
class Site:
    origin: str  # http://127.0.0.1:PORT, no trailing slash
    site_dir: Path
    results_dir: Path
    pages: tuple[str, ...]  # every page's URL, from sitemap.xml

    def url(self, path: str = "/") -> str:
        return self.origin + path


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


def run_step(args: list[str], env: dict) -> None:
    """Run one build step; on failure show its output in the test report."""
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")


def build_site(tmp: Path, origin: str) -> tuple[Path, Path]:
    """Train a tiny run, draw its figures and build the site; return the dirs."""
    results_dir, figures_dir, site_dir = tmp / "results", tmp / "figures", tmp / "site"
    env = os.environ | {
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])
        ),
        "CARRYDEMO_RESULTS": str(results_dir),
        "CARRYDEMO_FIGURES": str(figures_dir),
        "CARRYDEMO_SITE_URL": origin + "/",
        "NO_MKDOCS_2_WARNING": "1",
    }
    python = sys.executable
    run_step(
        [python, "-m", "carrydemo", "train", *TINY_RUN, "--out", str(results_dir)], env
    )
    figures = ["figures", "--results", str(results_dir), "--out", str(figures_dir)]
    run_step([python, "-m", "carrydemo", *figures], env)
    run_step(
        [python, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site_dir)], env
    )
    return results_dir, site_dir


def sitemap_pages(site_dir: Path) -> tuple[str, ...]:
    tree = ElementTree.parse(site_dir / "sitemap.xml")
    namespace = {"s": "http://www.sitemaps.org/schemas/sitemap/0.9"}
    return tuple(loc.text for loc in tree.findall("s:url/s:loc", namespace))


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Site:
    tmp = tmp_path_factory.mktemp("browser")
    (tmp / "site").mkdir()
    handler = functools.partial(QuietHandler, directory=str(tmp / "site"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    origin = f"http://127.0.0.1:{server.server_address[1]}"
    # site_url is the served origin: Material's instant navigation only takes
    # over links that sitemap.xml lists under the origin it is served from.
    results_dir, site_dir = build_site(tmp, origin)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Site(origin, site_dir, results_dir, sitemap_pages(site_dir))
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def browser():
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing; install it with `apt-get install chromium`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


class Tab:
    """A page in a fresh context that records console errors and every request."""

    def __init__(self, browser, site: Site, scheme: str = "light"):
        self.context = browser.new_context(
            color_scheme=scheme, viewport={"width": 1280, "height": 900}
        )
        self.page = self.context.new_page()
        self.site = site
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.responses: list = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.on("response", lambda response: self.responses.append(response))

    def _console(self, message) -> None:
        if message.type in ("error", "warning") and "[Deprecation]" not in message.text:
            self.errors.append(f"{message.type}: {message.text} ({message.location})")

    def goto(self, url: str) -> None:
        response = self.page.goto(url, wait_until="load")
        assert response is not None and response.status == 200, url
        self.page.wait_for_load_state("networkidle")

    def foreign_requests(self) -> list[str]:
        local = (self.site.origin + "/", "data:", "blob:", "about:")
        return [url for url in self.requests if not url.startswith(local)]

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def tab(browser, site):
    opened = Tab(browser, site)
    yield opened
    opened.close()


def page_path(site: Site, url: str) -> str:
    assert url.startswith(site.origin + "/"), f"{url} is outside {site.origin}"
    return url[len(site.origin) :]


# --- every page, visited once ---------------------------------------------

# Everything a page links to or loads from, as absolute URLs.
LINKED = """() => Array.from(
  document.querySelectorAll("a[href], link[href], [src], [data-figure]"),
  (el) => el.href || el.src || new URL(el.dataset.figure, location.href).href
)"""
# Scripts, styles and images the page names, loaded or not.
RESOURCES = """() => Array.from(
  document.querySelectorAll("script[src], link[rel=stylesheet], img[src], iframe[src]"),
  (el) => el.src || el.href
)"""
# The article's visible text, code and rendered math left out.
VISIBLE_TEXT = """() => {
  const skip = "pre, code, script, style, math, .cd-plot, .jp-Cell";
  const article = document.querySelector("article");
  const walker = document.createTreeWalker(article, NodeFilter.SHOW_TEXT);
  const parts = [];
  while (walker.nextNode()) {
    const node = walker.currentNode;
    if (!node.parentElement.closest(skip)) parts.push(node.data);
  }
  return parts.join(" ");
}"""


@dataclass(frozen=True)
class PageVisit:
    errors: list[str]
    foreign_requests: list[str]
    weight: int  # bytes loaded, the shared plotly.js not counted
    links: list[str]
    resources: list[str]
    text: str
    math_elements: int


def page_weight(tab: Tab) -> int:
    total = 0
    for response in tab.responses:
        if response.url.startswith("data:") or response.url.endswith(SHARED_SCRIPTS):
            continue
        total += len(response.body())
    return total


@pytest.fixture(scope="session")
def tour(browser, site) -> dict[str, PageVisit]:
    """Load every page of the sitemap once, each in a fresh context."""
    visits = {}
    for url in site.pages:
        tab = Tab(browser, site)
        tab.goto(url)
        visits[page_path(site, url)] = PageVisit(
            errors=list(tab.errors),
            foreign_requests=tab.foreign_requests(),
            weight=page_weight(tab),
            links=tab.page.evaluate(LINKED),
            resources=tab.page.evaluate(RESOURCES),
            text=tab.page.evaluate(VISIBLE_TEXT),
            math_elements=tab.page.locator("article math").count(),
        )
        tab.close()
    return visits


def test_sitemap_lists_pages_under_the_served_origin(site):
    assert len(site.pages) >= 2
    for url in site.pages:
        page_path(site, url)


def test_every_page_loads_without_console_errors(tour):
    assert {path: v.errors for path, v in tour.items() if v.errors} == {}


def test_no_page_asks_another_host(tour):
    asked = {path: v.foreign_requests for path, v in tour.items() if v.foreign_requests}
    assert asked == {}


def test_every_resource_a_page_names_is_local(tour, site):
    foreign = {
        path: [url for url in visit.resources if not url.startswith(site.origin)]
        for path, visit in tour.items()
    }
    assert {path: urls for path, urls in foreign.items() if urls} == {}


def test_every_page_fits_the_weight_budget(tour):
    weights = {path: visit.weight for path, visit in tour.items()}
    print("page weights (bytes):", json.dumps(weights, indent=1))
    assert {path: w for path, w in weights.items() if w > PAGE_BUDGET} == {}


def test_search_index_fits_its_budget(site):
    size = (site.site_dir / "search" / "search_index.json").stat().st_size
    print(f"search index: {size} bytes")
    assert size < SEARCH_INDEX_BUDGET


def status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_no_internal_link_is_broken(tour, site):
    targets = {
        link.split("#")[0]
        for visit in tour.values()
        for link in visit.links
        if link.startswith(site.origin + "/")
    }
    assert len(targets) > len(tour)
    broken = {target: status_of(target) for target in sorted(targets)}
    assert {target: code for target, code in broken.items() if code != 200} == {}


RAW_MATH = re.compile(r"\\\(|\\\[|\$\$|(?<![\w$])\$[^$\s][^$]*\$")
CODE = re.compile(r"^```.*?^```|`[^`\n]+`", re.MULTILINE | re.DOTALL)


def source_has_math(path: str) -> bool:
    """Whether a page's Markdown (code left out) writes any math.

    A page marked ``requires: study`` is replaced by a note when the site is
    built without study results, as the test site is; its math is not shown.
    """
    path = path.strip("/")
    names = [f"{path}.md", f"{path}/index.md"] if path else ["index.md"]
    sources = [ROOT / "docs" / name for name in names]
    source = next((source for source in sources if source.exists()), None)
    if source is None:  # a notebook; it writes no math, MathJax is not served
        return False
    text = source.read_text()
    if re.search(r"^requires: study$", text, re.MULTILINE):
        return False
    return bool(RAW_MATH.search(CODE.sub("", text)))


def test_no_math_is_left_unrendered(tour):
    raw = {path: RAW_MATH.findall(v.text) for path, v in tour.items()}
    assert {path: found for path, found in raw.items() if found} == {}
    with_math = [path for path in tour if source_has_math(path)]
    assert with_math, "no page writes math; the check would prove nothing"
    assert [path for path in with_math if tour[path].math_elements == 0] == []


# --- figures ------------------------------------------------------------------

# For every drawn Plotly figure: how many traces it drew, whether it fills its
# box, and the contrast between its text and what lies behind it (a
# transparent paper shows the page).
FIGURE_REPORT = """() => {
  function rgba(colour) {
    const probe = document.createElement("span");
    probe.style.color = colour;
    document.body.appendChild(probe);
    const parts = getComputedStyle(probe).color.match(/[\\d.]+/g).map(Number);
    probe.remove();
    return parts.length === 3 ? parts.concat([1]) : parts;
  }
  function over(top, bottom) {
    const a = top[3];
    return [0, 1, 2].map((i) => top[i] * a + bottom[i] * (1 - a)).concat([1]);
  }
  function luminance(c) {
    const l = c.slice(0, 3).map((v) => {
      v /= 255;
      return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
    });
    return 0.2126 * l[0] + 0.7152 * l[1] + 0.0722 * l[2];
  }
  function contrast(a, b) {
    const [hi, lo] = [luminance(a), luminance(b)].sort((x, y) => y - x);
    return (hi + 0.05) / (lo + 0.05);
  }
  const page = rgba(getComputedStyle(document.body).backgroundColor);
  return Array.from(document.querySelectorAll(".cd-plot"), (plot, index) => {
    if (plot.offsetWidth === 0) return { index: index, visible: false };
    const layout = plot._fullLayout;
    if (!layout) return { index: index, visible: true, drawn: false };
    const paper = over(rgba(layout.paper_bgcolor), page);
    const svg = plot.querySelector(".main-svg").getBoundingClientRect();
    return {
      index: index,
      visible: true,
      drawn: true,
      traces: plot.querySelectorAll("g.trace").length,
      fills_width: Math.abs(svg.width - plot.getBoundingClientRect().width) < 2,
      contrast: contrast(over(rgba(layout.font.color), paper), paper),
      scheme: document.body.getAttribute("data-md-color-scheme"),
    };
  });
}"""
ALL_VISIBLE_DRAWN = """() => Array.from(document.querySelectorAll(".cd-plot"))
  .filter((plot) => plot.offsetWidth > 0)
  .every((plot) => plot.querySelector(".main-svg g.trace"))"""


def figure_pages(site: Site) -> list[str]:
    """Pages whose HTML holds a Plotly figure element."""
    pages = []
    for url in site.pages:
        html = site.site_dir / page_path(site, url).lstrip("/") / "index.html"
        if 'class="cd-plot"' in html.read_text():
            pages.append(url)
    return pages


def figure_reports(tab: Tab) -> dict[int, dict]:
    """Every figure of the page, after showing each tab that may hide one."""
    reports = {}
    labels = tab.page.locator(".tabbed-labels > label")
    for number in range(labels.count() + 1):
        if number:
            labels.nth(number - 1).click()
        tab.page.wait_for_function(ALL_VISIBLE_DRAWN, timeout=15_000)
        for report in tab.page.evaluate(FIGURE_REPORT):
            if report["visible"]:
                reports[report["index"]] = report
    assert len(reports) == tab.page.locator(".cd-plot").count(), "a figure never showed"
    return reports


def check_figures(reports: dict[int, dict], scheme: str, where: str) -> None:
    expected_scheme = "slate" if scheme == "dark" else "default"
    for number, figure in reports.items():
        described = f"{where}: figure {number}: {figure}"
        assert figure["drawn"] and figure["traces"] > 0, described
        assert figure["fills_width"], described
        assert figure["scheme"] == expected_scheme, described
        assert figure["contrast"] >= MIN_CONTRAST, described


@pytest.mark.parametrize("scheme", SCHEMES)
def test_figures_draw_and_read_on_direct_load(browser, site, scheme):
    pages = figure_pages(site)
    assert pages, "no page has a Plotly figure"
    for url in pages:
        tab = Tab(browser, site, scheme)
        tab.goto(url)
        check_figures(figure_reports(tab), scheme, url)
        assert tab.errors == []
        tab.close()


def navigate_in_site(tab: Tab, url: str) -> None:
    """Click the navigation link to ``url`` and check it was not a full load."""
    tab.page.evaluate("window.carrydemoTestMarker = 'still here'")
    links = tab.page.locator(".md-sidebar--primary a.md-nav__link")
    hrefs = links.evaluate_all("(all) => all.map((a) => a.href)")
    assert url in hrefs, f"no navigation link to {url} in {hrefs}"
    links.nth(hrefs.index(url)).click()
    tab.page.wait_for_function("(url) => location.href === url", arg=url)
    tab.page.wait_for_load_state("networkidle")
    marker = tab.page.evaluate("window.carrydemoTestMarker")
    assert marker == "still here", f"clicking to {url} reloaded the page"


@pytest.mark.parametrize("scheme", SCHEMES)
def test_figures_draw_after_instant_navigation(browser, site, scheme):
    tab = Tab(browser, site, scheme)
    tab.goto(site.pages[0])
    for url in figure_pages(site):
        if tab.page.url == url:  # leave the page first, then come back by a link
            navigate_in_site(tab, next(other for other in site.pages if other != url))
        navigate_in_site(tab, url)
        check_figures(figure_reports(tab), scheme, f"after clicking to {url}")
    assert tab.errors == []
    tab.close()


def test_figures_follow_the_colour_toggle(browser, site):
    tab = Tab(browser, site, "light")
    tab.goto(figure_pages(site)[0])
    figure_reports(tab)
    tab.page.locator("form[data-md-component=palette] label:visible").first.click()
    tab.page.wait_for_function(
        "document.body.getAttribute('data-md-color-scheme') === 'slate'"
    )
    tab.page.wait_for_timeout(300)  # the restyle runs on the attribute change
    check_figures(figure_reports(tab), "dark", "after switching to dark")
    assert tab.errors == []
    tab.close()


# --- the Try it page ----------------------------------------------------------


def try_url(site: Site) -> str:
    return next(url for url in site.pages if url.rstrip("/").endswith("/try"))


@pytest.fixture
def try_page(tab, site) -> Tab:
    tab.goto(try_url(site))
    tab.page.evaluate("window.carrydemo.ready.then(() => true)")
    return tab


def random_sums(rng, count: int, max_digits: int) -> list[tuple[str, str]]:
    """Random pairs of digit strings, each 1 to ``max_digits`` long."""
    pairs = []
    for _ in range(count):
        lengths = rng.integers(1, max_digits + 1, size=2)
        a, b = ("".join(map(str, rng.integers(0, 10, size=n))) for n in lengths)
        pairs.append((a, b))
    return pairs


def pair_features(pairs: list[tuple[str, str]], steps: int) -> torch.Tensor:
    """Digit pairs, units first, each number padded with zeros to ``steps``."""
    return torch.tensor(
        [
            [
                [int(x), int(y)]
                for x, y in zip(a.zfill(steps), b.zfill(steps), strict=True)
            ][::-1]
            for a, b in pairs
        ],
        dtype=torch.float32,
    )


def float64_log_probs(network, features: torch.Tensor) -> torch.Tensor:
    """The same network evaluated in float64: the page's own precision."""
    twin = copy.deepcopy(network).double()
    if isinstance(twin, models.ElmanRNN):
        initial = torch.zeros(1, len(features), twin.config.hidden_size).double()
        states, _ = twin.rnn(features.double(), initial)
        return torch.log_softmax(twin.output(states), dim=-1)
    return twin(features.double())


@dataclass(frozen=True)
class TorchAnswer:
    digits: str  # float32, as models.predict gives it; most significant first
    digits64: str  # the same weights in float64
    margins: tuple[float, ...]  # float32 gap between the best two log-probs


def as_number(row) -> str:
    return "".join(str(d) for d in reversed(row))


@torch.no_grad()
def torch_answers(network, pairs, num_digits: int | None) -> list[TorchAnswer]:
    """PyTorch's answers, in batches of equal length (the MLP's is fixed)."""
    answers: list = [None] * len(pairs)
    by_length: dict[int, list[int]] = {}
    for index, (a, b) in enumerate(pairs):
        by_length.setdefault(num_digits or max(len(a), len(b)), []).append(index)
    for steps, indices in by_length.items():
        features = pair_features([pairs[i] for i in indices], steps)
        top_two = network(features).topk(2, dim=-1).values
        margins = (top_two[..., 0] - top_two[..., 1]).flip(-1)
        digits = models.predict(network, features)
        digits64 = float64_log_probs(network, features).argmax(dim=-1)
        for row, i in enumerate(indices):
            answers[i] = TorchAnswer(
                as_number(digits[row].tolist()),
                as_number(digits64[row].tolist()),
                tuple(margins[row].tolist()),
            )
    return answers


def is_near_tie(answer: TorchAnswer, page_digits: str) -> bool:
    """Whether every digit where the page differs is a float32 near-tie."""
    return all(
        margin < TIE_MARGIN
        for ours, theirs, margin in zip(
            page_digits, answer.digits, answer.margins, strict=True
        )
        if ours != theirs
    )


PREDICT_ALL = """([name, pairs]) =>
  pairs.map(([a, b]) => window.carrydemo.predict(name, a, b))"""


@pytest.mark.parametrize("name", models.MODEL_NAMES)
def test_try_page_agrees_with_pytorch(try_page, site, name):
    network = results.load_trained_model(site.results_dir, name)
    num_digits = results.load_metrics(site.results_dir)["config"]["num_digits"]
    rng = np.random.default_rng(20261204)
    max_digits = num_digits if name == "mlp" else MAX_RNN_DIGITS
    pairs = random_sums(rng, PARITY_INPUTS, max_digits)
    expected = torch_answers(network, pairs, num_digits if name == "mlp" else None)
    got = try_page.page.evaluate(PREDICT_ALL, [name, pairs])

    # the page computes in float64: it must match PyTorch in float64 exactly,
    # and PyTorch's float32 answers except where two digits (nearly) tie
    differs = [i for i, answer in enumerate(expected) if answer.digits != got[i]]
    print(f"{name}: {len(pairs)} inputs, {len(differs)} differ from float32")
    assert [i for i, answer in enumerate(expected) if answer.digits64 != got[i]] == []
    assert [pairs[i] for i in differs if not is_near_tie(expected[i], got[i])] == []
    assert len(differs) <= len(pairs) // 100
    assert try_page.errors == []


BAD_CALLS = [
    (["rnn", "", "1"], "empty"),
    (["rnn", "12a", "1"], "not a number"),
    (["rnn", "1", "-5"], "not a number"),
    (["rnn", "1" * (MAX_RNN_DIGITS + 1), "1"], "at most"),
    (["mlp", "1234", "1"], "at most"),
    (["cnn", "1", "2"], "unknown model"),
    (["rnn", 12, "1"], "string"),
]


@pytest.mark.parametrize(("arguments", "message"), BAD_CALLS)
def test_predict_rejects_bad_arguments_with_an_error(try_page, arguments, message):
    thrown = try_page.page.evaluate(
        """(args) => {
          try { window.carrydemo.predict(...args); return null; }
          catch (error) { return [error instanceof Error, error.message]; }
        }""",
        arguments,
    )
    assert thrown is not None, f"{arguments} was accepted"
    is_error, text = thrown
    assert is_error and message in text


@pytest.mark.parametrize("typed", ["", "12a", "1" * (MAX_RNN_DIGITS + 1), "4 4"])
def test_form_shows_a_message_for_bad_input(try_page, typed):
    try_page.page.fill("input[name=a]", typed)
    message = try_page.page.locator("section[data-model=rnn] .carrydemo-message")
    assert message.is_visible()
    assert message.inner_text().strip() != ""
    assert try_page.errors == []


def test_try_page_works_after_instant_navigation(browser, site):
    tab = Tab(browser, site, "dark")
    tab.goto(site.pages[0])
    navigate_in_site(tab, try_url(site))
    tab.page.evaluate("window.carrydemo.ready.then(() => true)")
    tab.page.fill("input[name=a]", "438")
    tab.page.fill("input[name=b]", "540")
    shown = tab.page.locator("section[data-model=mlp] .carrydemo-digits")
    expected = tab.page.evaluate("window.carrydemo.predict('mlp', '438', '540')")
    assert shown.inner_text() == expected
    assert tab.errors == []
    tab.close()


def test_form_shows_both_answers(try_page):
    try_page.page.fill("input[name=a]", "0955")
    try_page.page.fill("input[name=b]", "0397")
    rnn = try_page.page.evaluate("window.carrydemo.predict('rnn', '0955', '0397')")
    shown = try_page.page.locator(
        "section[data-model=rnn] .carrydemo-digits"
    ).inner_text()
    assert shown == rnn
    assert (
        try_page.page.locator("section[data-model=mlp] .carrydemo-message").count() == 1
    )
    assert try_page.page.locator("section[data-model=rnn] table").count() == 2
