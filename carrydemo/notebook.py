"""Notebook pages: Plotly output that survives nbconvert, and a lean search index.

In a notebook, ``carrydemo.notebook.use_site_plotly()`` makes ``fig.show()``
write a ``cd-plot`` element, the same one the ``{{ figure: ... }}``
placeholder writes, so the site's figures.js draws it with the site's own
plotly.js and restyles it for the dark scheme. The default renderers would
either need require.js and a CDN, or leave only a JSON bundle that nbconvert
drops without a word.

Listed under ``hooks:`` in mkdocs.yml, this module also keeps the code and
the outputs of notebook pages out of the search index, which would otherwise
hold every number and stylesheet the notebook prints.
"""

from __future__ import annotations

import base64
import html
import os
import re
from pathlib import Path

import plotly.io as pio
from plotly.io.base_renderers import MimetypeRenderer
from plotly.utils import PlotlyJSONEncoder

RESULTS_ENV = "CARRYDEMO_RESULTS"
RESULTS_DIR = Path("build/results")
RENDERER_NAME = "carrydemo"
CODE_CELL = re.compile(r'<div class="(jp-Cell jp-CodeCell\b)')
# nbconvert's loaders for MathJax and mermaid point at a CDN; the site serves
# neither (its math is MathML), so they are cut out of notebook pages.
CDN_LOADERS = re.compile(
    r"<!-- Load mathjax -->.*?<!-- End of mathjax configuration -->"
    r'|<script type="module">(?:(?!</script>).)*?cdnjs\.cloudflare\.com.*?</script>',
    re.DOTALL,
)


class SiteRenderer(MimetypeRenderer):
    """Show a figure as a ``cd-plot`` element holding its JSON as a data: URL."""

    def to_mimebundle(self, fig_dict):
        import json

        text = json.dumps(fig_dict, cls=PlotlyJSONEncoder, sort_keys=True)
        url = "data:application/json;base64," + base64.b64encode(text.encode()).decode()
        title = (fig_dict.get("layout", {}).get("title") or {}).get("text", "figure")
        element = (
            f'<div class="cd-plot" data-figure="{url}" role="img" '
            f'aria-label="interactive figure: {html.escape(title)}"></div>'
        )
        return {"text/html": element}


def use_site_plotly() -> None:
    """Make ``fig.show()`` in a notebook write figures the site can draw."""
    pio.renderers[RENDERER_NAME] = SiteRenderer()
    pio.renderers.default = RENDERER_NAME


def results_dir() -> Path:
    """The results folder: $CARRYDEMO_RESULTS, else build/results here or above.

    Jupyter starts a notebook's kernel in the notebook's folder (docs/), so
    the folder is looked for in the parent folders too.
    """
    if RESULTS_ENV in os.environ:
        return Path(os.environ[RESULTS_ENV])
    for folder in [Path.cwd(), *Path.cwd().parents]:
        if (folder / RESULTS_DIR).is_dir():
            return folder / RESULTS_DIR
    return RESULTS_DIR


def on_config(config):
    """MkDocs hook: give notebook kernels the build's results folder, absolute."""
    os.environ[RESULTS_ENV] = str(
        Path(os.environ.get(RESULTS_ENV, RESULTS_DIR)).resolve()
    )
    return config


def download_link(page) -> str:
    """A link to the .ipynb that mkdocs-jupyter (include_source) copies beside it."""
    name = html.escape(Path(page.file.src_uri).name)
    return (
        f'<p class="cd-download"><a href="{name}" download>'
        f"Download this notebook ({name})</a></p>"
    )


def on_page_content(html_text, page, config, files):
    """MkDocs hook: a download link, no CDN loaders, code kept out of search.

    Material shows no download button for notebooks, so the link goes under
    the page's first heading.
    """
    if not page.file.src_uri.endswith(".ipynb"):
        return html_text
    html_text = CDN_LOADERS.sub("", html_text)
    html_text = CODE_CELL.sub(r'<div data-search-exclude class="\1', html_text)
    heading_end = html_text.find("</h1>")
    if heading_end < 0:
        return download_link(page) + html_text
    cut = heading_end + len("</h1>")
    return html_text[:cut] + download_link(page) + html_text[cut:]
