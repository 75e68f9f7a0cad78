"""The MkDocs hook that fills a page's placeholders from the results.

Listed under ``hooks:`` in mkdocs.yml. A page writes

    {{ value: metrics.models.rnn.test_accuracy | percent }}
    {{ figure: learning_curves_rnn }}
    {{ table: predictions }}

and the build replaces each placeholder with a number read from the results
folder, a figure or a table drawn by ``python -m carrydemo figures`` (see
``carrydemo/figures.py``). Placeholders inside code spans and fenced code are
left alone, so a page can show the syntax. An unknown name is a warning (so
``mkdocs build --strict`` fails) that lists the known names; missing results
stop the build with the command that makes them. The hook never trains.

It also serves everything offline: the figure files and the plotly.min.js of
the installed plotly package are added to the site, and ``$...$`` math (from
pymdownx.arithmatex's generic output) is turned into MathML at build time.

Environment variables, for tests and publishing: ``CARRYDEMO_RESULTS`` (the
results folder, default build/results), ``CARRYDEMO_FIGURES`` (the figures
folder, default build/figures), ``CARRYDEMO_SITE_URL`` (overrides site_url).
"""

from __future__ import annotations

import html
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import latex2mathml.converter
import plotly
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File
from mkdocs.utils import get_relative_url

from carrydemo.figures import source_hashes
from carrydemo.results import TRAIN_COMMAND, ResultsError, load_metrics

log = logging.getLogger("mkdocs.hooks.carrydemo")

FIGURES_COMMAND = "python -m carrydemo figures"
SOURCES = {
    "metrics": TRAIN_COMMAND,
    "manifest": TRAIN_COMMAND,
    "study": "nox -s study",
    "bench": "nox -s bench",
}
FIGURES_URL = "assets/figures"
PLOTLY_URL = "assets/javascripts/plotly.min.js"
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"

# A fenced block or a code span (kept as they are), or a placeholder.
TOKENS = re.compile(
    r"(?P<fence>^[ \t]*(?P<ticks>`{3,}|~{3,})[^\n]*\n.*?^[ \t]*(?P=ticks)[ \t]*$)"
    r"|(?P<code>(?P<backticks>`+)[^`\n].*?(?P=backticks))"
    r"|\{\{\s*(?P<kind>[a-z]+)\s*:\s*(?P<name>[^|}]*?)\s*"
    r"(?:\|\s*(?P<format>[^}]*?)\s*)?\}\}",
    re.MULTILINE | re.DOTALL,
)
MATH = re.compile(
    r'<(?P<tag>span|div) class="arithmatex">\s*'
    r"(?:\\\((?P<inline>.*?)\\\)|\\\[(?P<block>.*?)\\\])\s*</(?P=tag)>",
    re.DOTALL,
)


# --- number formats ---------------------------------------------------------


