"""Packaging: what an installed fastgrad carries, and the source build's
message when no C compiler is reachable (docs/packaging.md).

The no-compiler test configures this checkout's CMakeLists.txt with
CC=/bin/false (about a second: CMake stops before looking for Python or
OpenMP); it is skipped where the tests run without the source tree, as in
.ci/wheel and cibuildwheel's test step, which install a wheel.
"""
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _cmake():
    exe = shutil.which("cmake")
    if exe:
        return exe
    try:  # the cmake package from PyPI, as scikit-build-core uses it
        import cmake
    except ImportError:
        return None
    return os.path.join(cmake.CMAKE_BIN_DIR, "cmake")


@pytest.mark.skipif(not (ROOT / "CMakeLists.txt").exists() or not (ROOT / "csrc").is_dir(),
                    reason="needs the source tree (tests run against an installed wheel)")
@pytest.mark.skipif(sys.platform == "win32", reason="CC=/bin/false is a POSIX idiom")
def test_source_build_without_compiler_says_what_to_install(tmp_path):
    cmake = _cmake()
    if cmake is None:
        pytest.skip("cmake not installed")
    args = [cmake, "-S", str(ROOT), "-B", str(tmp_path / "b"), f"-DPython_EXECUTABLE={sys.executable}"]
    if shutil.which("ninja"):
        args += ["-G", "Ninja"]
    env = dict(os.environ, CC="/bin/false")
    r = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    # CMake wraps long messages, so compare without the line breaks
    flat = " ".join(out.split())
    assert "fastgrad: no working C compiler was found (CC=/bin/false)" in flat, out
    if sys.platform == "darwin":
        assert "Xcode Command Line Tools" in flat and "libomp" in flat, out
    else:
        assert "gcc" in flat and "OpenMP" in flat, out
    assert "docs/packaging.md" in flat, out
    # the failed look-up is not cached: a rerun after installing a compiler looks again
    cache = (tmp_path / "b" / "CMakeCache.txt")
    if cache.exists():
        assert "CMAKE_C_COMPILER:" not in cache.read_text()


def test_installed_package_has_compiled_modules_and_no_sources():
    """The compiled modules load, and the wheel leaves the .pyx sources out
    (pyproject.toml's wheel.exclude); in a development checkout the sources
    sit beside the modules, so the second half is checked for installs only."""
    import fastgrad
    from fastgrad.backend import native_available

    assert native_available()
    native = Path(fastgrad.__file__).parent / "_native"
    paths = sysconfig.get_paths()
    installed = str(Path(fastgrad.__file__)).startswith((paths["purelib"], paths["platlib"]))
    if installed:
        assert not list(native.glob("*.pyx")), "the wheel ships Cython sources"
        assert not (native / "CMakeLists.txt").exists()
