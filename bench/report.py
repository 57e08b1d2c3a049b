#!/usr/bin/env python3
"""Summarises scripts/bench results and writes the tables of docs/BENCHMARKS.md.

  report.py OUTDIR LATEST.json [--runs N] [--quick 0|1] [--bench-bin PATH]
      reads OUTDIR/<scenario>.<system>.<run>.json (switchboard-bench --json
      output), writes LATEST.json: machine, per-run figures and medians.
  report.py --markdown LATEST.json docs/BENCHMARKS.md
      regenerates the text between <!-- bench:begin --> and <!-- bench:end -->
      (nothing outside the markers is touched).

Standard library only (the chart, bench/chart.py, needs matplotlib).
"""

import glob
import json
import os
import platform
import re
import statistics
import subprocess
import sys
from datetime import datetime, timezone

BEGIN = "<!-- bench:begin -->"
END = "<!-- bench:end -->"
SYSTEMS = ["switchboard", "ws", "socketio", "nats"]
NAMES = {"switchboard": "Switchboard", "ws": "`ws` (Node)", "socketio": "socket.io 4 (Node)", "nats": "NATS core"}


def machine():
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gib = None
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                ram_gib = int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    def version(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip().splitlines()[0]
        except Exception:
            return None
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gib": round(ram_gib, 1) if ram_gib else None,
        "kernel": platform.release(),
        "node": version(["node", "--version"]),
        "nats_server": version(["nats-server", "--version"]) or version(["/usr/sbin/nats-server", "--version"]),
    }


def fanout_summary(r):
    steps = r["steps"]
    sat = r.get("saturation_step")
    half = r.get("half_step")
    ref = steps[sat] if sat is not None else steps[0]
    lat = (half or ref)["latency_ms"]
    expected = sum(s["expected"] for s in steps) + (half["expected"] if half else 0)
    return {
        "connected": r["subscribers_connected"],
        "subscribers": r["subscribers"],
        "channels": r["channels"],
        "connect_rate": r["connect_rate"],
        "saturated": sat is not None,
        "saturation_rate": steps[sat]["target_rate"] if sat is not None else None,
        "saturation_delivered_per_sec": steps[sat]["delivered_per_sec"] if sat is not None else None,
        "peak_delivered_per_sec": max(s["delivered_per_sec"] for s in steps),
        "delivered_per_sec": ref["delivered_per_sec"],
        "p50": lat["p50"],
        "p99": lat["p99"],
        "p999": lat["p999"],
        "latency_at": "half" if half else ("saturation" if sat is not None else "first step"),
        "cpu_per_million": ref["server_cpu_secs_per_million"],
        "per_cpu_sec": ref["delivered_per_server_cpu_sec"],
        "missing": r["missing"],
        "expected": expected,
        "loss_pct": 100.0 * r["missing"] / expected if expected else 0.0,
        "disconnects": r["disconnects"],
        "steps": [
            {
                "rate": s["target_rate"],
                "delivered_per_sec": s["delivered_per_sec"],
                "p50": s["latency_ms"]["p50"],
                "p99": s["latency_ms"]["p99"],
                "cpu_per_million": s["server_cpu_secs_per_million"],
                "complete": s["complete"],
            }
            for s in steps
        ],
    }


def idle_summary(r):
    return {
        "connections": r["connections"],
        "connected": r["connected"],
        "failed": r["failed"],
        "connect_rate": r["connect_rate"],
        "per_cpu_sec": r["connects_per_server_cpu_sec"],
        "rss_per_conn_kib": r["server_rss_per_conn_kib"],
        "alive": r["alive_after_hold"],
    }