def format_value(value, style: str) -> str:
    """Write a number from the results in one of the placeholder formats."""
    if style == "raw":
        if isinstance(value, list):
            return ", ".join(str(item) for item in value)
        return str(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{value!r} is not a number; use the format raw")
    if style == "percent":
        return f"{value:.2%}"
    if style == "int":
        return f"{round(value):,}"
    if style == "seconds":
        return f"{value:,.1f} s"
    if re.fullmatch(r"float[1-4]", style):
        return f"{value:,.{style[-1]}f}"
    raise ValueError(f"unknown format {style!r}")


FORMATS = ("percent", "int", "float1", "float2", "float3", "float4", "seconds", "raw")


# --- the build's state ------------------------------------------------------


@dataclass
class Build:
    """Where this build reads from, and what it found there."""

    results_dir: Path
    figures_dir: Path
    index: dict
    sources: dict

    def source(self, name: str) -> dict:
        """A results file by source name; raise naming the command that makes it."""
        if name not in SOURCES:
            known = ", ".join(SOURCES)
            raise LookupError(f"unknown source {name!r}; known sources: {known}")
        if name not in self.sources:
            path = self.results_dir / f"{name}.json"
            if not path.exists():
                raise LookupError(f"no {path}; run `{SOURCES[name]}` to make it")
            self.sources[name] = json.loads(path.read_text())
        return self.sources[name]


BUILD: Build | None = None


def load_build() -> Build:
    """Check results and figures; stop the build naming the command that fixes it."""
    results_dir = Path(os.environ.get("CARRYDEMO_RESULTS", "build/results"))
    figures_dir = Path(os.environ.get("CARRYDEMO_FIGURES", "build/figures"))
    try:
        metrics = load_metrics(results_dir)
    except ResultsError as error:
        raise PluginError(
            f"carrydemo: {error} (every number of the site comes from there)"
        ) from None
    index_path = figures_dir / "index.json"
    if not index_path.exists():
        raise PluginError(
            f"carrydemo: no figures at {figures_dir}; run `{FIGURES_COMMAND}` "
            "(nox -s docs runs it before building)"
        )
    index = json.loads(index_path.read_text())
    if index.get("sources") != source_hashes(results_dir):
        raise PluginError(
            f"carrydemo: the figures in {figures_dir} were drawn from other results "
            f"than {results_dir}; run `{FIGURES_COMMAND} --results {results_dir} "
            f"--out {figures_dir}`"
        )
    return Build(results_dir, figures_dir, index, {"metrics": metrics})


# --- placeholders -----------------------------------------------------------


def lookup(build: Build, dotted: str):
    """Follow ``source.key.key`` (list items by number) into a results file."""
    source, *keys = dotted.split(".")
    value = build.source(source)
    for depth, key in enumerate(keys):
        if isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        elif isinstance(value, dict) and key in value:
            value = value[key]
        else:
            where = ".".join([source, *keys[:depth]])
            known = (
                ", ".join(map(str, value))
                if isinstance(value, dict)
                else (f"0..{len(value) - 1}" if isinstance(value, list) else "nothing")
            )
            raise LookupError(f"{where} has no {key!r}; it has: {known}")
    return value


def substitute(markdown: str, build: Build, page_url: str) -> tuple[str, list[str]]:
    """Replace every placeholder; return the new text and the problems found."""
    problems = []

    def replace(match: re.Match) -> str:
        if match["fence"] or match["code"]:
            return match[0]
        try:
            return render_placeholder(match, build, page_url)
        except (LookupError, ValueError) as error:
            problems.append(f"{match[0]}: {error}")
            return f"**[{html.escape(match[0])}: {html.escape(str(error))}]**"

    return TOKENS.sub(replace, markdown), problems


def render_placeholder(match: re.Match, build: Build, page_url: str) -> str:
    kind, name = match["kind"], match["name"]
    if kind == "value":
        style = match["format"] or "raw"
        if style not in FORMATS:
            raise ValueError(f"unknown format {style!r}; known: {', '.join(FORMATS)}")
        return format_value(lookup(build, name), style)
    if match["format"]:
        raise ValueError(f"a {kind} takes no format")
    if kind == "figure":
        return figure_html(registered(build, "figures", name), name, page_url)
    if kind == "table":
        entry = registered(build, "tables", name)
        return table_html(json.loads((build.figures_dir / entry[0]).read_text()))
    raise ValueError(f"unknown placeholder kind {kind!r}; use value, figure or table")


def registered(build: Build, kind: str, name: str) -> list[str]:
    """The files of a registered figure or table, or why it has none."""
    entries = build.index[kind]
    if name not in entries:
        known = ", ".join(sorted(entries)) or "none"
        raise LookupError(f"no {kind[:-1]} named {name!r}; known {kind}: {known}")
    if "missing" in entries[name]:
        raise LookupError(entries[name]["missing"])
    return entries[name]["files"]


def figure_html(files: list[str], name: str, page_url: str) -> str:
    """The interactive figure (if any) and its light and dark images."""
    base = get_relative_url(FIGURES_URL, page_url)
    images = "".join(
        f'<img src="{base}/{name}.{theme}.svg#only-{theme}" alt="{name} ({theme})" '
        f'class="cd-image">'
        for theme in ("light", "dark")
        if f"{name}.{theme}.svg" in files
    )
    if f"{name}.plotly.json" not in files:
        return f'<div class="cd-figure">{images}</div>'
    plot = (
        f'<div class="cd-plot" data-figure="{base}/{name}.plotly.json" '
        f'role="img" aria-label="interactive figure {name}"></div>'
    )
    if not images:
        return f'<div class="cd-figure">{plot}</div>'
    return (
        f'<div class="cd-figure">{plot}<details class="cd-static">'
        f"<summary>Static image</summary>{images}</details></div>"
    )


def table_html(data: dict) -> str:
    """A generated table as HTML that Material styles, then its note."""
    note = f"\n\n{data['note']}\n" if data.get("note") else ""
    if not data["rows"]:
        return note.strip()
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in data["columns"])
    body = "".join(
        "<tr>" + "".join(cell_html(cell) for cell in row) + "</tr>"
        for row in data["rows"]
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{note}"


def cell_html(cell) -> str:
    if isinstance(cell, dict) and "digits" in cell:
        digits = "".join(
            f'<span class="cd-wrong" title="wrong digit">{d}</span>' if wrong else d
            for d, wrong in zip(cell["digits"], cell["wrong"], strict=True)
        )
        return f'<td class="cd-number"><span class="cd-digits">{digits}</span></td>'
    if isinstance(cell, (int, float)) and not isinstance(cell, bool):
        return f'<td class="cd-number">{cell}</td>'
    return f"<td>{html.escape(str(cell))}</td>"


# --- math -------------------------------------------------------------------


def math_to_mathml(page_html: str) -> str:
    """Turn arithmatex's ``\\(...\\)`` and ``\\[...\\]`` into MathML."""

    def convert(match: re.Match) -> str:
        block = match["block"] is not None
        latex = html.unescape(match["block"] if block else match["inline"])
        return latex2mathml.converter.convert(
            latex.strip(), display="block" if block else "inline"
        )

    return MATH.sub(convert, page_html)


# --- MkDocs events ----------------------------------------------------------


def on_config(config):
    global BUILD
    BUILD = load_build()
    site_url = os.environ.get("CARRYDEMO_SITE_URL")
    if site_url:
        config["site_url"] = site_url
    return config


def on_files(files, config):
    """Add the figure files and plotly.js to the site, as if they were docs."""
    for path in sorted(BUILD.figures_dir.iterdir()):
        if path.name.endswith((".svg", ".plotly.json")):
            uri = f"{FIGURES_URL}/{path.name}"
            files.append(File.generated(config, uri, abs_src_path=str(path)))
    files.append(File.generated(config, PLOTLY_URL, abs_src_path=str(PLOTLY_JS)))
    return files


def on_page_markdown(markdown, page, config, files):
    markdown, problems = substitute(markdown, BUILD, page.url)
    for problem in problems:
        log.warning("%s: %s", page.file.src_uri, problem)
    return markdown


def on_page_content(html_text, page, config, files):
    return math_to_mathml(html_text)


def on_serve(server, config, builder):
    """Rebuild the preview when the figures are redrawn (never retrains)."""
    server.watch(str(BUILD.figures_dir))
    return server
