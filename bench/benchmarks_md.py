"""Renders BENCHMARKS.md from the outputs bench/all keeps (argv[1]).

Each driver prints a final JSON line with every figure; the tables below
come from those, and each driver's full output follows its table.
"""

import json
import pathlib
import sys

SECTION = sys.argv[1] == "--section" if len(sys.argv) > 1 else False
out = pathlib.Path(sys.argv[3] if SECTION else sys.argv[1])


def lines(name):
    path = out / name
    return path.read_text().splitlines() if path.exists() else []


def last_json(name):
    for line in reversed(lines(name)):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                return None
    return None


def mib(value):
    if isinstance(value, list):
        value = max((v for v in value if v), default=None)
    return "" if not value else f"{value / 1048576:.0f} MiB"


WEAKLINK_TITLE = "## Uploads over a weak link: 48 MiB, 2 MB/s up, 50 ms, outages"


def weaklink_section():
    """The bench/weaklink table: time to deliver and share of up-time used."""
    doc = [WEAKLINK_TITLE, ""]
    result = last_json("weaklink.txt")
    if not result:
        return doc + ["(bench/weaklink produced no result)", ""]
    doc.append(
        "`bench/weaklink`: every client sends the same file through the weak-link model "
        f"(`tenax_testkit::WeakLink`: {result['uplink'] / 1e6:g} MB/s up, "
        f"{result['downlink'] / 1e6:g} MB/s down, {result['delay_ms']} ms each way) in front "
        f"of a fresh server, with the same outages for every client (seed {result['seed']}). "
        "*Used* is the time the file needs at the uplink's rate over the time the link was up "
        "during the run; *back* is the median time from the link's return to the next 64 KiB "
        "delivered; the steady schedule, with no outage, is the ceiling of the others. "
        "tenax runs with its defaults; tus-js-client retries every 1 s "
        f"({result['chunk'] / 1048576:.0f} MiB chunks); google-resumable-media keeps its own "
        f"retry strategy ({result.get('google_chunk', 0) / 1048576:.0f} MiB chunks: it sends a "
        "failed chunk again from its start). Every stored file is checked byte for byte."
    )
    doc.append("")
    schedules = [s["name"] for s in result.get("schedules", [])]
    what = {s["name"]: s["what"] for s in result.get("schedules", [])}
    doc.append("| client | " + " | ".join(f"{n} ({what[n]})" for n in schedules) + " |")
    doc.append("|---|" + "---|" * len(schedules))
    clients = []
    for run in result.get("runs", []):
        if run["client"] not in clients:
            clients.append(run["client"])
    names = {
        "tenax-seed": "tenax upload (seed)",
        "tenax-tus": "tenax upload --protocol tus",
        "tenax-ietf": "tenax upload --protocol ietf",
        "tus-js": "tus-js-client → tenax (1 s retry)",
        "tus-js-tus-server": "tus-js-client → @tus/server (1 s retry)",
        "google": "google-resumable-media → tenax (own retry)",
    }
    for client in clients:
        cells = []
        for name in schedules:
            run = next(
                (r for r in result["runs"] if r["client"] == client and r["schedule"] == name),
                None,
            )
            if run is None:
                cells.append("")
            elif not run.get("ok"):
                cells.append(f"FAILED: {run.get('error', '')} ({run['seconds']:.0f} s)")
            else:
                cell = f"{run['seconds']:.1f} s, used {run['uptime_used']:.2f}"
                back = sorted(run.get("back_on_wire_seconds") or [])
                if back:
                    cell += f", back {back[len(back) // 2]:.2f} s"
                cells.append(cell)
        doc.append(f"| {names.get(client, client)} | " + " | ".join(cells) + " |")
    doc.append("")
    for target in result.get("targets", []):
        doc.append(
            f"- {target['schedule']}: tenax upload used {target['uptime_used']:.2f} of the "
            f"up-time (target ≥ 0.9: {'met' if target['uptime_met'] else 'MISSED'}); "
            f"tus-js-client took {target['tus_js_seconds']} s "
            f"(target not slower: {'met' if target['not_slower_met'] else 'MISSED'})"
        )
    doc.append("")
    doc.append(full("weaklink.txt"))
    return doc


