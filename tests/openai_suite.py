"""openai-python's own test suite, run twice against the installed openai version: plain and with llmtap on.

The sdist of that version is downloaded with pip (it carries the SDK's tests), its test dependencies and a wheel of
this checkout go into a cached venv (see venv_support.py), and pytest runs the chosen test paths twice from the
unpacked sdist. The instrumented run loads ``llmtap_suite_plugin`` (written next to the sdist) with ``-p``, so
``llmtap.instrument()`` patches the SDK before any test module is imported; its spans go to an in-memory exporter and
are counted, so an instrumented run that recorded nothing fails instead of passing as a second plain run.

A test that passes plain and does not pass instrumented is a difference: llmtap changed what the app sees. It is run
once more by itself, plain and instrumented, so a timing flake is told apart from a real difference.

``python tests/openai_suite.py`` runs the CI subset, ``--all`` the whole suite (figures in the report of issue 19).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from venv_support import CACHE, cached_venv

# The SDK's dev dependency group (pyproject.toml of openai 3.x), less its type checkers, linters and stubs, plus the
# extras whose tests would otherwise be skipped.
EXTRAS = "aiohttp,realtime,datalib,bedrock,vertex"
TEST_REQUIREMENTS = [
    "pytest>=9",
    "pytest-asyncio>=1.4",
    "pytest-xdist>=3.6",
    "inline-snapshot>=0.28",
    "Pillow",
    "rich>=13.7",
    "azure-identity>=1.14.1",
    "trio>=0.22.2",
    "griffe>=1",
]

# Left out of every run, because they cannot pass from an sdist on a machine without the SDK's own tooling:
EXCLUDED = {
    # Every test calls the OpenAPI mock server (Prism) at TEST_API_BASE_URL, http://127.0.0.1:4010.
    "tests/api_resources": "needs the Prism mock server",
    "tests/lib/test_fine_tuning_positional_arguments.py": "needs the Prism mock server",
    # Reads .github/workflows and .github/dependabot.yml, which only the repository has.
    "tests/test_uv_workflows.py": "needs the repository's .github/",
}
# Also failing plain, and so never counted as a difference, though not excluded by path: 13 tests of
# tests/lib/chat/test_completions_streaming.py compare with inline-snapshot external("hash:...") files, which live in
# the repository's .inline-snapshot/ and are not in the sdist.

# What CI runs: about 60% of the suite's tests in under half its time. It is all of tests/lib
# (the helpers: parse, streams, tool runners, Azure, Bedrock), the client and the streaming and response modules,
# less the lib modules on the realtime / WebSocket API, which llmtap does not patch (instrumentation/patching.py),
# and which are about half of tests/lib's time (keep-alive waits, reconnect back-offs).
CI_PATHS = [
    "tests/lib",
    "tests/test_client.py",
    "tests/test_streaming.py",
    "tests/test_stream_mode.py",
    "tests/test_sse_framing.py",
    "tests/test_response.py",
    "tests/test_legacy_response.py",
]
CI_SKIPPED_GLOBS = ["tests/lib/**/*realtime*.py", "tests/lib/**/*websocket*.py", "tests/lib/live"]

PLUGIN = '''\
"""Switches llmtap on as pytest starts (loaded with -p, before any conftest or test module)."""
import json
import os
from collections import Counter

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import llmtap
from llmtap.instrumentation import patching

_SPANS = InMemorySpanExporter()
_TRACER_PROVIDER = TracerProvider()
_TRACER_PROVIDER.add_span_processor(SimpleSpanProcessor(_SPANS))
llmtap.instrument(
    tracer_provider=_TRACER_PROVIDER,
    meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()]),
    capture_content=True,
)


def pytest_sessionfinish(session):
    names = Counter(span.name.split(" ")[0] for span in _SPANS.get_finished_spans())
    out = os.path.join(os.environ["LLMTAP_SUITE_SPANS"], f"{os.getpid()}.json")
    with open(out, "w") as f:
        json.dump({"spans": dict(names), "patched": len(patching._patched)}, f)
'''


@dataclass
class Report:
    paths: list[str]
    plain: dict[str, str] = field(default_factory=dict)  # test id -> passed / failed / skipped
    instrumented: dict[str, str] = field(default_factory=dict)
    differing: list[str] = field(default_factory=list)  # pass plain, not instrumented, also when run alone
    flaky: list[str] = field(default_factory=list)  # differed once, passed both ways when run alone
    spans: dict[str, int] = field(default_factory=dict)  # span counts by operation name, instrumented run
    patched: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    junit: Path | None = None  # the runs' junit files, kept when there is a difference

    def summary(self) -> str:
        def passed(outcomes: dict[str, str]) -> int:
            return sum(outcome == "passed" for outcome in outcomes.values())

        return (
            f"openai suite ({' '.join(self.paths)}): {len(self.plain)} tests; "
            f"passed plain {passed(self.plain)}, instrumented {passed(self.instrumented)}; "
            f"differing {len(self.differing)}, flaky {len(self.flaky)}; "
            f"{self.patched} methods patched, {sum(self.spans.values())} spans {self.spans}; "
            + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in self.seconds.items())
        )


def installed_openai_version() -> str:
    from importlib.metadata import version

    return version("openai")


def sdist(version: str) -> Path:
    """The unpacked sdist of openai ``version``, downloaded once into the temp directory."""
    root = CACHE / f"openai-sdist-{version}"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"openai-sdist-{version}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        tree = root / f"openai-{version}"
        if not (root / "ready").exists():
            download = root / "download"
            download.mkdir(parents=True, exist_ok=True)
            pip = [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check"]
            subprocess.run(
                [*pip, "--no-binary", ":all:", "--no-deps", "-d", str(download), f"openai=={version}"],
                check=True,
            )
            (archive,) = download.glob(f"openai-{version}.tar.gz")
            with tarfile.open(archive) as tar:
                tar.extractall(root, filter="data")
            (root / "plugin").mkdir(exist_ok=True)
            (root / "ready").touch()
        (root / "plugin" / "llmtap_suite_plugin.py").write_text(PLUGIN)
    return tree


def suite_venv(version: str) -> Path:
    return cached_venv([f"openai[{EXTRAS}]=={version}", *TEST_REQUIREMENTS], editable=False)


def ci_paths(tree: Path) -> tuple[list[str], list[str]]:
    """CI_PATHS, and the --ignore arguments of the realtime / WebSocket modules under them."""
    ignored = sorted({str(path.relative_to(tree)) for glob in CI_SKIPPED_GLOBS for path in tree.glob(glob)})
    return CI_PATHS, ignored


def _outcomes(junit: Path) -> dict[str, str]:
    """Test node id -> passed, failed or skipped, from a junit file of junit_family xunit1 (it names the file)."""
    outcomes = {}
    for case in ET.parse(junit).iter("testcase"):
        module = case.get("file", "").removesuffix(".py").replace("/", ".")
        rest = case.get("classname", "").removeprefix(module).lstrip(".")
        node = "::".join(
            part for part in (case.get("file", ""), rest.replace(".", "::"), case.get("name")) if part
        )
        kinds = {child.tag for child in case}
        outcome = "failed" if kinds & {"failure", "error"} else "skipped" if "skipped" in kinds else "passed"
        if outcomes.get(node) in (None, "passed"):  # a teardown error is a second entry for the same test
            outcomes[node] = outcome
    return outcomes


def _pytest(
    python: Path, tree: Path, args: Sequence[str], junit: Path, *, instrumented: bool, workers: int
) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PYTHONPATH"] = str(tree.parent / "plugin")  # both runs alike; only -p loads the plugin
    env["LLMTAP_SUITE_SPANS"] = str(junit.parent)
    command = [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=", "--tb=line"]
    command += ["-o", "junit_family=xunit1", f"--junitxml={junit}", "-n", str(workers)]
    if instrumented:
        command += ["-p", "llmtap_suite_plugin"]
    for path in EXCLUDED:
        command.append(f"--ignore={path}")
    result = subprocess.run([*command, *args], cwd=tree, env=env, capture_output=True, text=True)
    if not junit.exists() or result.returncode not in (0, 1):  # 1: some tests failed; anything else: no run
        raise RuntimeError(
            f"pytest exited {result.returncode}:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return _outcomes(junit)


def run(paths: Sequence[str] | None = None, *, workers: int | None = None) -> Report:
    """Run ``paths`` of the SDK's suite (default: the CI subset) plain and instrumented and compare."""
    version = installed_openai_version()
    started = time.monotonic()
    tree = sdist(version)
    python = suite_venv(version)
    ignored: list[str] = []
    if paths is None:
        paths, ignored = ci_paths(tree)
    report = Report(list(paths))
    report.seconds["setup"] = time.monotonic() - started
    workers = workers or os.cpu_count() or 1
    out = tree.parent / "runs" / str(os.getpid())
    for name in ("plain", "instrumented", "alone-plain", "alone-instrumented"):
        (out / name).mkdir(parents=True, exist_ok=True)
    args = [*paths, *(f"--ignore={path}" for path in ignored)]

    started = time.monotonic()
    report.plain = _pytest(
        python, tree, args, out / "plain" / "junit.xml", instrumented=False, workers=workers
    )
    report.seconds["plain"] = time.monotonic() - started
    started = time.monotonic()
    junit = out / "instrumented" / "junit.xml"
    report.instrumented = _pytest(python, tree, args, junit, instrumented=True, workers=workers)
    report.seconds["instrumented"] = time.monotonic() - started
    for counts in (out / "instrumented").glob("*.json"):
        recorded = json.loads(counts.read_text())
        report.patched = max(report.patched, recorded["patched"])
        for name, count in recorded["spans"].items():
            report.spans[name] = report.spans.get(name, 0) + count

    suspects = sorted(
        test
        for test, outcome in report.plain.items()
        if outcome == "passed" and report.instrumented.get(test) != "passed"
    )
    if suspects:  # once more, by themselves: a difference that is a timing flake passes both ways now
        started = time.monotonic()
        alone = {}
        for name, instrumented in (("alone-plain", False), ("alone-instrumented", True)):
            junit = out / name / "junit.xml"
            alone[name] = _pytest(python, tree, suspects, junit, instrumented=instrumented, workers=1)
        for test in suspects:
            if alone["alone-plain"].get(test) == "passed" == alone["alone-instrumented"].get(test):
                report.flaky.append(test)
            else:
                report.differing.append(test)
        report.seconds["rerun"] = time.monotonic() - started
    if report.differing:
        report.junit = out
    else:
        shutil.rmtree(out)  # the junit files are kept only to look into a difference
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", help="test paths inside the sdist (default: the CI subset)")
    parser.add_argument(
        "--all", action="store_true", help="the whole suite, less what needs Prism or the repo"
    )
    parser.add_argument(
        "-n", "--workers", type=int, default=None, help="pytest-xdist workers (default: cores)"
    )
    options = parser.parse_args(argv)
    paths = ["tests"] if options.all else options.paths or None
    report = run(paths, workers=options.workers)
    print(report.summary())
    for test in report.flaky:
        print("flaky (differed once, passed both ways alone):", test)
    for test in report.differing:
        print("passes plain, fails with llmtap:", test)
    if report.junit:
        print("junit files:", report.junit)
    return 1 if report.differing or not report.spans else 0


if __name__ == "__main__":
    sys.exit(main())
