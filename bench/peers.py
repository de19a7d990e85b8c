"""What each LLM observability library adds to an OpenAI call, side by side, in one run.

    python bench/peers.py            # builds/reuses bench/.venvs/*, ~15 minutes on 2 cores
    python bench/peers.py --quick    # CI smoke: bare client vs llmtap in this interpreter, no venvs

Every peer (the official OpenTelemetry instrumentation, OpenLLMetry, OpenInference, OpenLIT) gets its own
venv with the openai version pip resolves for it, and the same OTel SDK setup with content capture on (see
_peer_worker.py). llmtap and the bare client run in one venv per distinct openai version, so a peer's added
cost is always measured against the bare client on *its* openai version, in the same run. Runs are
interleaved (workers started afresh each session, blocks rotated each round) so machine drift hits all alike.
"""

from __future__ import annotations

import argparse
import json
import select
import subprocess
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from _common import format_number, load_average, machine_info, markdown_table, median, quantile, rotations
from _venvs import Venv, ensure_venv, installed_versions, llmtap_requirement

HERE = Path(__file__).resolve().parent
WORKER = HERE / "_peer_worker.py"
STARTUP_TIMEOUT_S = 180
BLOCK_TIMEOUT_S = 300
STREAM_CHUNKS = 50  # must match _peer_worker.STREAM_CHUNKS; the per-chunk figure divides by it


@dataclass(frozen=True)
class Peer:
    name: str
    title: str
    # Requirement sets tried in order; the first that installs is used.
    alternatives: tuple[tuple[str, ...], ...]


LLMTAP = tuple(llmtap_requirement())
PEERS = (
    Peer(
        "otel",
        "OpenTelemetry official",
        (
            # The newer official package is published as pre-releases only; naming one in the specifier lets
            # pip pick pre-releases for it (and its opentelemetry-util-genai) without --pre for everything.
            ("opentelemetry-instrumentation-genai-openai[instruments]>=1.0b0", *LLMTAP),
            ("opentelemetry-instrumentation-openai-v2[instruments]", *LLMTAP),
        ),
    ),
    Peer(
        "openllmetry",
        "OpenLLMetry (Traceloop)",
        (("opentelemetry-instrumentation-openai", "openai", *LLMTAP),),
    ),
    Peer(
        "openinference",
        "OpenInference (Arize)",
        (("openinference-instrumentation-openai[instruments]", *LLMTAP),),
    ),
    # openlit requires a dozen contrib instrumentations (httpx, flask, django, ...) that each pin one exact
    # opentelemetry-instrumentation release; some lack the newest one, and pip then backtracks for tens of
    # minutes. Naming the last complete release set resolves in seconds.
    Peer(
        "openlit",
        "OpenLIT",
        (("openlit", "opentelemetry-sdk==1.45.1", "opentelemetry-instrumentation==0.66b1", *LLMTAP),),
    ),
)


@dataclass(frozen=True)
class Workload:
    name: str
    title: str
    calls: int  # per block in full mode


# Short blocks, many rounds: a burst of load from a neighbour then spoils few rounds, and the median over rounds
# shrugs those off (full run: 5 sessions x 12 rounds = 60 paired rounds, 3,000 non-streamed calls per variant).
WORKLOADS = (
    Workload("chat", "non-streaming chat", 50),
    Workload("stream", f"streaming chat, {STREAM_CHUNKS} chunks", 10),
    Workload("stream1", "streaming chat, 1 chunk (for the per-chunk slope)", 30),
    Workload("embeddings", "embeddings", 50),
)


@dataclass
class Variant:
    """One worker configuration: a peer (or llmtap, or the bare client) in a venv."""

    key: str  # unique, e.g. "openlit" or "llmtap@openai-2.30.0"
    peer: str  # the worker's setup flavour
    title: str
    python: str
    openai: str
    versions: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    startup: list[dict] = field(default_factory=list)
    # workload -> clock ("cpu" or "wall") -> round number -> nanoseconds of each call of that round's block
    blocks: dict[str, dict[str, dict[int, list[int]]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(dict))
    )

    def pooled(self, workload: str, clock: str = "cpu") -> list[int]:
        return [ns for block in self.blocks[workload][clock].values() for ns in block]


