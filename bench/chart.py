#!/usr/bin/env python3
"""Draws docs/images/bench-fanout.png from bench/results/latest.json.

  chart.py LATEST.json OUT.png

Three panels: p99 latency against delivered messages/s for the stepped
1 → 1,000 fan-out (the median run of each system); deliveries per server
CPU-second per scenario and system; 1 vs 3 Switchboard nodes.
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SYSTEMS = ["switchboard", "ws", "socketio", "nats"]
LABELS = {"switchboard": "Switchboard", "ws": "ws (Node)", "socketio": "socket.io 4", "nats": "NATS core"}
COLORS = {"switchboard": "#1f77b4", "ws": "#ff7f0e", "socketio": "#2ca02c", "nats": "#7f7f7f"}
SCENARIOS = [
    ("fanout-1k", "1 → 1k"),
    ("fanout-10k", "1 → 10k (5k quick), 10/s"),
    ("fanout-channels", "channels × 10"),
]


def main(latest, out):
    d = json.load(open(latest))
    res = d["results"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 5))

    ax = axes[0]
    for s in SYSTEMS:
        e = res.get("fanout-1k", {}).get(s)
        if not e:
            continue
        steps = e["median"]["steps"]
        xs = [st["delivered_per_sec"] for st in steps]
        ys = [max(st["p99"], 0.01) for st in steps]
        ax.plot(xs, ys, marker="o", label=LABELS[s], color=COLORS[s])
    ax.axhline(50, color="red", linestyle="--", linewidth=1, label="50 ms limit")
    ax.set_yscale("log")
    ax.set_xlabel("delivered messages/s")
    ax.set_ylabel("p99 latency (ms)")
    ax.set_title("1 → 1,000 subscribers, rate stepped ×2")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)

    ax = axes[1]
    present = [(k, label) for k, label in SCENARIOS if k in res]
    width = 0.8 / len(SYSTEMS)
    for i, s in enumerate(SYSTEMS):
        vals = [res[k].get(s, {}).get("median", {}).get("per_cpu_sec") or 0 for k, _ in present]
        xs = [j + (i - 1.5) * width for j in range(len(present))]
        ax.bar(xs, [v / 1000 for v in vals], width, label=LABELS[s], color=COLORS[s])
    ax.set_xticks(range(len(present)))
    ax.set_xticklabels([label for _, label in present])
    ax.set_ylabel("thousand deliveries per server CPU-second")
    ax.set_title("Efficiency (at saturation / fixed rate)")
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)

    ax = axes[2]
    bars = []
    for n in ("1", "3"):
        e = res.get(f"cluster-{n}", {}).get("switchboard")
        if e:
            bars.append((f"{n} node{'s' if n != '1' else ''}", e["median"].get("peak_delivered_per_sec") or 0))
    if bars:
        ax.bar([b[0] for b in bars], [b[1] / 1000 for b in bars], color=COLORS["switchboard"])
        ax.set_ylabel("thousand delivered msg/s, highest step run")
        ax.set_title("Switchboard, bus NATS + store PostgreSQL")
        ax.grid(True, axis="y", alpha=0.3)
    else:
        ax.set_axis_off()

    m = d["machine"]
    la = d.get("loadavg_1min") or {}
    fig.suptitle(
        f"scripts/bench, {d['generated']}: {m['nproc']} CPUs ({m['cpu']}), load average "
        f"{la.get('min', 0):.1f}–{la.get('max', 0):.1f}, medians of {d['runs']} runs",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
