"""Compile and call the C kernel that trains a stack's epoch on the CPU.

The kernel (``csrc/stacked_epoch.c``) is compiled once per machine with the
C compiler already there (``cc``, or ``$CC``), in about a second, into
``~/.cache/carrydemo`` (or ``$CARRYDEMO_KERNEL_CACHE``), named by a hash of
its source, compiler and flags, and loaded with ctypes: no build step, no
PyTorch headers. Where no compiler works, ``load()`` raises KernelError
saying why; the stacked trainer then uses its tensor operations instead
(``--kernel auto``, with one warning) or stops (``--kernel c``).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shlex
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

from carrydemo.results import file_sha256

log = logging.getLogger(__name__)
SOURCE = Path(__file__).with_name("csrc") / "stacked_epoch.c"
FLAGS = ("-O3", "-fno-math-errno", "-shared", "-fPIC")
# the library is built on, and for, the machine that runs it; a compiler that
# does not know the flag gets a second try without it
NATIVE = "-march=native"
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
    """$CARRYDEMO_KERNEL_CACHE when set and not empty, else ~/.cache/carrydemo,
    else (where that cannot be made) a private folder in the temporary
    directory; made if missing. Raises KernelError where none can be used."""
    chosen = os.environ.get(CACHE_ENV, "")
    if chosen:
        return make_cache(Path(chosen).expanduser().absolute(), f"${CACHE_ENV}")
    home_cache = Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser()
    try:
        return make_cache(home_cache.absolute() / "carrydemo", "the cache")
    except KernelError:
        return private_temporary_cache()


def make_cache(folder: Path, name: str) -> Path:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise KernelError(
            f"{name} {str(folder)!r} cannot be made: {error.strerror}; "
            f"set {CACHE_ENV} to a writable folder"
        ) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise KernelError(
            f"{name} {str(folder)!r} is not writable; "
            f"set {CACHE_ENV} to a writable folder"
        )
    return folder


def private_temporary_cache() -> Path:
    """A folder of this user's in the temporary directory, which nobody else
    can have planted a library in."""
    folder = Path(tempfile.gettempdir()) / f"carrydemo-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        status = folder.lstat()
    except OSError as error:
        raise KernelError(f"no cache folder: {error}") from None
    if (
        not stat.S_ISDIR(status.st_mode)
        or status.st_uid != os.getuid()
        or status.st_mode & 0o022
    ):
        raise KernelError(
            f"{folder} belongs to another user or others may write to it; "
            f"set {CACHE_ENV} to a folder of your own"
        )
    return folder


def compiler() -> list[str] | None:
    """The compiler's command: $CC when set (options allowed, "ccache gcc"),
    else cc or gcc from the PATH; None when there is none."""
    command = shlex.split(os.environ.get("CC", ""))
    if not command:
        found = shutil.which("cc") or shutil.which("gcc")
        return [found] if found else None
    found = shutil.which(command[0])
    return [found, *command[1:]] if found else None


def library_path(cc: list[str]) -> Path:
    """Where this source, compiler and machine's library is cached."""
    key = hashlib.sha256(SOURCE.read_bytes())
    key.update(repr((cc, FLAGS, NATIVE, platform.machine(), cpu_flags())).encode())
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


def build(cc: list[str], target: Path) -> None:
    """Compile into a temporary file in the cache, then move it into place, so
    that two processes compiling at once never load a half-written library;
    its hash goes beside it, so that a damaged copy is noticed and rebuilt."""
    with tempfile.NamedTemporaryFile(
        dir=target.parent, suffix=".so", delete=False
    ) as f:
        partial = Path(f.name)
    command = [*cc, *FLAGS, "-o", str(partial), str(SOURCE), "-lm"]
    try:
        try:
            compile_library([*command[: len(cc)], NATIVE, *command[len(cc) :]])
        except subprocess.CalledProcessError:
            compile_library(command)
        partial.chmod(0o644)
        digest = Path(f"{partial}.sha256")
        digest.write_text(file_sha256(partial))
        os.replace(digest, f"{target}.sha256")
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
        Path(f"{partial}.sha256").unlink(missing_ok=True)


def compile_library(command: list[str]) -> None:
    subprocess.run(
        command, check=True, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S
    )


def is_intact(target: Path) -> bool:
    """Whether the cached library is the one its build wrote: a truncated or
    overwritten copy would crash the process when called, not when loaded."""
    try:
        return Path(f"{target}.sha256").read_text() == file_sha256(target)
    except OSError:
        return False


class KernelError(RuntimeError):
    """The C kernel cannot be built or loaded here; the message says why."""


def load() -> ctypes.CDLL:
    """The compiled kernel, built first if need be; KernelError where it cannot be."""
    library, reason = build_and_load()
    if library is None:
        raise KernelError(reason)
    return library


@functools.cache
def build_and_load() -> tuple[ctypes.CDLL | None, str]:
    """(library, "") or (None, why not), tried once per process."""
    if os.environ.get(DISABLE_ENV) == "1":
        return None, f"{DISABLE_ENV}=1 is set"
    cc = compiler()
    if cc is None and os.environ.get("CC", "").strip():
        return None, f"no C compiler: $CC is {os.environ['CC']!r}, not on the PATH"
    if cc is None:
        return None, "no C compiler: neither cc nor gcc is on the PATH"
    try:
        target = library_path(cc)
        if not is_intact(target):
            build(cc, target)
        library = ctypes.CDLL(str(target))
    except KernelError as error:
        return None, str(error)
    except subprocess.CalledProcessError as error:
        lines = [line for line in error.stderr.splitlines() if line.strip()]
        detail = lines[-1] if lines else f"exit status {error.returncode}"
        return None, f"{Path(cc[0]).name} failed: {detail}"
    except (OSError, subprocess.SubprocessError) as error:
        return None, str(error)
    for name in ("carrydemo_rnn_epoch", "carrydemo_mlp_epoch"):
        function = getattr(library, name)
        function.argtypes, function.restype = EPOCH_ARGUMENTS, _int
    return library, ""
