#!/usr/bin/env python3
"""Renders a side-by-side run (bench/results/side-by-side-*.json) for people: the table between the
markers in bench/README.md and a PNG chart of the W1 drain and W3 latency comparison.

    python3 bench/report.py bench/results/side-by-side-<date>.json

Ratios and target verdicts are computed here, from the raw figures the benchmark wrote, so the
JSON stays the one source of truth and re-rendering an old run gives the same table.
"""
import json
import pathlib
import sys

BEGIN, END = "<!-- side-by-side:begin -->", "<!-- side-by-side:end -->"
BENCH = pathlib.Path(__file__).resolve().parent


def fmt(value, digits=0):
    if value is None:
        return "–"
    return f"{value:,.{digits}f}"


def ratio(a, b):
    return a / b if a is not None and b else None


def ceiling(workloads, name):
    """min(pg_recvlogical, Kafka's transactional producer); the broker's figure comes from W1."""
    w = workloads[name]
    walsender = w["pg_recvlogical"]["events_per_s"]
    broker = workloads.get("w1", {}).get("kafka_producer_performance", {}).get("events_per_s")
    return walsender, broker, min(x for x in (walsender, broker) if x is not None)


def drain_table(workloads):
    rows = [
        "| workload | pg_recvlogical ev/s | Kafka txn producer rec/s | outboxd ev/s | Debezium ev/s "
        "| outboxd ÷ min(ceilings) | outboxd ÷ Debezium | outboxd peak RSS | Debezium peak RSS "
        "| outboxd ev per CPU-s | Debezium ev per CPU-s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    labels = {
        "w1": "W1 200k × 1-row txns",
        "w2": "W2 1M rows in 100 txns",
        "w4": "W4 one 1M-row txn",
    }
    for name in ("w1", "w2", "w4"):
        if name not in workloads:
            continue
        w = workloads[name]
        walsender, broker, low = ceiling(workloads, name)
        ours = w["outboxd"]["events_per_s"]
        theirs = w.get("debezium", {}).get("events_per_s")
        rows.append(
            f"| {labels[name]} | {fmt(walsender)} | {fmt(broker)} | {fmt(ours)} | {fmt(theirs)} "
            f"| **{fmt(ratio(ours, low), 2)}** | **{fmt(ratio(ours, theirs), 1)}** "
            f"| {fmt(w['outboxd']['peak_rss_mib'])} MiB "
            f"| {fmt(w.get('debezium', {}).get('peak_rss_mib'))} MiB "
            f"| {fmt(per_cpu_second(w['outboxd']))} | {fmt(per_cpu_second(w.get('debezium', {})))} |"
        )
    return rows


def per_cpu_second(figures):
    """Events per CPU-second of the relay's process (user + system, its startup included)."""
    return (figures.get("cpu") or {}).get("events_per_cpu_s")