def full(name):
    text = "\n".join(lines(name))
    return f"<details><summary>full output of {name}</summary>\n\n```\n{text}\n```\n</details>\n"


def table_section(rows, prose, producer, output):
    """A driver's table rows and a paragraph on them (or, without rows, that
    `producer` gave nothing), then its full output."""
    if rows:
        return rows + ["", prose, "", full(output)]
    return [f"({producer} produced no result)", "", full(output)]


if SECTION:
    # Replace (or append) only this section of an existing BENCHMARKS.md.
    if sys.argv[2] != "weaklink":
        sys.exit(f"unknown section {sys.argv[2]}")
    target = pathlib.Path(sys.argv[4])
    text = target.read_text() if target.exists() else "# Benchmarks\n"
    section = "\n".join(weaklink_section())
    start = text.find(WEAKLINK_TITLE)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    else:
        end = text.find("\n## ", start + len(WEAKLINK_TITLE))
        text = text[:start] + section + ("\n" + text[end + 1 :] if end >= 0 else "\n")
    target.write_text(text)
    sys.exit(0)

machine = dict(
    line.split("=", 1) for line in lines("machine.txt") if "=" in line
)
doc = ["# Benchmarks", ""]
doc.append(
    "Written by `bench/all` (every benchmark in one run; see `bench/README.md`). "
    "MB = 10^6 bytes. The machine is shared: the load average is part of the result. "
    "Binaries are built with the `bench-release` profile (release code, with line tables "
    "and symbols; the installed `release` build is the same code, stripped)."
)
doc.append("")
doc.append("| | |")
doc.append("|---|---|")
for key, label in [
    ("date", "date"),
    ("commit", "commit"),
    ("cpu", "CPU"),
    ("cores", "cores"),
    ("memory", "memory"),
    ("kernel", "kernel"),
    ("filesystem", "filesystem of the scratch directory"),
    ("load_start", "load average at the start (1/5/15 min)"),
    ("load_end", "load average at the end"),
]:
    doc.append(f"| {label} | {machine.get(key, '?')} |")
doc.append("")

upload = last_json("upload.txt")
doc.append("## Uploads, 1 GiB, one client")
doc.append("")
if upload:
    gib = upload.get("size_bytes", 1 << 30) / (1 << 30)
    doc.append("| series | best MB/s | median MB/s | spread | server peak RSS | server CPU s/GiB |")
    doc.append("|---|---|---|---|---|---|")
    for name, series in upload.get("results", {}).items():
        runs = series.get("runs_mb_s") or []
        cpu = sorted(c for c in series.get("server_cpu_seconds") or [] if c is not None)
        doc.append(
            f"| {name} | {series.get('best_mb_s')} | {series.get('median_mb_s')} "
            f"| {f'{min(runs)}–{max(runs)}' if runs else ''} "
            f"| {mib(series.get('peak_rss_bytes'))} "
            f"| {f'{cpu[len(cpu) // 2] / gib:.2f}' if cpu else ''} |"
        )
    doc.append("")
    for label, rows in upload.get("server_cpu", {}).items():
        for name, row in rows.items():
            if isinstance(row, dict):
                doc.append(
                    f"- server CPU per GiB, {name}: {row.get('cpu_s_per_gib')} s = "
                    f"{row.get('over_budget')}× the durable sink's plus its digests' "
                    f"({row.get('budget_s_per_gib')} s)"
                    + (" (target ≤ 1.15×)" if label == "8MiB" else "")
                )
            else:
                doc.append(f"- server CPU, seed as `tenax upload` sends it / tus @ {label}: {row}"
                           + (" (target ≤ 1.10)" if label == "8MiB" else ""))
    if "server_cpu_targets_met" in upload:
        doc.append(f"- server CPU targets met: {upload.get('server_cpu_targets_met')}")
    doc.append("")
    for label, ratio in upload.get("ratios", {}).items():
        doc.append(
            f"- tenax tus @ {label} / durable HTTP sink @ {label}: {ratio.get('over_limit')}"
            + (f" (target ≥ {ratio['target']})" if ratio.get("target") else "")
        )
    for label, row in upload.get("tus_vs_tus_server", {}).items():
        tus = row.get("tenax", {}).get(f"tenax tus @ {label}", {})
        doc.append(
            f"- tenax tus @ {label} / @tus/server: {tus.get('over_tus_server')}× "
            f"(medians {tus.get('over_tus_server_median')}×), met: {tus.get('speed_met')}"
        )
    doc.append("")
    doc.append(
        f"Targets (limit ratio and RSS) met: {upload.get('targets_met')}; "
        f"against @tus/server met: {upload.get('tus_targets_met')}. "
        "A warm-up repetition is discarded and the order of the runs rotates. "
        "Integrity is checked on the stored files. "
        "`fsync write` is a plain fsync'd copy, for information (no limit), `HTTP sink` the HTTP path, "
        "`durable HTTP sink` a minimal server that writes each body, starts its writeback "
        "and fdatasyncs before answering (no digests): the machine's limit for an "
        "acknowledged upload. @tus/server never fsyncs; tenax fdatasyncs every "
        "acknowledgement and computes SHA-256 and CRC32C (MD5 too for `tenax seed+md5`, "
        "the seed upload as Google's clients initiate it)."
    )