class Worker:
    """A running _peer_worker.py, driven one JSON line at a time."""

    def __init__(self, variant: Variant) -> None:
        self.variant = variant
        self.stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - lives as long as the worker
        self.process = subprocess.Popen(
            [variant.python, str(WORKER), variant.peer],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            cwd=HERE,
        )

    def receive(self, timeout: float) -> dict:
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        line = self.process.stdout.readline() if ready else ""
        if line:
            return json.loads(line)
        self._stop()
        self.stderr.seek(0)
        tail = " ".join(self.stderr.read().strip().splitlines()[-3:])
        reason = "timed out" if not ready else f"exited with status {self.process.returncode}"
        return {"error": f"worker {reason}: {tail}"[:600]}

    def run(self, workload: str, calls: int) -> dict:
        self.process.stdin.write(json.dumps({"workload": workload, "calls": calls}) + "\n")
        self.process.stdin.flush()
        return self.receive(BLOCK_TIMEOUT_S)

    def close(self) -> None:
        self._stop()
        self.stderr.close()

    def _stop(self) -> None:
        if not self.process.stdin.closed:
            self.process.stdin.close()  # the worker's cue to exit
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def measure(variants: list[Variant], sessions: int, rounds: int, scale: float) -> None:
    """Fill each variant's startup figures and blocks; a variant that fails gets ``error`` and drops out."""
    round_number = 0
    for session, order in enumerate(rotations([v.key for v in variants], sessions), 1):
        by_key = {v.key: v for v in variants if v.error is None}
        workers = []
        for key in order:  # started one at a time: import timings must not compete with each other
            if key not in by_key:
                continue
            worker = Worker(by_key[key])
            message = worker.receive(STARTUP_TIMEOUT_S)
            if "error" in message:
                worker.variant.error = message["error"]
                worker.close()
                continue
            worker.variant.startup.append(message["ready"])
            workers.append(worker)
        for round_order in rotations([w.variant.key for w in workers], rounds):
            round_number += 1
            for workload in WORKLOADS:
                for key in round_order:
                    worker = next(w for w in workers if w.variant.key == key)
                    if worker.variant.error:
                        continue
                    reply = worker.run(workload.name, max(3, round(workload.calls * scale)))
                    if "error" in reply:
                        worker.variant.error = f"{workload.name}: {reply['error']}"
                    else:
                        for clock, values in reply.items():
                            worker.variant.blocks[workload.name][clock][round_number] = values
        for worker in workers:
            worker.close()
        print(f"[peers] session {session}/{sessions} done", file=sys.stderr, flush=True)


def build_variants(quick: bool, log) -> tuple[list[Variant], list[Venv]]:
    """The venvs (or, in quick mode, this interpreter) and the variants run in them."""
    if quick:
        openai_version = installed_versions(sys.executable).get("openai", "?")
        return [
            Variant(f"bare@openai-{openai_version}", "bare", "bare client", sys.executable, openai_version),
            Variant(f"llmtap@openai-{openai_version}", "llmtap", "llmtap", sys.executable, openai_version),
        ], []
    built = [(peer, ensure_venv(peer.name, peer.alternatives, log=log)) for peer in PEERS]
    variants, failed = [], []
    for peer, venv in built:
        if venv.error:
            failed.append(venv)
            continue
        variants.append(
            Variant(
                peer.name, peer.name, peer.title, str(venv.python), venv.versions["openai"], venv.versions
            )
        )
    openai_versions = sorted({v.openai for v in variants}) or [installed_versions(sys.executable)["openai"]]
    for openai_version in openai_versions:
        # The bare client and llmtap share a venv: llmtap is installed everywhere, enabled only where asked.
        venv = ensure_venv(f"openai-{openai_version}", [(f"openai=={openai_version}", *LLMTAP)], log=log)
        if venv.error:
            failed.append(venv)
            continue
        for peer, title in (("bare", "bare client"), ("llmtap", "llmtap")):
            variants.append(
                Variant(
                    f"{peer}@openai-{openai_version}",
                    peer,
                    title,
                    str(venv.python),
                    openai_version,
                    venv.versions,
                )
            )
    return variants, failed