def latency_table(w3):
    rows = [
        f"| W3: {w3['rate']:,} txn/s for {w3['seconds']} s | p50 ms | p95 ms | p99 ms | max ms "
        "| achieved txn/s | steady RSS (max) | CPU-s per million events |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for relay in ("outboxd", "debezium"):
        if relay not in w3:
            continue
        r = w3[relay]
        lat = r["latency_ms"]
        rows.append(
            f"| {relay} | {fmt(lat['p50'], 1)} | {fmt(lat['p95'], 1)} | {fmt(lat['p99'], 1)} "
            f"| {fmt(lat['max'], 1)} | {fmt(r['achieved_rate'])} "
            f"| {fmt(r['steady_rss_mib']['max'])} MiB | {fmt((r.get('cpu') or {}).get('cpu_s_per_million'))} |"
        )
    if "debezium" in w3:
        o, d = w3["outboxd"], w3["debezium"]
        rows.append(
            "| outboxd ÷ Debezium | "
            + " | ".join(fmt(ratio(o["latency_ms"][p], d["latency_ms"][p]), 2) for p in ("p50", "p95", "p99", "max"))
            + f" | | {fmt(ratio(o['steady_rss_mib']['max'], d['steady_rss_mib']['max']), 3)} | |"
        )
    return rows


def stage_table(w3):
    """Where outboxd's W3 latency goes: its own histograms, each counted from the Postgres commit
    timestamp, then the bench's commit-to-receipt figure (the consumer's read_committed fetch)."""
    stages = w3.get("outboxd", {}).get("stages_ms")
    if not stages:
        return []
    rows = [
        "| outboxd W3, from the Postgres commit to … | p50 ms | p95 ms | p99 ms | samples |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    labels = {
        "decoded": "its Commit decoded (walsender + our decoder)",
        "produced": "its last record handed to the producer",
        "kafka_committed": "the Kafka commit returned",
    }
    for point, label in labels.items():
        s = stages[point]
        rows.append(
            f"| {label} | {fmt(s['p50'], 1)} | {fmt(s['p95'], 1)} | {fmt(s['p99'], 1)} "
            f"| {fmt(s['samples'])} |"
        )
    lat = w3["outboxd"]["latency_ms"]
    rows.append(
        f"| received by a read_committed consumer (the bench's clock) | {fmt(lat['p50'], 1)} "
        f"| {fmt(lat['p95'], 1)} | {fmt(lat['p99'], 1)} | {fmt(w3['outboxd']['received'])} |"
    )
    return rows


def targets(workloads):
    checks = []
    if "w1" in workloads:
        w1 = workloads["w1"]
        ours = w1["outboxd"]["events_per_s"]
        checks.append(("W1 drain ≥ 0.95 × min(ceilings)", ratio(ours, ceiling(workloads, "w1")[2]), 0.95, ">="))
        if per_cpu_second(w1["outboxd"]) is not None:
            checks.append(("W1 ≥ 100k events per relay CPU-s", per_cpu_second(w1["outboxd"]), 100_000.0, ">="))
        if "debezium" in w1:
            checks.append(("W1 drain ≥ 3 × Debezium", ratio(ours, w1["debezium"]["events_per_s"]), 3.0, ">="))
    if "w3" in workloads:
        w3 = workloads["w3"]["outboxd"]
        checks.append(("W3 p99 < 100 ms", w3["latency_ms"]["p99"], 100.0, "<"))
        checks.append(("steady RSS (W3) < 64 MiB", w3["steady_rss_mib"]["max"], 64.0, "<"))
    if "w4" in workloads:
        checks.append(("W4 peak RSS < 150 MiB", workloads["w4"]["outboxd"]["peak_rss_mib"], 150.0, "<"))
    rows = ["| target | measured | verdict |", "| --- | ---: | --- |"]
    for label, value, bound, op in checks:
        met = value >= bound if op == ">=" else value < bound
        rows.append(f"| {label} | {fmt(value, 2)} | {'met' if met else '**missed**'} |")
    return rows


def environment_line(run):
    e = run["environment"]
    return (
        f"Run of {run['started_at']} ({run['duration_seconds'] / 60:.1f} min), scale {run['scale']}: "
        f"{e.get('cpu')}, {e.get('cores')} cores, {e.get('memory_gib')} GiB; PostgreSQL {e.get('postgres')}, "
        f"Apache Kafka {e.get('kafka', '?')}, Debezium Server {e.get('debezium', '–')} on {e.get('debezium_java', '–')}, "
        f"outboxd {e.get('outboxd')} at {e.get('git_commit', '?')} ({e.get('rustc', 'rustc ?')}). "
        f"Load average before/after: {e.get('load_average_before')} / {e.get('load_average_after')} "
        "(the machine is shared: other engineers compile on it)."
    )


def chart(run, png):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = run["workloads"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    if "w1" in workloads:
        w1 = workloads["w1"]
        bars = [
            ("pg_recvlogical\n(ceiling)", w1["pg_recvlogical"]["events_per_s"], "#999999"),
            ("Kafka txn producer\n(ceiling)", w1.get("kafka_producer_performance", {}).get("events_per_s"), "#bbbbbb"),
            ("outboxd", w1["outboxd"]["events_per_s"], "#2b7bba"),
            ("Debezium Server", w1.get("debezium", {}).get("events_per_s"), "#e08214"),
        ]
        bars = [b for b in bars if b[1] is not None]
        left.bar([b[0] for b in bars], [b[1] for b in bars], color=[b[2] for b in bars])
        for i, b in enumerate(bars):
            left.text(i, b[1], f"{b[1]:,.0f}", ha="center", va="bottom", fontsize=8)
        left.set_title("W1: drain 200,000 single-row transactions")
        left.set_ylabel("events/s (higher is better)")
        left.tick_params(axis="x", labelsize=8)
    if "w3" in workloads:
        w3 = workloads["w3"]
        relays = [r for r in ("outboxd", "debezium") if r in w3]
        width = 0.8 / len(relays)
        colors = {"outboxd": "#2b7bba", "debezium": "#e08214"}
        names = {"outboxd": "outboxd", "debezium": "Debezium Server"}
        for j, relay in enumerate(relays):
            values = [w3[relay]["latency_ms"][p] for p in ("p50", "p95", "p99")]
            xs = [i + (j - (len(relays) - 1) / 2) * width for i in range(3)]
            right.bar(xs, values, width, label=names[relay], color=colors[relay])
            for x, v in zip(xs, values):
                right.text(x, v, f"{v:,.0f}", ha="center", va="bottom", fontsize=8)
        right.axhline(100, color="red", linestyle="--", linewidth=1, label="target p99 < 100 ms")
        right.set_xticks(range(3), ["p50", "p95", "p99"])
        right.set_yscale("log")
        right.set_title(f"W3: commit → read_committed receipt at {w3['rate']:,} txn/s")
        right.set_ylabel("latency, ms (lower is better)")
        right.legend(fontsize=8)
    fig.suptitle(f"outboxd side by side, {run['started_at'][:10]} (shared 2-core machine)", fontsize=10)
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def snapshot_lines(run, path):
    """The snapshot benchmark (bench/snapshot.rs): rows/s against COPY and Debezium, peak RSS per
    chunk size, and W3 alone and beside a snapshot."""
    copy = max(run["copy"], key=lambda c: c["events_per_s"])
    debezium = run.get("debezium") or {}
    theirs = debezium.get("events_per_s")
    # Runs before the producer ceiling was measured have none: their min(ceilings) is COPY's.
    producer = run.get("kafka_producer_performance") or {}
    broker = producer.get("events_per_s")
    low = min(x for x in (copy["events_per_s"], broker) if x is not None)
    rows = [
        environment_line(run),
        "",
        f"| {run['rows']:,} rows ({run['table_bytes'] / 2**20:,.0f} MiB with its index) | rows/s | seconds "
        "| ÷ COPY | ÷ min(ceilings) | ÷ Debezium | peak RSS |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| ceiling: `COPY (SELECT * FROM items ORDER BY id) TO STDOUT` (better of "
        f"{' / '.join(fmt(c['events_per_s']) for c in run['copy'])}) | {fmt(copy['events_per_s'])} "
        f"| {fmt(copy['seconds'], 1)} | 1.00 | | | |",
    ]
    if broker:
        rows.append(
            f"| ceiling: Kafka's transactional `ProducerPerformance`, {run['rows']:,} records of "
            f"{producer['record_bytes']:,} bytes (the reads' mean) | {fmt(broker)} | "
            f"{fmt(run['rows'] / broker, 1)} | {fmt(ratio(broker, copy['events_per_s']), 2)} | | | |"
        )
    for o in run["outboxd"]:
        rows.append(
            f"| outboxd, exactly once, chunk_size {o['chunk_size']:,} | {fmt(o['events_per_s'])} "
            f"| {fmt(o['seconds'], 1)} | **{fmt(ratio(o['events_per_s'], copy['events_per_s']), 2)}** "
            f"| **{fmt(ratio(o['events_per_s'], low), 2)}** "
            f"| **{fmt(ratio(o['events_per_s'], theirs), 1)}** | {fmt(o['peak_rss_mib'])} MiB |"
        )
    if theirs:
        rows.append(
            f"| Debezium Server, initial snapshot | {fmt(theirs)} | {fmt(debezium['seconds'], 1)} "
            f"| {fmt(ratio(theirs, copy['events_per_s']), 2)} | {fmt(ratio(theirs, low), 2)} | 1.0 "
            f"| {fmt(debezium['peak_rss_mib'])} MiB |"
        )
    alone, during = run["w3_alone"], run["w3_during_snapshot"]
    rows += [
        "",
        f"| W3: {alone['rate']:,} txn/s for {alone['seconds']} s | p50 ms | p95 ms | p99 ms | max ms "
        "| achieved txn/s | relay RSS (max) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, w in (("outboxd, no snapshot", alone), ("outboxd, while it snapshots the table", during)):
        lat = w["latency_ms"]
        rows.append(
            f"| {label} | {fmt(lat['p50'], 1)} | {fmt(lat['p95'], 1)} | {fmt(lat['p99'], 1)} "
            f"| {fmt(lat['max'], 1)} | {fmt(w['achieved_rate'])} | {fmt(w['steady_rss_mib']['max'])} MiB |"
        )
    rows += [
        "",
        f"W3 beside the snapshot ended {during['w3_ended_after_s']:.1f} s after the relay's start; the "
        f"snapshot was complete after {during['snapshot_complete_after_s']:.1f} s"
        + (" (W3 ran within it)." if during["snapshot_complete_after_s"] >= during["w3_ended_after_s"]
           else " (**W3 outlasted it**: part of W3 ran after the snapshot)."),
        "",
    ]
    default = run["outboxd"][0]
    checks = [("snapshot ≥ 0.8 × COPY", ratio(default["events_per_s"], copy["events_per_s"]), 0.8)]
    if theirs:
        checks.append(("snapshot ≥ 3 × Debezium", ratio(default["events_per_s"], theirs), 3.0))
    rows += ["| target (chunk_size " + f"{default['chunk_size']:,}) | measured | verdict |", "| --- | ---: | --- |"]
    for label, value, bound in checks:
        rows.append(f"| {label} | {fmt(value, 2)} | {'met' if value >= bound else '**missed**'} |")
    rows += ["", f"Raw figures: `results/{path.name}`."]
    return rows


def write_section(begin, end, lines):
    readme = BENCH / "README.md"
    text = readme.read_text()
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(head + begin + "\n" + "\n".join(lines) + "\n" + end + tail)
    return readme


def main():
    path = pathlib.Path(sys.argv[1])
    run = json.loads(path.read_text())
    if run.get("benchmark") == "snapshot":
        readme = write_section("<!-- snapshot:begin -->", "<!-- snapshot:end -->", snapshot_lines(run, path))
        print(f"wrote the table in {readme}")
        return
    png = path.with_suffix(".png")
    chart(run, png)
    workloads = run["workloads"]
    lines = [environment_line(run), ""]
    lines += drain_table(workloads) + [""]
    if "w3" in workloads:
        lines += latency_table(workloads["w3"]) + [""]
        lines += stage_table(workloads["w3"]) + [""]
    lines += targets(workloads) + [""]
    lines += [
        f"Raw figures: `results/{path.name}`. Chart: `results/{png.name}`.",
        "",
        f"![W1 drain and W3 latency](results/{png.name})",
    ]
    readme = write_section(BEGIN, END, lines)
    print(f"wrote {png} and the table in {readme}")


if __name__ == "__main__":
    main()