else:
    doc.append("(bench/run produced no result)")
doc.append("")
doc.append(full("upload.txt"))

doc.append("## What users run: real clients into real servers (`bench/clients`)")
doc.append("")
clients = lines("clients.txt")
table = [line for line in clients if line.startswith("|")]
ratios = [
    "- " + line.replace(" (@tus/server never fsyncs; tenax fsyncs before every acknowledgement)", "")
    for line in clients
    if " / " in line and line.rstrip().endswith("acknowledgement)")
]
doc.extend(
    table_section(
        table + [""] + ratios if table else [],
        "Each client at its defaults but the chunk size, a fresh server per run; CPU per GiB "
        "of file; integrity from the stored files. @tus/server never fsyncs; tenax fdatasyncs "
        "before every acknowledgement; the sinks are the tus clients' floors.",
        "bench/clients",
        "clients.txt",
    )
)

doc.append("## Where the time goes into tenax serve (`bench/clients --timeline`, 256 MiB)")
doc.append("")
timeline_lines = lines("timeline.txt")
heading = next((i for i, line in enumerate(timeline_lines) if line.startswith("Where the time goes")), None)
timeline = []
if heading is not None:
    for line in timeline_lines[heading + 1:]:
        if line.startswith("|"):
            timeline.append(line)
        elif timeline:
            break
doc.extend(
    table_section(
        timeline,
        "Seconds per run summed over the requests, from tenax serve's `tenax::timeline` events: before the "
        "first request (process start, creation), waiting for the first body byte, receiving, making durable "
        "(last write and fsync), finalising, the client's pauses between requests, after the last; then "
        "per-request medians. One run per row after a warm-up; the timeline log costs a JSON line per request.",
        "bench/clients --timeline",
        "timeline.txt",
    )
)

doc.append("## 100 concurrent uploads of 8 MiB (tus, one PATCH each)")
doc.append("")
doc.append("| server | MB/s (all uploads) | errors | HEAD p50 | HEAD p99 | server peak RSS |")
doc.append("|---|---|---|---|---|---|")
for name in ["concurrent-tenax.txt", "concurrent-tus-server.txt"]:
    result = last_json(name)
    if result:
        doc.append(
            f"| {result.get('server')} | {result['mb_per_s']:.0f} | {result['errors']} "
            f"| {result['status_p50_ms'] or 0:.2f} ms | {result['status_p99_ms'] or 0:.2f} ms "
            f"| {mib((result.get('server_vmhwm_kib') or 0) * 1024)} |"
        )
doc.append("")
doc.append(full("concurrent-tenax.txt"))
doc.append(full("concurrent-tus-server.txt"))

download = last_json("download.txt")
doc.append("## Downloads, 1 GiB")
doc.append("")
if download:
    doc.append("| series | best MB/s | median MB/s | serving peak RSS |")
    doc.append("|---|---|---|---|")
    for name, series in download.get("results", {}).items():
        doc.append(
            f"| {name} | {series.get('best_mb_s')} | {series.get('median_mb_s')} "
            f"| {mib(series.get('server_peak_rss_bytes'))} |"
        )
    doc.append("")
    doc.append(f"Targets (server ≥ 0.9× nginx, client ≥ curl) met: {download.get('targets_met')}.")
