#!/usr/bin/env python3
"""Runs the test suite's binaries side by side: `cargo test` runs them one after another.

    run_tests.py JOBS [cargo test options]

Most of the suite's time is spent waiting (for a broker to start, a timeout to pass, a commit to
become visible), so on a two-core machine three binaries at a time finish in far less time than one
after another. The binaries are built first (`cargo test --no-run`), then run with the package root
as working directory, as cargo runs them, slowest first so that the long ones do not start last.
Each binary's output is printed whole when it ends; a table of durations and the failures close the
run. Exits non-zero if any binary failed (all of them run, as with `--no-fail-fast`).

The tests of one binary already run in parallel threads against the shared dev environment, and
what the shared services must not suffer (restarts, pauses) runs on a private broker or cluster:
running binaries side by side asks nothing more of them.
"""

import json
import os
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Binaries that take longest, longest first (from the durations table a run prints): they start
# first. A name missing here only starts later; the table shows when this list needs an update.
SLOWEST_FIRST = [
    "relay_logical",
    "kafka_security",
    "relay_poll",
    "failover",
    "readiness",
    "wal_retention",
    "avro_registry",
    "operations",
    "kafka_transactions",
    "routing",
    "kafka_topics",
]


def build(cargo_args):
    """Builds the test binaries; returns (name, kind, path) of each, in cargo's order."""
    cmd = ["cargo", "test", *cargo_args, "--no-run", "--message-format=json-render-diagnostics"]
    out = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    if out.returncode != 0:
        sys.exit(out.returncode)
    binaries = []
    for line in out.stdout.splitlines():
        message = json.loads(line)
        if message.get("reason") == "compiler-artifact" and message.get("executable") and message[
            "profile"
        ]["test"]:
            target = message["target"]
            binaries.append((target["name"], target["kind"][0], message["executable"]))
    return binaries


def order(binaries):
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    return sorted(binaries, key=lambda b: (rank.get(b[0], len(rank)), b[0]))


def run(jobs, cargo_args):
    binaries = order(build(cargo_args))
    # Documentation tests have no binary of their own: rustdoc builds and runs them.
    runs = [(f"{kind} {name}", [path]) for name, kind, path in binaries]
    runs.append(("doc-tests", ["cargo", "test", *cargo_args, "--doc"]))

    lock = threading.Lock()
    pending = list(runs)
    results = []

    def worker():
        while True:
            with lock:
                if not pending:
                    return
                label, cmd = pending.pop(0)
            started = time.monotonic()
            with tempfile.TemporaryFile(mode="w+") as log:
                code = subprocess.call(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
                log.seek(0)
                output = log.read()
            seconds = time.monotonic() - started
            with lock:
                verdict = "ok" if code == 0 else f"FAILED (exit {code})"
                print(f"\n==> {label}: {verdict} in {seconds:.1f} s", flush=True)
                print(output, end="", flush=True)
                results.append((label, code, seconds))

    threads = [threading.Thread(target=worker) for _ in range(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    print("\n==> durations (seconds), slowest first")
    for label, code, seconds in sorted(results, key=lambda r: -r[2]):
        print(f"{seconds:8.1f}  {label}{'' if code == 0 else '  FAILED'}")
    failed = [label for label, code, _ in results if code != 0]
    if failed:
        print(f"\n==> {len(failed)} failed: {', '.join(failed)}")
        return 1
    print(f"\n==> all {len(results)} passed")
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 2 or not sys.argv[1].isdigit() or int(sys.argv[1]) < 1:
        sys.exit("usage: run_tests.py JOBS [cargo test options]")
    sys.exit(run(int(sys.argv[1]), sys.argv[2:]))
