"""Reads outboxd's /metrics for the demo.

    python3 scripts/lib/demo_metrics.py PORT              prints the lines the demo shows
    python3 scripts/lib/demo_metrics.py PORT --wait N     waits (up to 60 s) until N events are published
"""

import sys
import time
import urllib.request

SHOWN = ("outboxd_events_published_total", "outboxd_kafka_transactions_total", "outboxd_ready ")


def metrics(port):
    url = f"http://127.0.0.1:{port}/metrics"
    return urllib.request.urlopen(url, timeout=5).read().decode()


def published(text):
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("outboxd_events_published_total{")
    )


def wait(port, count):
    deadline = time.monotonic() + 60
    while published(metrics(port)) < count:
        if time.monotonic() > deadline:
            sys.exit(f"outboxd published fewer than {count} events in 60 s")
        time.sleep(0.1)


def show(port):
    for line in metrics(port).splitlines():
        if line.startswith(SHOWN):
            print(line)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[2] == "--wait":
        wait(sys.argv[1], int(sys.argv[3]))
    else:
        show(*sys.argv[1:])
