"""Tests of the notebook helpers: the Plotly renderer and the page hook."""

from __future__ import annotations

import base64
import json
from types import SimpleNamespace

import plotly.graph_objects as go
import plotly.io as pio
import pytest

from carrydemo import notebook


def figure_from_element(element: str) -> dict:
    url = element.split('data-figure="', 1)[1].split('"', 1)[0]
    prefix = "data:application/json;base64,"
    assert url.startswith(prefix)
    return json.loads(base64.b64decode(url[len(prefix) :]))


@pytest.fixture
def site_renderer():
    previous = pio.renderers.default
    notebook.use_site_plotly()
    yield
    pio.renderers.default = previous


def test_renderer_writes_an_element_the_site_draws(site_renderer):
    figure = go.Figure(go.Bar(x=["units"], y=[0.5]), layout={"title": "a & b"})
    bundle = pio.renderers[notebook.RENDERER_NAME].to_mimebundle(figure.to_dict())
    element = bundle["text/html"]
    assert element.startswith('<div class="cd-plot" data-figure="data:')
    assert "require" not in element and "cdn" not in element.lower()
    assert "a &amp; b" in element
    drawn = figure_from_element(element)
    assert drawn["data"][0]["type"] == "bar"


def notebook_page(src_uri: str):
    return SimpleNamespace(file=SimpleNamespace(src_uri=src_uri))


def test_hook_adds_a_download_link_and_hides_code_from_search():
    page_html = (
        '<h1 id="x">Explore</h1><p>text</p>'
        '<div class="jp-Cell jp-CodeCell jp-Notebook-cell">code</div>'
    )
    out = notebook.on_page_content(page_html, notebook_page("explore.ipynb"), {}, [])
    assert '</h1><p class="cd-download"><a href="explore.ipynb" download>' in out
    assert '<div data-search-exclude class="jp-Cell jp-CodeCell' in out


def test_hook_cuts_the_cdn_loaders_out():
    page_html = (
        '<h1>Explore</h1><!-- Load mathjax --><script src=""></script>'
        "<!-- End of mathjax configuration --><p>kept</p>"
        '<script type="module">import("https://cdnjs.cloudflare.com/m.mjs")</script>'
    )
    out = notebook.on_page_content(page_html, notebook_page("explore.ipynb"), {}, [])
    assert "mathjax" not in out and "cdnjs" not in out
    assert "<p>kept</p>" in out


def test_hook_leaves_markdown_pages_alone():
    page_html = '<h1>Try</h1><div class="jp-Cell jp-CodeCell">x</div>'
    assert notebook.on_page_content(page_html, notebook_page("try.md"), {}, []) == (
        page_html
    )


def test_results_dir_is_found_from_a_subfolder(tmp_path, monkeypatch):
    (tmp_path / "build" / "results").mkdir(parents=True)
    (tmp_path / "docs").mkdir()
    monkeypatch.delenv(notebook.RESULTS_ENV, raising=False)
    monkeypatch.chdir(tmp_path / "docs")
    assert notebook.results_dir() == tmp_path / "build" / "results"