# --- the report ---------------------------------------------------------------------------------------------


def _per_round(
    variant: Variant, bare: Variant, workload: str, q: float, clock: str = "cpu"
) -> dict[int, float]:
    """Round -> µs the variant adds at quantile ``q`` over the bare client on its openai version.

    Paired by round: each difference compares blocks run moments apart; the report takes the median over
    rounds, which shrugs off the rounds a neighbour's burst of load happened to hit.
    """
    mine, base = variant.blocks[workload][clock], bare.blocks[workload][clock]
    return {
        r: (quantile(mine[r], q) - quantile(base[r], q)) / 1000 for r in sorted(mine.keys() & base.keys())
    }


def _added(variant: Variant, bare: Variant, workload: str, q: float, clock: str = "cpu") -> float | None:
    rounds = _per_round(variant, bare, workload, q, clock)
    return median(list(rounds.values())) if rounds else None


def _per_chunk(variant: Variant, bare: Variant) -> list[float]:
    """Per round: (added on the 50-chunk stream - added on the 1-chunk stream) / 49."""
    long, short = _per_round(variant, bare, "stream", 0.5), _per_round(variant, bare, "stream1", 0.5)
    return [(long[r] - short[r]) / (STREAM_CHUNKS - 1) for r in long.keys() & short.keys()]


def _with_spread(values: list[float]) -> str:
    """Median ± half the interquartile range over rounds: how far to trust the figure on this machine."""
    if not values:
        return "—"
    spread = (quantile(values, 0.75) - quantile(values, 0.25)) / 2
    return f"{format_number(median(values))} ±{format_number(spread)}"


def _reference(variants: list[Variant], peer: str, openai_version: str) -> Variant | None:
    return next((v for v in variants if v.peer == peer and v.openai == openai_version and not v.error), None)


def _workload_table(variants: list[Variant], measured: list[Variant], workload: Workload) -> str:
    rows = []
    for variant in measured:
        bare = _reference(variants, "bare", variant.openai)
        llmtap = _reference(variants, "llmtap", variant.openai)
        if bare is None:
            continue
        rounds = list(_per_round(variant, bare, workload.name, 0.5).values())
        cpu_median, cpu_p90 = (_added(variant, bare, workload.name, q) for q in (0.5, 0.9))
        ours = _added(llmtap, bare, workload.name, 0.5) if llmtap else None
        ratio = f"{cpu_median / ours:.1f}×" if cpu_median is not None and ours and ours > 0 else "—"
        row = [variant.title, variant.openai, _with_spread(rounds), _num(cpu_p90), ratio]
        row.append(_num(_added(variant, bare, workload.name, 0.5, "wall")))
        if workload.name == "stream":
            row.append(_with_spread(_per_chunk(variant, bare)))
        rows.append(row)
    headers = [
        "peer",
        "openai",
        "added CPU µs median",
        "added CPU µs p90",
        "× llmtap",
        "added wall µs median",
    ]
    if workload.name == "stream":
        headers.append("CPU µs per chunk")
    return markdown_table(headers, rows)


def _baseline_table(variants: list[Variant]) -> str:
    shown = [w for w in WORKLOADS if w.name != "stream1"]
    rows = [
        [
            v.openai,
            *(_num(median(v.pooled(w.name)) / 1000) for w in shown),
            len(v.pooled("chat")),
        ]
        for v in variants
        if v.peer == "bare" and not v.error and v.pooled("chat")
    ]
    return markdown_table(["openai", *(f"{w.name} CPU µs" for w in shown), "calls per workload"], rows)


def _startup_table(measured: list[Variant]) -> str:
    rows = []
    for variant in measured:
        startup = variant.startup
        checks = startup[-1]["checks"] if startup else {}
        figures = [
            _num(median([s[key] for s in startup]) / scale if startup else None)
            for key, scale in (("import_ms", 1), ("setup_ms", 1), ("rss_added_bytes", 2**20))
        ]
        spans = "/".join(
            f"{checks[w]['spans_per_call']:g}" for w in ("chat", "stream", "embeddings") if w in checks
        )
        recorded = "yes" if checks.get("chat", {}).get("content") else "NO"
        rows.append(
            [variant.title, startup[-1]["peer_version"] if startup else "—", *figures, spans, recorded]
        )
    headers = [
        "peer",
        "version",
        "import CPU ms",
        "setup CPU ms",
        "RSS added MiB",
        "spans/call chat/stream/emb",
    ]
    return markdown_table([*headers, "prompt recorded"], rows)


