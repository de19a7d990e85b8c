"""The wheel carries every subpackage and asset, and both wheel and editable installs import from anywhere.

The wheel is built from a copy of what git tracks (:mod:`checkout_support`), as from a fresh clone.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import tomllib
from checkout_support import ROOT, copy_checkout, tracked_files

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PACKAGE_DIRS: dict[str, str] = PYPROJECT["tool"]["setuptools"]["package-dir"]
ASSET_SUFFIXES = {".sql", ".json", ".yaml", ".yml", ".csv"}


def _source_files() -> dict[str, Path]:
    """Map wheel paths (llmtap/...) to the tracked repo files that must ship, read from the package-dir mapping."""
    shipped: dict[str, Path] = {}
    for name in tracked_files():
        path = ROOT / name
        if path.suffix != ".py" and path.suffix not in ASSET_SUFFIXES:
            continue
        for package, folder in PACKAGE_DIRS.items():
            if path.is_relative_to(ROOT / folder):
                shipped[f"{package.replace('.', '/')}/{path.relative_to(ROOT / folder).as_posix()}"] = path
    return shipped


def test_every_python_folder_is_a_listed_package() -> None:
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    for package, folder in PACKAGE_DIRS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            name = ".".join([package, *rel.parts]) if rel.parts else package
            assert name in listed, f"{init.parent} is a package but is missing from pyproject packages"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    checkout = copy_checkout(tmp_path_factory.mktemp("checkout"))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(checkout),
        ],
        check=True,
        cwd=out,
    )
    (built,) = out.glob("llmtap-*.whl")
    return built


def test_wheel_contains_every_module_and_asset(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = sorted(path for path in _source_files() if path not in names)
    assert not missing, f"not in the wheel: {missing}"


def _import_check_script() -> str:
    modules = sorted(PACKAGE_DIRS)
    return (
        "import importlib, importlib.resources, json, sys\n"
        f"mods = {modules!r}\n"
        "files = {m: importlib.import_module(m).__file__ for m in mods}\n"
        "assets = set(str(p) for m in mods for p in importlib.resources.files(m).rglob('*')\n"
        f"                if p.suffix in {sorted(ASSET_SUFFIXES)!r})\n"
        "print(json.dumps({'files': files, 'assets': len(assets)}))\n"
    )


@pytest.fixture(scope="module")
def wheel_python(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The python of a fresh venv with the wheel installed (a regular install, as users have)."""
    venv = tmp_path_factory.mktemp("wheel-venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(wheel)],
        check=True,
    )
    # Dependencies come from this environment as a plain path (a .pth line, so the editable hook is not loaded).
    Path(_site_packages(python), "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def _site_packages(python: Path) -> str:
    return subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def test_wheel_installs_into_a_fresh_venv_and_imports_from_elsewhere(
    wheel_python: Path, tmp_path: Path
) -> None:
    python, site = wheel_python, _site_packages(wheel_python)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = subprocess.run(
        [str(python), "-c", _import_check_script()], cwd=elsewhere, check=True, capture_output=True, text=True
    )
    report = json.loads(result.stdout)
    for module, path in report["files"].items():
        assert path.startswith(site), f"{module} imported from {path}, not from the installed wheel"
    shipped_assets = [p for p in _source_files().values() if p.suffix in ASSET_SUFFIXES]
    assert report["assets"] == len(shipped_assets)
    help_text = subprocess.run(
        [str(python.with_name("llmtap")), "--help"], cwd=elsewhere, check=True, capture_output=True, text=True
    ).stdout
    assert "serve" in help_text


def test_a_folder_that_hides_the_installed_package_is_named_not_blamed_on_a_missing_extra(
    wheel_python: Path, tmp_path: Path
) -> None:
    """`python -m` puts the working directory first on the import path; a partial llmtap there is not an extra."""
    shutil.copytree(ROOT / PACKAGE_DIRS["llmtap"], tmp_path / "llmtap")
    result = subprocess.run(
        [str(wheel_python), "-m", "llmtap", "serve"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result.stderr
    assert "pip install" not in result.stderr
    assert f"imported from {tmp_path / 'llmtap'} is not a whole install" in result.stderr


def test_editable_install_maps_every_subpackage_to_its_folder(tmp_path: Path) -> None:
    """``pip install -e .`` (the test suite may run on a regular install, so it makes its own)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "-e", str(ROOT)],
        check=True,
    )
    # Where each package's __init__ would load from; finding a spec runs only llmtap's own light __init__.
    code = (
        "import importlib.util, json\n"
        f"print(json.dumps({{m: importlib.util.find_spec(m).origin for m in {sorted(PACKAGE_DIRS)!r}}}))"
    )
    result = subprocess.run(
        [str(python), "-c", code], cwd=tmp_path, check=True, capture_output=True, text=True
    )
    for module, path in json.loads(result.stdout).items():
        assert Path(path) == ROOT / PACKAGE_DIRS[module] / "__init__.py", f"{module} -> {path}"


def _oldest_python() -> str | None:
    """A Python 3.10 interpreter (the oldest the base install supports), if this machine has one."""
    candidates = [
        *sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.10*/bin/python3.10"))),
        shutil.which("python3.10"),  # last: a pyenv shim fails unless 3.10 is selected
    ]
    for candidate in filter(None, candidates):
        if subprocess.run([candidate, "-c", "pass"], capture_output=True).returncode == 0:
            return candidate
    return None


@pytest.mark.slow
def test_base_install_works_on_python_3_10(wheel: Path, tmp_path: Path) -> None:
    """The light base install: instrumentation and the CLI on 3.10; heavy commands say which extra they need."""
    python = _oldest_python()
    if python is None:
        pytest.skip("no Python 3.10 on this machine")
    venv = tmp_path / "venv310"
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)], check=True, timeout=600)
    code = "import llmtap; llmtap.instrument(service_name='py310'); import sys; print(sys.version_info[:2])"
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code], cwd=tmp_path, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(3, 10)"
    installed = subprocess.run(
        [str(venv / "bin" / "pip"), "list", "--format=freeze"], check=True, capture_output=True, text=True
    ).stdout.lower()
    for heavy in ("chdb", "grpcio", "clickhouse-connect", "grafana-foundation-sdk"):
        assert f"{heavy}==" not in installed, f"{heavy} is not part of the base install"
    serve = subprocess.run(
        [str(venv / "bin" / "llmtap"), "serve"], cwd=tmp_path, capture_output=True, text=True
    )
    assert serve.returncode == 2 and "pip install 'llmtap[all]'" in serve.stderr
    assert "Traceback" not in serve.stderr


def test_what_npm_leaves_in_the_tree_is_ignored() -> None:
    """`npm install` in examples/node (as its script says) must not add files to a commit, a copy or a wheel."""
    left = [
        "examples/node/node_modules/@opentelemetry/api/package.json",
        "examples/node/package-lock.json",
        "tests/js/node_modules/@opentelemetry/api/package.json",
    ]
    result = subprocess.run(
        ["git", "check-ignore", "--no-index", *left], cwd=ROOT, capture_output=True, text=True
    )
    assert sorted(result.stdout.split()) == sorted(left)