else:
    doc.append("(bench/download produced no result)")
doc.append("")
doc.append(full("download.txt"))

load = last_json("load.txt")
doc.append("## Load: 1,000 concurrent uploads of 64 KiB–4 MiB")
doc.append("")
if load:
    doc.append(
        f"{load['completed']}/{load['uploads']} uploads, {load['errors']} errors, "
        f"{load['bytes'] / 1e6:.0f} MB in {load['seconds']:.1f} s; "
        f"{load['status_queries']} status queries (`HEAD`) during the load: "
        f"p50 {load['status_p50_ms'] or 0:.2f} ms, p99 {load['status_p99_ms'] or 0:.2f} ms, "
        f"max {load['status_max_ms'] or 0:.0f} ms; as the server timed them: "
        f"p50 ≤ {load.get('server_status_p50_ms_at_most')} ms, "
        f"p99 ≤ {load.get('server_status_p99_ms_at_most')} ms; server RSS peak "
        f"{mib((load.get('server_vmhwm_kib') or 0) * 1024)}."
    )
doc.append("")
doc.append(full("load.txt"))

soak = last_json("soak.txt")
doc.append("## Link soak: 1 GiB through a link cut every 1–8 MiB")
doc.append("")
if soak:
    doc.append(
        "| dialect | seconds | cuts | re-sent bytes | re-sent share "
        "| lost per cut: read past the cut by the proxy | unread in the proxy's socket "
        "| on the client's side | sha256 equal |"
    )
    doc.append("|---|---|---|---|---|---|---|---|---|")

    def per_cut(run, key):
        value = run.get(key)
        return "" if value is None else f"{value / 1024 / max(run['cuts'], 1):.0f} KiB"

    for run in soak.get("runs", []):
        doc.append(
            f"| {run['dialect']} | {run['seconds']:.1f} | {run['cuts']} | {run['resent']} "
            f"| {run['resent_share'] * 100:.2f}% | {per_cut(run, 'lost_read_past_cut')} "
            f"| {per_cut(run, 'lost_unread_in_proxy')} | {per_cut(run, 'lost_client_side')} "
            f"| {run['sha256_equal']} |"
        )
    doc.append("")
    doc.append(
        "Target at most "
        f"{soak.get('target_client_side_per_cut_kib')} KiB per cut on the client's side met: "
        f"{soak.get('targets_met')}. The proxy's two shares stand for the bytes in flight "
        "on the link when it dies (crates/testkit/src/proxy.rs), which no client can spare."
    )
doc.append("")
doc.append(full("soak.txt"))

doc.append("## Object storage: 1 GiB through tenax onto S3 against a direct multipart upload")
doc.append("")
ratios = [line for line in lines("s3.txt") if line.startswith(("ratio", "direct", "through"))]
if ratios:
    doc.append("```")
    doc.extend(ratios)
    doc.append("```")
doc.append("")
doc.append(full("s3.txt"))

cluster = last_json("cluster.txt")
doc.append("## Several nodes: 32 concurrent uploads through 1, 2 and 3 nodes")
doc.append("")
if cluster:
    doc.append(
        f"{cluster['uploads']} tus uploads of {cluster['size'] / 1048576:.0f} MiB each, "
        f"{cluster['chunk'] / 1048576:.0f} MiB PATCHes, through a round-robin balancer; "
        "moto and PostgreSQL on the same machine."
    )
    doc.append("")
    doc.append("| nodes | seconds | MB/s | ratio to 1 node | requests per node |")
    doc.append("|---|---|---|---|---|")
    for run in cluster.get("results", []):
        doc.append(
            f"| {run['nodes']} | {run['seconds']:.1f} | {run['mb_per_s']:.1f} "
            f"| {run['ratio']:.2f} | {run['requests_per_node']} |"
        )
doc.append("")
doc.append(full("cluster.txt"))
doc.extend(weaklink_section())
print("\n".join(doc))
