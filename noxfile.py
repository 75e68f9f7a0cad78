"""Build pipeline: ``nox -s train docs`` trains the models and builds the site."""

from __future__ import annotations

import fcntl
from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_venv = "yes"
nox.options.sessions = ["lint", "tests"]

# The CPU wheel of this release lies on the build machines' disk; an unpinned
# torch would pull a multi-gigabyte CUDA build into every session. Sessions
# run on the interpreter nox runs on; the pinned wheel exists for CPython 3.11.
TORCH = "torch==2.13.0"


def install(session: nox.Session, *extras: str) -> None:
    """Install the package editable (a reused venv never keeps a stale copy).

    Two runs of one session share its venv; a lock keeps their installs from
    overwriting each other's files halfway (the second one then finds the
    carrydemo lock and says so, instead of failing inside pip).
    """
    target = f".[{','.join(extras)}]" if extras else "."
    lock_path = Path(session.virtualenv.location + ".install-lock")
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        session.install(TORCH)
        session.install("-e", target)


@nox.session
def train(session: nox.Session) -> None:
    """Train both models in the article's configuration into build/results."""
    install(session)
    session.run("python", "-m", "carrydemo", "train", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Time the plain loop against the stacked trainer into build/results/bench.json."""
    install(session)
    session.run("python", "-m", "carrydemo", "bench", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """Draw the figures and build the site into build/site (never trains)."""
    install(session, "docs")
    session.run("python", "-m", "carrydemo", "figures")
    session.run("mkdocs", "build", "--strict", *session.posargs)


@nox.session
def study(session: nox.Session) -> None:
    """Run the study beyond the article into build/results/study.json."""
    install(session)
    session.run("python", "-m", "carrydemo", "study", *session.posargs)


@nox.session
def serve(session: nox.Session) -> None:
    """Preview the site with live reload on http://127.0.0.1:8000 (never trains)."""
    install(session, "docs")
    session.run("python", "-m", "carrydemo", "figures")
    session.run("mkdocs", "serve", "--dev-addr", "127.0.0.1:8000", *session.posargs)


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite."""
    install(session, "docs", "test")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Check the code with ruff."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def screenshots(session: nox.Session) -> None:
    """Screenshot every page of the site, light and dark, into build/screenshots."""
    install(session, "docs", "test")
    session.run("python", "-m", "carrydemo", "figures")
    session.run("python", "tools/screenshots.py", *session.posargs)
