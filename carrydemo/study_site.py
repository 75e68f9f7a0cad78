"""MkDocs hook: a study page whose results do not exist yet says how to make them.

Listed under ``hooks:`` in mkdocs.yml before ``carrydemo/site.py``. A page
with ``requires: study`` in its front matter is shown as written when
``study.json`` exists in the results folder; otherwise its body is replaced
by a note naming the command that makes the results, so the site still
builds (with ``--strict``) before anyone has run the study.
"""

from __future__ import annotations

import os
from pathlib import Path

STUDY_COMMAND = "nox -s study"


def results_dir() -> Path:
    return Path(os.environ.get("CARRYDEMO_RESULTS", "build/results"))


def missing_results_page(title: str) -> str:
    """The Markdown shown in place of a study page without results."""
    return (
        f"# {title}\n\n"
        '!!! note "No study results yet"\n\n'
        "    This page is drawn from `study.json` in the results folder, which "
        "does not exist yet.\n"
        f"    Run `{STUDY_COMMAND}` after `nox -s train`, then rebuild the site "
        "(`nox -s docs`).\n"
    )


def on_page_markdown(markdown, page, config, files):
    if page.meta.get("requires") != "study":
        return markdown
    if (results_dir() / "study.json").exists():
        return markdown
    return missing_results_page(page.meta.get("title", page.title or "Study"))
