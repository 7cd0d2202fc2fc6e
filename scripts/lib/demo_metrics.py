"""Prints the lines of outboxd's /metrics that the demo shows: events, transactions, readiness.

    python3 scripts/lib/demo_metrics.py PORT
"""

import sys
import urllib.request

SHOWN = ("outboxd_events_published_total", "outboxd_kafka_transactions_total", "outboxd_ready ")


def main(port):
    url = f"http://127.0.0.1:{port}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(SHOWN):
            print(line)


if __name__ == "__main__":
    main(*sys.argv[1:])
