"""Building, caching and refusing the C kernel (carrydemo.kernels)."""

from __future__ import annotations

import os

import pytest

from carrydemo import kernels

needs_compiler = pytest.mark.skipif(
    kernels.compiler() is None and not os.environ.get("CI"),
    reason="no C compiler for the kernel",
)


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    """A cache folder of this test's own, and no library loaded yet."""
    monkeypatch.setenv(kernels.CACHE_ENV, str(tmp_path / "cache"))
    kernels.build_and_load.cache_clear()
    yield tmp_path
    kernels.build_and_load.cache_clear()


@needs_compiler
def test_the_kernel_is_built_once_into_the_cache_and_reused(fresh, monkeypatch):
    library = kernels.load()
    assert library.carrydemo_rnn_epoch and library.carrydemo_mlp_epoch
    built = sorted((fresh / "cache").iterdir())
    # the library and its hash, no temporary file left
    name = kernels.library_path(kernels.compiler()).name
    assert [path.name for path in built] == [name, f"{name}.sha256"]

    # a second process finds it there and compiles nothing
    kernels.build_and_load.cache_clear()
    monkeypatch.setattr(kernels, "build", pytest.fail)
    kernels.load()
    assert sorted((fresh / "cache").iterdir()) == built


@needs_compiler
def test_changed_source_gets_a_library_of_its_own(fresh, monkeypatch):
    first = kernels.library_path(kernels.compiler())
    changed = fresh / "stacked_epoch.c"
    changed.write_text(kernels.SOURCE.read_text() + "\n/* changed */\n")
    monkeypatch.setattr(kernels, "SOURCE", changed)
    assert kernels.library_path(kernels.compiler()) != first


@needs_compiler
def test_a_compile_error_is_one_line_naming_the_compiler(fresh, monkeypatch):
    broken = fresh / "broken.c"
    broken.write_text("int carrydemo_rnn_epoch( {\n")
    monkeypatch.setattr(kernels, "SOURCE", broken)
    with pytest.raises(kernels.KernelError) as error:
        kernels.load()
    message = str(error.value)
    assert "failed:" in message and "\n" not in message
    assert not any((fresh / "cache").iterdir())  # nothing half-written


def test_no_compiler_and_the_switch_off_are_reported(fresh, monkeypatch):
    monkeypatch.setenv("CC", "no-such-compiler")
    with pytest.raises(kernels.KernelError, match="no C compiler"):
        kernels.load()
    kernels.build_and_load.cache_clear()
    monkeypatch.setenv(kernels.DISABLE_ENV, "1")
    with pytest.raises(kernels.KernelError, match=f"{kernels.DISABLE_ENV}=1"):
        kernels.load()


@needs_compiler
def test_a_damaged_cached_library_is_rebuilt(fresh):
    # as another process left it: built, then cut short (calling it would
    # crash the process, not raise); never loaded here, where it would stay
    # mapped whatever happens to the file
    target = kernels.library_path(kernels.compiler())
    kernels.build(kernels.compiler(), target)
    target.write_bytes(target.read_bytes()[:1000])
    assert not kernels.is_intact(target)
    library = kernels.load()
    assert kernels.is_intact(target) and library.carrydemo_rnn_epoch


@needs_compiler
def test_cc_may_carry_options_and_an_empty_cache_setting_means_the_default(
    fresh, monkeypatch
):
    monkeypatch.setenv("CC", f"{kernels.compiler()[0]} -g")
    assert kernels.compiler()[1:] == ["-g"]
    monkeypatch.setenv(kernels.CACHE_ENV, "")
    monkeypatch.setenv("XDG_CACHE_HOME", str(fresh / "home-cache"))
    kernels.load()
    assert list((fresh / "home-cache" / "carrydemo").glob("*.so"))


def test_an_unusable_cache_folder_is_named(fresh, monkeypatch):
    not_a_folder = fresh / "file"
    not_a_folder.write_text("")
    monkeypatch.setenv(kernels.CACHE_ENV, str(not_a_folder))
    with pytest.raises(kernels.KernelError, match=kernels.CACHE_ENV):
        kernels.cache_dir()


def test_a_shared_temporary_cache_of_another_user_is_refused(fresh, monkeypatch):
    monkeypatch.setattr(kernels.tempfile, "gettempdir", lambda: str(fresh))
    planted = fresh / f"carrydemo-{os.getuid()}"
    planted.mkdir(mode=0o777)
    planted.chmod(0o777)  # others may write: someone could plant a library
    with pytest.raises(kernels.KernelError, match="set CARRYDEMO_KERNEL_CACHE"):
        kernels.private_temporary_cache()
