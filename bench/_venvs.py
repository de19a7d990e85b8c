"""One virtual environment per benchmarked peer under bench/.venvs/, built with venv + pip and reused.

A venv is reused while its manifest (``llmtap-bench.json``) records the same requirements and the same
llmtap pyproject.toml; otherwise pip runs again in place, which is quick when little changed. llmtap is
installed editable into every venv so ``llmtap.fake_openai`` (the in-process transport) and the current
llmtap code are importable everywhere, the bare client's venv included.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENVS = REPO / "bench" / ".venvs"
MANIFEST = "llmtap-bench.json"
PIP_TIMEOUT_S = 900
# Distributions whose resolved versions the report shows (the rest of a venv is noise for a reader).
REPORTED = (
    "openai",
    "opentelemetry-sdk",
    "opentelemetry-instrumentation-genai-openai",
    "opentelemetry-instrumentation-openai-v2",
    "opentelemetry-util-genai",
    "opentelemetry-instrumentation-openai",
    "openinference-instrumentation-openai",
    "openlit",
    "llmtap",
    "httpx",
    "httpx2",
)


@dataclass
class Venv:
    """A built venv (``python`` set) or a failed one (``error`` set), with what pip resolved."""

    name: str
    python: Path | None = None
    requirements: list[str] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    build_seconds: float = 0.0


def llmtap_requirement(extra: str = "") -> list[str]:
    """pip arguments installing this checkout editable (with an optional extra)."""
    return ["-e", f"{REPO}[{extra}]" if extra else str(REPO)]


def ensure_venv(name: str, alternatives: Sequence[Sequence[str]], *, log=print) -> Venv:
    """Build or reuse bench/.venvs/<name> with the first installable requirement set of ``alternatives``.

    Never raises for an install failure: the returned Venv carries pip's error so the report can show it.
    """
    path = VENVS / name
    python = path / "bin" / "python"
    errors = []
    for requirements in alternatives:
        wanted = {
            "requirements": list(requirements),
            "pyproject": _pyproject_hash(),
            "python": _base_python(),
        }
        manifest = _read_manifest(path)
        if python.exists() and manifest and {k: manifest.get(k) for k in wanted} == wanted:
            return Venv(name, python, list(requirements), manifest["versions"])
        started = time.monotonic()
        log(f"[peers] building venv {name}: pip install {' '.join(requirements)}")
        error = _create(path) if not python.exists() or manifest.get("python") != wanted["python"] else None
        error = error or _pip_install(python, requirements)
        if error is None:
            versions = installed_versions(python)
            _write_manifest(path, {**wanted, "versions": versions})
            return Venv(name, python, list(requirements), versions, build_seconds=time.monotonic() - started)
        errors.append(f"pip install {' '.join(requirements)}: {error}")
        (path / MANIFEST).unlink(missing_ok=True)
    return Venv(name, error="; then ".join(errors))


def installed_versions(python: Path | str) -> dict[str, str]:
    """Versions of the REPORTED distributions installed for ``python``."""
    script = (
        "import json, importlib.metadata as m\n"
        "out = {}\n"
        f"for name in {list(REPORTED)!r}:\n"
        "    try: out[name] = m.version(name)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))\n"
    )
    result = subprocess.run([str(python), "-c", script], capture_output=True, text=True, timeout=120)
    return json.loads(result.stdout) if result.returncode == 0 else {}


def _base_python() -> str:
    return f"{sys.implementation.name}-{sys.version.split()[0]}"


def _pyproject_hash() -> str:
    """Hash of llmtap's base dependencies: what its editable install puts into every venv (extras are unused)."""
    text = (REPO / "pyproject.toml").read_text()
    try:
        import tomllib

        text = json.dumps(tomllib.loads(text)["project"]["dependencies"])
    except (ImportError, KeyError, ValueError):  # Python 3.10 has no tomllib: any change to the file counts
        pass
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _read_manifest(path: Path) -> dict:
    try:
        return json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}


def _write_manifest(path: Path, manifest: dict) -> None:
    (path / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def _create(path: Path) -> str | None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # --clear: a half-built venv from an interrupted run or another Python is started afresh.
    return _run([sys.executable, "-m", "venv", "--clear", str(path)], timeout=300)


def _pip_install(python: Path, requirements: Sequence[str]) -> str | None:
    command = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *requirements]
    return _run(command, timeout=PIP_TIMEOUT_S)


def _run(command: Sequence[str], *, timeout: float) -> str | None:
    """None on success, else the last lines pip or venv printed (the part naming the conflict)."""
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout:.0f} s"
    if result.returncode == 0:
        return None
    lines = [
        line
        for line in (result.stderr or result.stdout).splitlines()
        if not line.startswith("WARNING: Location")
    ]
    return " ".join(" ".join(lines[-6:]).split()) or f"exit status {result.returncode}"
