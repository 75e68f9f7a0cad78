"""Compile and call the C kernel that trains a stack's epoch on the CPU.

The kernel (``csrc/stacked_epoch.c``) is compiled once per machine with the
C compiler already there (``cc``, or ``$CC``), in about a second, into
``~/.cache/carrydemo`` (or ``$CARRYDEMO_KERNEL_CACHE``), named by a hash of
its source, compiler and flags, and loaded with ctypes: no build step, no
PyTorch headers. Where no compiler works, ``load()`` returns None and the
stacked trainer uses its tensor operations instead, with one warning.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)
SOURCE = Path(__file__).with_name("csrc") / "stacked_epoch.c"
# -march=native: the library is built on, and for, the machine that runs it
FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-shared", "-fPIC", "-lm")
CACHE_ENV = "CARRYDEMO_KERNEL_CACHE"
DISABLE_ENV = "CARRYDEMO_NO_KERNEL"  # set to 1 to use the tensor operations
COMPILE_TIMEOUT_S = 120

_int, _ptr, _i64, _double = (
    ctypes.c_int,
    ctypes.c_void_p,
    ctypes.c_int64,
    ctypes.c_double,
)
EPOCH_ARGUMENTS = [_int] * 5 + [_ptr] * 4 + [_i64] + [_ptr] * 4 + [_double] * 3


def cache_dir() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser()
    return Path(os.environ.get(CACHE_ENV, default / "carrydemo"))


def compiler() -> str | None:
    return shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")


def library_path(cc: str) -> Path:
    """Where this source, compiler and machine's library is cached."""
    key = hashlib.sha256(SOURCE.read_bytes())
    key.update(repr((cc, FLAGS, platform.machine(), cpu_flags())).encode())
    return cache_dir() / f"stacked_epoch-{key.hexdigest()[:16]}.so"


def cpu_flags() -> str:
    """The CPU's feature flags, part of the cache key because of -march=native."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


def build(cc: str, target: Path) -> None:
    """Compile into a temporary file in the cache, then move it into place, so
    that two processes compiling at once never load a half-written library."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        dir=target.parent, suffix=".so", delete=False
    ) as f:
        partial = Path(f.name)
    try:
        subprocess.run(
            [cc, *FLAGS, "-o", str(partial), str(SOURCE)],
            check=True,
            capture_output=True,
            text=True,
            timeout=COMPILE_TIMEOUT_S,
        )
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


@functools.cache
def load() -> ctypes.CDLL | None:
    """The compiled kernel, built first if need be; None where it cannot be."""
    if os.environ.get(DISABLE_ENV) == "1":
        return None
    cc = compiler()
    if cc is None:
        log.warning("no C compiler (cc, gcc): training with tensor operations")
        return None
    target = library_path(cc)
    try:
        if not target.exists():
            build(cc, target)
        library = ctypes.CDLL(str(target))
    except (OSError, subprocess.SubprocessError) as error:
        detail = getattr(error, "stderr", "") or error
        log.warning("C kernel not built (%s): training with tensor operations", detail)
        return None
    for name in ("carrydemo_rnn_epoch", "carrydemo_mlp_epoch"):
        function = getattr(library, name)
        function.argtypes, function.restype = EPOCH_ARGUMENTS, _int
    return library