def report(variants: list[Variant], failed: list[Venv], quick: bool) -> str:
    # llmtap first (once per openai version), then the peers in the order of PEERS.
    measured = sorted(
        (v for v in variants if v.peer != "bare" and not v.error), key=lambda v: v.peer != "llmtap"
    )
    out = ["What each observability library adds to an OpenAI call, side by side.", ""]
    if quick:
        out += [
            "_Quick mode: only the bare client and llmtap, in this interpreter. Building the peers' venvs takes "
            "several minutes of pip (OpenLIT alone pulls in boto3 and a dozen instrumentations), too long for a "
            "CI smoke test; run `python bench/peers.py` for the comparison._",
            "",
        ]
    rounds = max((len(v.blocks["chat"]["cpu"]) for v in variants), default=0)
    # The median of n values varies about 1.25 σ/√n, and half the interquartile range is about 0.67 σ.
    tighter = 0.67 * rounds**0.5 / 1.25
    out += [
        "Added µs = the peer's per-call quantile minus the bare client's on the same openai version, taken per "
        f"round (blocks run moments apart) and the median over the {rounds} rounds reported. CPU time of the "
        "process is the headline: on a shared machine wall time also counts the neighbours (wall median shown "
        "for context). `× llmtap` = added CPU median over llmtap's on the same openai version. Per chunk = "
        f"(50-chunk stream − 1-chunk stream) / {STREAM_CHUNKS - 1}. `±` = half the interquartile range of the "
        f"per-round figures: one round's noise; the median over {rounds} rounds is about {tighter:.1f}× "
        "steadier. Content capture on everywhere; llmtap also redacts.",
        "",
    ]
    for workload in (w for w in WORKLOADS if w.name != "stream1"):
        out += [f"### {workload.title}", "", _workload_table(variants, measured, workload), ""]
    out += ["### Bare client (the baseline)", "", _baseline_table(variants), ""]
    out += ["### Startup and memory", "", _startup_table(measured), ""]
    errors = [[v.title, v.openai, v.error] for v in variants if v.error]
    errors += [[venv.name, "—", f"install failed: {venv.error}"] for venv in failed]
    if errors:
        out += ["### Failed", "", markdown_table(["peer", "openai", "error"], errors), ""]
    return "\n".join(out)


def _num(value: float | None, digits: int = 0) -> float | str:
    return "—" if value is None else round(value, digits or (1 if abs(value) < 100 else 0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="CI smoke: bare vs llmtap here, few calls, no venvs"
    )
    parser.add_argument(
        "--sessions", type=int, help="fresh worker processes per variant (default 5; quick 1)"
    )
    parser.add_argument("--rounds", type=int, help="rotated rounds per session (default 12; quick 2)")
    parser.add_argument("--scale", type=float, help="multiplier for calls per block (default 1; quick 0.1)")
    parser.add_argument(
        "--dump", type=Path, help="also write every sample and startup figure to this JSON file"
    )
    args = parser.parse_args(argv)
    sessions = args.sessions or (1 if args.quick else 5)
    rounds = args.rounds or (2 if args.quick else 12)
    scale = args.scale or (0.1 if args.quick else 1.0)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    variants, failed = build_variants(args.quick, log)
    load_before = load_average()
    measure(variants, sessions, rounds, scale)
    if args.dump:
        args.dump.write_text(json.dumps([vars(variant) for variant in variants]))
    machine = machine_info()
    print(report(variants, failed, args.quick))
    print(
        f"Load average (1/5/15 min) {load_before} when measuring started, {machine.pop('load average (1/5/15 min)')} at the end."
    )
    print("Machine: " + ", ".join(f"{k} {v}" for k, v in machine.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
