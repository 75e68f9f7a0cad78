"""Start many real ``python -m carrydemo`` runs without importing PyTorch each time.

Run as ``python -m tests.cli_zygote``. It imports the package and PyTorch once,
then reads one JSON command a line on stdin and answers one JSON line:

    {"start": [argv...], "cwd": DIR, "env": {...}, "log": FILE}  -> {"pid": N}
    {"wait": N}                                                  -> {"status": S}

Each run is a forked process that executes the package's ``__main__`` as
``python -m carrydemo`` would; ``status`` is its exit status, or minus the
signal that killed it. The parent never runs PyTorch code, so no thread pool
exists yet when it forks.
"""

from __future__ import annotations

import json
import os
import runpy
import sys

import safetensors.torch  # noqa: F401  (preloaded for the forked runs)
import torch  # noqa: F401
import torch._dynamo  # noqa: F401  (the first Adam imports it: seconds)

import carrydemo.cli  # noqa: F401
import carrydemo.figures  # noqa: F401
import carrydemo.stacked  # noqa: F401
import carrydemo.train  # noqa: F401


def run_child(command: dict) -> None:
    """In the forked process: become ``python -m carrydemo ARGS`` and exit."""
    os.chdir(command["cwd"])
    os.environ.update(command["env"])
    log = os.open(command["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    sys.argv = ["carrydemo", *command["start"]]
    status = 1
    try:
        runpy.run_module("carrydemo", run_name="__main__", alter_sys=True)
        status = 0
    except SystemExit as done:
        status = done.code if isinstance(done.code, int) else 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


def answer(reply: dict) -> None:
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()


def main() -> None:
    for line in sys.stdin:
        command = json.loads(line)
        if "start" in command:
            pid = os.fork()
            if pid == 0:
                run_child(command)
            answer({"pid": pid})
        else:
            _, status = os.waitpid(command["wait"], 0)
            answer({"status": os.waitstatus_to_exitcode(status)})


if __name__ == "__main__":
    main()
