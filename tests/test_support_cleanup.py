"""The test helpers clean up after a failure and let it through: a serve left running holds its store and port
for the tests after it, and an error raised while cleaning up hides the failure that was being reported."""

from __future__ import annotations

import subprocess
import sys

import pytest
from collector_support import mounted_tmpfs
from test_collector_durability import Serve, free_port


def test_a_serve_that_never_gets_ready_is_killed(tmp_path):
    serve = Serve.__new__(Serve)  # a process that never answers /health, without waiting 90s for a real serve
    serve.url = f"http://127.0.0.1:{free_port()}"
    serve.process = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], stderr=subprocess.PIPE, text=True
    )
    try:
        with pytest.raises(AssertionError, match="did not become ready"):
            serve._wait_ready(timeout=0.5)
        assert serve.process.poll() is not None, "the process was left running"
    finally:
        serve.process.kill()
        serve.process.communicate()


def test_a_failure_inside_a_tmpfs_is_not_hidden_by_a_failing_unmount(tmp_path):
    failure = pytest.raises(LookupError, match="the test's own failure")
    with failure, mounted_tmpfs(tmp_path / "disk", "1m") as disk:
        subprocess.run(["umount", str(disk)], check=True)  # the unmount on the way out then fails
        raise LookupError("the test's own failure")