def median_of(runs):
    out = {}
    for k, v in runs[0].items():
        vals = [r[k] for r in runs if isinstance(r.get(k), (int, float)) and not isinstance(r.get(k), bool)]
        if k in ("saturation_rate", "saturation_delivered_per_sec") and len(vals) * 2 <= len(runs):
            out[k] = None  # most runs never got a step within the limit
        elif vals and not isinstance(v, bool):
            out[k] = statistics.median(vals)
        elif isinstance(v, bool):
            out[k] = sum(1 for r in runs if r.get(k)) * 2 > len(runs)
        elif k == "steps":
            # The steps of the run whose saturation delivery rate is the median.
            key = lambda r: r.get("saturation_delivered_per_sec") or 0
            ordered = sorted(runs, key=key)
            out[k] = ordered[len(ordered) // 2]["steps"]
        else:
            out[k] = v
    return out


def summarise(outdir, latest, runs, quick, bench_bin):
    results = {}
    loads = []
    commands = {}
    for path in sorted(glob.glob(os.path.join(outdir, "*.json"))):
        m = re.match(r"(.+)\.([a-z]+)\.(\d+)\.json$", os.path.basename(path))
        if not m:
            continue
        scenario, system, run = m.group(1), m.group(2), int(m.group(3))
        r = json.load(open(path))
        s = idle_summary(r) if r["bench"] == "peer-idle" else fanout_summary(r)
        s["run"] = run
        s["loadavg_before"] = r.get("loadavg_before")
        s["loadavg_after"] = r.get("loadavg_after")
        for la in (r.get("loadavg_before"), r.get("loadavg_after")):
            if la:
                loads.append(float(la.split()[0]))
        cmd = r.get("command", "")
        cmd = cmd.replace(bench_bin, "target/release/switchboard-bench") if bench_bin else cmd
        cmd = re.sub(r"--server-pid [0-9,]+", "--server-pid $PID", cmd)
        commands.setdefault(scenario, {})[system] = cmd
        results.setdefault(scenario, {}).setdefault(system, []).append(s)
    summary = {}
    for scenario, by_system in results.items():
        summary[scenario] = {}
        for system, rs in by_system.items():
            rs.sort(key=lambda x: x["run"])
            summary[scenario][system] = {"median": median_of(rs), "runs": rs}
    doc = {
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "runs": runs,
        "quick": bool(int(quick)),
        "machine": machine(),
        "loadavg_1min": {"min": min(loads), "max": max(loads)} if loads else None,
        "commands": commands,
        "results": summary,
    }
    os.makedirs(os.path.dirname(latest) or ".", exist_ok=True)
    with open(latest, "w") as f:
        json.dump(doc, f, indent=1)
    print(f"wrote {latest}")


def fmt(v, digits=0, unit=""):
    if v is None:
        return "—"
    v = float(v)
    if digits == 0 and abs(v) >= 1000:
        return f"{v / 1000:.1f}k{unit}"
    return f"{v:.{digits}f}{unit}"


def ratio(sb, peer, digits=2):
    if sb is None or peer is None or peer == 0:
        return "—"
    return f"{sb / peer:.{digits}f}×"


def runs_of(entry, key, digits=0):
    vals = [r.get(key) for r in entry["runs"]]
    return ", ".join(fmt(v, digits) for v in vals)


def fanout_table(res, title, stepped):
    lines = [f"#### {title}", ""]
    systems = [s for s in SYSTEMS if s in res]
    sb = res.get("switchboard", {}).get("median")
    if stepped:
        lines.append(
            "| system | saturation (publications/s) | delivered msg/s at saturation (runs) | peak delivered msg/s "
            "| p50 / p99 / p999 ms at half saturation | server CPU-s per million deliveries | deliveries per server CPU-s "
            "| loss | Switchboard/peer, deliveries per CPU-s | Switchboard/peer, delivered msg/s |"
        )
        lines.append("|---|---|---|---|---|---|---|---|---|---|")
    else:
        lines.append(
            "| system | delivered msg/s (runs) | p50 / p99 / p999 ms | server CPU-s per million deliveries "
            "| deliveries per server CPU-s | loss | Switchboard/peer, deliveries per CPU-s | Switchboard/peer, delivered msg/s |"
        )
        lines.append("|---|---|---|---|---|---|---|---|")
    for s in systems:
        e = res[s]
        m = e["median"]
        lat = f"{m['p50']:.2f} / {m['p99']:.2f} / {m['p999']:.2f}"
        loss = f"{int(m['missing'])} ({m['loss_pct']:.3f} %)" if m["missing"] else "0"
        r_cpu = ratio(sb and sb["per_cpu_sec"], m["per_cpu_sec"]) if s != "switchboard" else "1"
        if stepped:
            key = "saturation_delivered_per_sec"
            r_rate = ratio(sb and sb.get(key), m.get(key)) if s != "switchboard" else "1"
            lines.append(
                f"| {NAMES[s]} | {fmt(m['saturation_rate'])} | {fmt(m[key])} ({runs_of(e, key)}) "
                f"| {fmt(m['peak_delivered_per_sec'])} | {lat} | {m['cpu_per_million']:.2f} | {fmt(m['per_cpu_sec'])} "
                f"| {loss} | {r_cpu} | {r_rate} |"
            )
        else:
            key = "delivered_per_sec"
            r_rate = ratio(sb and sb.get(key), m.get(key)) if s != "switchboard" else "1"
            lines.append(
                f"| {NAMES[s]} | {fmt(m[key])} ({runs_of(e, key)}) | {lat} | {m['cpu_per_million']:.2f} "
                f"| {fmt(m['per_cpu_sec'])} | {loss} | {r_cpu} | {r_rate} |"
            )
    lines.append("")
    return lines


def idle_table(res, title):
    lines = [f"#### {title}", ""]
    lines.append(
        "| system | connected | connect rate /s (runs) | connections per server CPU-s | server RSS per connection "
        "| Switchboard/peer, RSS per connection | Switchboard/peer, connect rate |"
    )
    lines.append("|---|---|---|---|---|---|---|")
    sb = res.get("switchboard", {}).get("median")
    for s in [s for s in SYSTEMS if s in res]:
        e = res[s]
        m = e["median"]
        rss = m["rss_per_conn_kib"]
        lines.append(
            f"| {NAMES[s]} | {int(m['connected'])} of {int(m['connections'])} | {fmt(m['connect_rate'])} ({runs_of(e, 'connect_rate')}) "
            f"| {fmt(m['per_cpu_sec'])} | {fmt(rss, 1, ' KiB')} "
            f"| {ratio(sb and sb['rss_per_conn_kib'], rss) if s != 'switchboard' else '1'} "
            f"| {ratio(sb and sb['connect_rate'], m['connect_rate']) if s != 'switchboard' else '1'} |"
        )
    lines.append("")
    return lines


def cluster_table(results):
    one = results.get("cluster-1", {}).get("switchboard")
    three = results.get("cluster-3", {}).get("switchboard")
    if not one and not three:
        return []
    lines = [
        "#### Switchboard cluster: 1 node vs 3 nodes (bus NATS, store PostgreSQL), 1 publisher → 1,000 subscribers",
        "",
        "| nodes | saturation (publications/s) | delivered msg/s at saturation (runs) | peak delivered msg/s "
        "| p50 / p99 ms at half saturation | server CPU-s per million deliveries (all nodes) | loss |",
        "|---|---|---|---|---|---|---|",
    ]
    for n, e in (("1", one), ("3", three)):
        if not e:
            continue
        m = e["median"]
        loss = f"{int(m['missing'])} ({m['loss_pct']:.3f} %)" if m["missing"] else "0"
        lines.append(
            f"| {n} | {fmt(m['saturation_rate'])} | {fmt(m['saturation_delivered_per_sec'])} "
            f"({runs_of(e, 'saturation_delivered_per_sec')}) | {fmt(m['peak_delivered_per_sec'])} "
            f"| {m['p50']:.2f} / {m['p99']:.2f} | {m['cpu_per_million']:.2f} | {loss} |"
        )
    if one and three:
        a = one["median"].get("peak_delivered_per_sec")
        b = three["median"].get("peak_delivered_per_sec")
        lines += ["", f"Peak delivered msg/s, 3 nodes / 1 node: **{ratio(b, a)}**."]
    lines.append("")
    return lines


def markdown(latest, doc_path):
    d = json.load(open(latest))
    m = d["machine"]
    res = d["results"]
    la = d.get("loadavg_1min")
    out = [
        BEGIN,
        "",
        "<!-- Generated by scripts/bench (bench/report.py): edit the generator, not this text. -->",
        "",
        f"### Side by side: latest run ({d['generated']}{', --quick' if d['quick'] else ''})",
        "",
        f"Machine: {m['nproc']} CPUs ({m['cpu']}), {m['ram_gib']} GiB RAM, Linux {m['kernel']}, "
        f"Node {m['node']}, {m['nats_server']}. Every server and the load generator share these CPUs; "
        f"other engineers' builds ran at the same time: 1-minute load average "
        + (f"{la['min']:.1f}–{la['max']:.1f}" if la else "unknown")
        + " during the runs. Figures are medians of "
        f"{d['runs']} runs (each metric separately; the runs of the headline figure in brackets); the systems "
        "were measured in turn within each run, so the ratios compare figures taken side by side under the same load.",
        "",
        "Reading the tables: *saturation* is the highest publish rate of the stepped run (×2 per step) whose "
        "delivery p99 stayed within 50 ms with every message delivered; latency is that of a further step at half "
        "that rate. *Server CPU* is user + system time of the server process(es) from /proc/<pid>/stat over the "
        "step at saturation (its publishing and drain window). *Loss* counts sequence numbers never received over the "
        "whole run, including the overloaded last step. Ratios are Switchboard ÷ peer (above 1 is better for "
        "Switchboard for throughput and deliveries per CPU-second, below 1 is better for memory).",
        "",
        "![Fan-out: delivered messages per server CPU-second, saturation and latency](images/bench-fanout.png)",
        "",
    ]
    if "fanout-1k" in res:
        out += fanout_table(res["fanout-1k"], "Fan-out: 1 publisher → 1,000 subscribers on one channel, stepped rate", True)
    if "fanout-10k" in res:
        subs = next(iter(res["fanout-10k"].values()))["median"]["subscribers"]
        out += fanout_table(res["fanout-10k"], f"Fan-out: 1 publisher → {int(subs):,} subscribers on one channel, 10 publications/s", False)
    if "fanout-channels" in res:
        m0 = next(iter(res["fanout-channels"].values()))["median"]
        per = int(m0["subscribers"]) // int(m0["channels"])
        out += fanout_table(res["fanout-channels"], f"Fan-out: {int(m0['channels']):,} channels × {per} subscribers, stepped rate", True)
    if "idle" in res:
        n = next(iter(res["idle"].values()))["median"]["connections"]
        out += idle_table(res["idle"], f"Idle connections: {int(n):,}")
    out += cluster_table(res)
    out += ["Exact commands of this run (`$PID`: the server process, comma-separated for a cluster):", "", "```sh", "scripts/bench" + (" --quick" if d["quick"] else "") + f"   # runs={d['runs']}"]
    for scenario, by_system in d["commands"].items():
        for system, cmd in by_system.items():
            out.append(f"# {scenario} / {system}")
            out.append(cmd)
    out += ["```", "", END]
    block = "\n".join(out)
    text = open(doc_path).read()
    if BEGIN not in text or END not in text:
        sys.exit(f"{doc_path}: markers {BEGIN} / {END} missing")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    with open(doc_path, "w") as f:
        f.write(head + block + tail)
    print(f"updated {doc_path} between the bench markers")


def main(argv):
    if argv and argv[0] == "--markdown":
        markdown(argv[1], argv[2])
        return
    outdir, latest = argv[0], argv[1]
    opts = {"--runs": "3", "--quick": "0", "--bench-bin": ""}
    rest = argv[2:]
    for i in range(0, len(rest) - 1, 2):
        opts[rest[i]] = rest[i + 1]
    summarise(outdir, latest, int(opts["--runs"]), opts["--quick"], opts["--bench-bin"])


if __name__ == "__main__":
    main(sys.argv[1:])
