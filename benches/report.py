#!/usr/bin/env python3
"""Turns the rows benches/run.sh collected into the Markdown report (standard output)."""

import argparse
import csv
import json
import os
import statistics

TARGET_ORDER = ["direct", "nginx", "min-proxy", "gateway", "gateway-base", "gateway-redis"]


def load_rows(path):
    with open(path) as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    for r in rows:
        for k in ("conns", "rate", "requests", "errors", "p50_us", "p90_us", "p99_us", "p999_us", "max_us",
                  "upstream_conns", "signed"):
            r[k] = int(r[k])
        for k in ("upstream_open", "rss_delta_kb"):
            r[k] = int(r.get(k) or 0)
        for k in ("duration_s", "server_cpu_us", "server_user_us", "server_sys_us", "upstream_cpu_us", "ctx_per_req",
                  "loadgen_cpu_pct", "other_cpu_pct"):
            r[k] = float(r[k])
        r["rps"] = r["requests"] / r["duration_s"] if r["duration_s"] else 0.0
    return rows


def load_meta(path):
    meta, notes = {}, []
    with open(path) as f:
        for line in f:
            k, _, v = line.rstrip("\n").partition("=")
            if k == "note":
                notes.append(v)
            else:
                meta[k] = v
    return meta, notes


def load_json(path):
    if not path or not os.path.exists(path) or os.path.getsize(path) == 0:
        return None
    with open(path) as f:
        return json.load(f)


def med(values):
    return statistics.median(values) if values else None


def ms(us):
    return "–" if us is None else f"{us / 1000:.3f}"


def spread(values, fmt="{:,.0f}"):
    if len(values) < 2:
        return "(1 round)"
    lo, hi, m = min(values), max(values), statistics.median(values)
    pct = 100 * (hi - lo) / m if m else 0
    return f"{fmt.format(lo)}..{fmt.format(hi)} (±{pct / 2:.1f}%)"


def p99_added(target, v, direct):
    """The p99 a proxy adds over the direct call in the same scenario."""
    if target == "direct" or not direct:
        return "–"
    return f"{(v['p99'] - direct['p99']) / 1000:+.3f} ms"


def ratio(a, b):
    return f"{a / b:.2f}x" if a is not None and b else "–"


def summarize(rows, scenario):
    out = {}
    for target in TARGET_ORDER:
        rs = [r for r in rows if r["scenario"] == scenario and r["target"] == target]
        if not rs:
            continue
        out[target] = {
            "n": len(rs),
            "rps": med([r["rps"] for r in rs]),
            "rps_all": [r["rps"] for r in rs],
            "p50": med([r["p50_us"] for r in rs]),
            "p99": med([r["p99_us"] for r in rs]),
            "p999": med([r["p999_us"] for r in rs]),
            "max": max(r["max_us"] for r in rs),
            "cpu": med([r["server_cpu_us"] for r in rs]),
            "cpu_all": [r["server_cpu_us"] for r in rs],
            "user": med([r["server_user_us"] for r in rs]),
            "sys": med([r["server_sys_us"] for r in rs]),
            "ctx": med([r["ctx_per_req"] for r in rs]),
            "other": max(r["other_cpu_pct"] for r in rs),
            "up_cpu": med([r["upstream_cpu_us"] for r in rs]),
            "lg": med([r["loadgen_cpu_pct"] for r in rs]),
            "conns": sum(r["upstream_conns"] for r in rs),
            "errors": sum(r["errors"] for r in rs),
            "requests": sum(r["requests"] for r in rs),
            "signed": sum(r["signed"] for r in rs),
            "redis_cpu": med([float(r.get("redis_cpu_us") or 0) for r in rs]),
            "open": med([r["upstream_open"] for r in rs]),
            "rss_delta": med([r["rss_delta_kb"] for r in rs]),
        }
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True)
    ap.add_argument("--meta", required=True)
    ap.add_argument("--peak", required=True)
    ap.add_argument("--idle-gateway")
    ap.add_argument("--idle-nginx")
    a = ap.parse_args()

    rows = load_rows(a.results)
    meta, notes = load_meta(a.meta)
    with open(a.peak) as f:
        peak = {r["target"]: r for r in csv.DictReader(f, delimiter="\t")}
    idle = {"gateway": load_json(a.idle_gateway), "nginx": load_json(a.idle_nginx)}
    rounds = int(meta.get("rounds", "1"))
    p = print

    title = "sparkrtc-gateway benchmark"
    if rounds < 3:
        title += " (SMOKE RUN: too few rounds to quote)"
    p(f"# {title}")
    p()
    p(f"{meta.get('date')}, commit {meta.get('commit')}. Machine: {meta.get('nproc')} cores, "
      f"{meta.get('cpu_model')}, {meta.get('mem_total')}, {meta.get('kernel')}; {meta.get('rustc')}, "
      f"{meta.get('wrk')}, nginx {meta.get('nginx')}. Pinned: {meta.get('pinned')}.")
    p()
    p(f"{rounds} round(s), targets interleaved (order rotated each round); saturating runs of "
      f"{meta.get('duration')} each with wrk -t1; RemoveUsers (`POST /v2/apps/app-123/rooms/room-456/"
      f"batch-remove-users`, 35-byte JSON body). Figures are medians over the rounds; spread is "
      f"min..max over the rounds. CPU is the server process's user+system time (/proc/PID/stat) "
      f"over the run divided by the requests completed: the upstream for direct, the proxy for "
      f"nginx (master + worker) and the gateway.")
    p()

    scenarios = []
    for r in rows:
        if r["scenario"] not in scenarios and r["round"] != "info":
            scenarios.append(r["scenario"])

    for scenario in [s for s in scenarios if s.startswith("c")]:
        s = summarize([r for r in rows if r["round"] != "info"], scenario)
        conns = scenario[1:]
        p(f"## Saturation, {conns} connections")
        p()
        p("| target | req/s | req/s spread | p50 ms | p99 ms | p99.9 ms | server CPU us/req (user + sys) "
          "| CPU spread | upstream CPU us/req | ctx switches/req | load-gen CPU | other CPU | upstream conns opened "
          "| errors |")
        p("|---|---:|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|")
        for t, v in s.items():
            bound = " (wrk-bound)" if v["lg"] >= 95 else ""
            conns_opened = "–" if t == "direct" else v["conns"]
            p(f"| {t} | {v['rps']:,.0f}{bound} | {spread(v['rps_all'])} | {ms(v['p50'])} | {ms(v['p99'])} | "
              f"{ms(v['p999'])} | {v['cpu']:.1f} ({v['user']:.1f} + {v['sys']:.1f}) | "
              f"{spread(v['cpu_all'], '{:.1f}')} | {v['up_cpu']:.1f} | {v['ctx']:.2f} | {v['lg']:.0f}% | "
              f"{v['other']:.0f}% | {conns_opened} | {v['errors']} |")
        p()
        g, n, d = s.get("gateway"), s.get("nginx"), s.get("direct")
        if g:
            p("| ratio | req/s | CPU us/req | p99 |")
            p("|---|---:|---:|---:|")
            def ratio_row(label, a, b):
                p(f"| {label} | {ratio(a['rps'], b['rps'])} | {ratio(a['cpu'], b['cpu'])} | "
                  f"{ratio(a['p99'], b['p99'])} |")
            m, b = s.get("min-proxy"), s.get("gateway-base")
            for label, a, ref in [("gateway / nginx", g, n), ("gateway / min-proxy", g, m),
                                  ("min-proxy / nginx", m, n),
                                  ("gateway / gateway-base (the change measured)", g, b),
                                  ("gateway / direct", g, d)]:
                if a and ref:
                    ratio_row(label, a, ref)
            p()

    for scenario in [s for s in scenarios if s.startswith("wan")]:
        s = summarize(rows, scenario)
        conns = int(scenario[3:])
        p(f"## Remote upstream: answers after {meta.get('wan_delay_ms')} ms, {conns} callers")
        p()
        p("| target | req/s | p50 ms | p99 ms | p99 added over direct | server CPU us/req | upstream conns open "
          "(mid-run) | upstream conns opened | RSS growth under load | per in-flight call | errors |")
        p("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        d = s.get("direct")
        for t, v in s.items():
            added = p99_added(t, v, d)
            is_proxy = t != "direct"
            open_ = v["open"] if is_proxy else "–"
            opened = v["conns"] if is_proxy else "–"
            per = f"{v['rss_delta'] / conns:.1f} KB" if is_proxy else "–"
            p(f"| {t} | {v['rps']:,.0f} | {ms(v['p50'])} | {ms(v['p99'])} | {added} | {v['cpu']:.1f} | {open_:} | "
              f"{opened} | {v['rss_delta'] / 1024:.1f} MB | {per} | {v['errors']} |")
        p()

    for scenario in [s for s in scenarios if s.startswith("rate")]:
        s = summarize(rows, scenario)
        rate = scenario[4:]
        p(f"## Fixed rate, {rate} requests/s ({meta.get('rate_conns')} connections, {meta.get('rate_duration')})")
        p()
        p("| target | achieved req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | server CPU us/req | "
          "p99 added over direct | errors |")
        p("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        d = s.get("direct")
        for t, v in s.items():
            p90 = med([r["p90_us"] for r in rows if r["scenario"] == scenario and r["target"] == t])
            added = p99_added(t, v, d)
            p(f"| {t} | {v['rps']:,.0f} | {ms(v['p50'])} | {ms(p90)} | {ms(v['p99'])} | {ms(v['p999'])} | "
              f"{ms(v['max'])} | {v['cpu']:.1f} | {added} | {v['errors']} |")
        p()
        g, gr = s.get("gateway"), s.get("gateway-redis")
        if g and gr:
            p("Limits shared through Redis (`gateway-redis`: one EVALSHA per call to a local redis-server) "
              "against the local limiter (`gateway`), same rate, same run:")
            p()
            p("| added by the Redis backend | p50 | p99 | gateway CPU us/req | redis-server CPU us/req |")
            p("|---|---:|---:|---:|---:|")
            p(f"| per call | {(gr['p50'] - g['p50']) / 1000:+.3f} ms | {(gr['p99'] - g['p99']) / 1000:+.3f} ms | "
              f"{gr['cpu'] - g['cpu']:+.1f} | {gr['redis_cpu']:.1f} |")
            p()

    p("## Memory")
    p()
    n_idle = meta.get("idle_conns", "0")
    p(f"| target | peak RSS under load (VmHWM) | idle RSS (fresh, 1 request served) | RSS with {n_idle} idle "
      f"keep-alive conns | per idle conn | RSS after they close |")
    p("|---|---:|---:|---:|---:|---:|")
    for t in TARGET_ORDER:
        pk = peak.get(t)
        if not pk:
            continue
        i = idle.get(t)
        mb = lambda kb: f"{int(kb) / 1024:.1f} MB"
        if i:
            held = f"{mb(i['rss_held_kb'])} ({i['opened']} opened, {i['alive_after_hold']} still open"
            if "upstream_conns" in i:
                held += f"; {i['upstream_conns']} upstream conns opened"
            held += ")"
            p(f"| {t} | {mb(pk['hwm_kb'])} | {mb(i['rss_before_kb'])} | {held} | {i['kb_per_conn']:.1f} KB | "
              f"{mb(i['rss_after_close_kb'])} |")
        else:
            p(f"| {t} | {mb(pk['hwm_kb'])} | – | – | – | – |")
    p()
    line = "direct's figure is the upstream stand-in's (it also served the proxies' calls)"
    if "nginx" in peak:
        line += f"; nginx's is its worker's (the master holds {int(meta.get('nginx_master_rss_kb') or 0) / 1024:.1f} MB more)"
    p(line + ".")
    p()

    # The targets, from this run.
    p("## Targets (issue 6)")
    p()
    p("| target | this run | met |")
    p("|---|---|---|")
    yes = lambda ok: "yes" if ok else "**no**"
    for scenario in [s for s in scenarios if s.startswith("c")]:
        s = summarize([r for r in rows if r["round"] != "info"], scenario)
        g, n = s.get("gateway"), s.get("nginx")
        if g and n:
            cr, tr = g["cpu"] / n["cpu"], g["rps"] / n["rps"]
            p(f"| CPU/req ≤ 0.8x nginx, {scenario[1:]} conns | {cr:.2f}x ({g['cpu']:.1f} vs {n['cpu']:.1f} us) "
              f"| {yes(cr <= 0.8)} |")
            p(f"| req/s ≥ 1.2x nginx, {scenario[1:]} conns | {tr:.2f}x ({g['rps']:,.0f} vs {n['rps']:,.0f}) "
              f"| {yes(tr >= 1.2)} |")
    for scenario in [s for s in scenarios if s.startswith("rate")]:
        s = summarize(rows, scenario)
        g, d = s.get("gateway"), s.get("direct")
        if g and d:
            added = (g["p99"] - d["p99"]) / 1000
            p(f"| p99 added over direct < 0.5 ms at {scenario[4:]}/s | {added:+.3f} ms | {yes(added < 0.5)} |")
    gi = idle.get("gateway")
    if gi:
        p(f"| idle RSS < 15 MB | {gi['rss_before_kb'] / 1024:.1f} MB | {yes(gi['rss_before_kb'] < 15 * 1024)} |")
        p(f"| < 20 KB per idle connection | {gi['kb_per_conn']:.1f} KB | {yes(gi['kb_per_conn'] < 20)} |")
    p("| signer < 3 us, policy + limiter < 300 ns | see `cargo bench --bench hot_path` | – |")
    p()

    p("## Targets (issue 10)")
    p()
    p("| target | this run | met |")
    p("|---|---|---|")
    plain = [r for r in rows if r["round"] != "info"]
    for scenario in [s for s in scenarios if s.startswith("c")]:
        s = summarize(plain, scenario)
        g, n, m = s.get("gateway"), s.get("nginx"), s.get("min-proxy")
        c = scenario[1:]
        if g and n:
            cr, tr = g["cpu"] / n["cpu"], g["rps"] / n["rps"]
            p(f"| CPU/req ≤ 1.0x nginx, {c} conns | {cr:.2f}x ({g['cpu']:.1f} vs {n['cpu']:.1f} us) | {yes(cr <= 1.0)} |")
            p(f"| req/s ≥ 1.0x nginx, {c} conns | {tr:.2f}x ({g['rps']:,.0f} vs {n['rps']:,.0f}) | {yes(tr >= 1.0)} |")
            p(f"| new upstream conns ≤ nginx's, {c} conns | {g['conns']} vs {n['conns']} | {yes(g['conns'] <= n['conns'])} |")
        if g and m:
            p(f"| ahead of min-proxy, {c} conns | CPU {g['cpu'] / m['cpu']:.2f}x, req/s {g['rps'] / m['rps']:.2f}x "
              f"| {yes(g['cpu'] <= m['cpu'] and g['rps'] >= m['rps'])} |")
    info = [r for r in rows if r["round"] == "info"]
    if info:
        g = summarize(plain, info[0]["scenario"]).get("gateway")
        if g:
            over = info[0]["server_cpu_us"] / g["cpu"] - 1
            p(f"| access logging at info ≤ 5% CPU over warn | {100 * over:+.0f}% | {yes(over <= 0.05)} |")
    if gi:
        p(f"| ≤ 8 KB per idle client connection | {gi['kb_per_conn']:.1f} KB | {yes(gi['kb_per_conn'] <= 8)} |")
    for scenario in [s for s in scenarios if s.startswith("rate")]:
        s = summarize(rows, scenario)
        g, d = s.get("gateway"), s.get("direct")
        if g and d:
            added = (g["p99"] - d["p99"]) / 1000
            p(f"| p99 added over direct < 0.5 ms at {scenario[4:]}/s | {added:+.3f} ms | {yes(added < 0.5)} |")
    p()

    p("## Notes")
    p()
    info = [r for r in rows if r["round"] == "info"]
    if info:
        r = info[0]
        s = summarize([x for x in rows if x["round"] != "info"], r["scenario"])
        g = s.get("gateway")
        log_bytes = meta.get("info_log_bytes") or "0"
        per_req = int(log_bytes) / max(r["requests"], 1)
        cmp = ""
        if g:
            cmp = (f" against {g['rps']:,.0f} req/s and {g['cpu']:.1f} us/req at level=warn "
                   f"({ratio(r['rps'], g['rps'])} the throughput, {ratio(r['server_cpu_us'], g['cpu'])} the CPU)")
        p(f"- `[log] level = \"info\"` (one access-log line per call, to a file), {r['conns']} connections, one run: "
          f"{r['rps']:,.0f} req/s, {r['server_cpu_us']:.1f} us/req, p99 {ms(r['p99_us'])} ms{cmp}; "
          f"{per_req:.0f} bytes of log per request.")
    total = sum(r["requests"] for r in rows if r["target"] == "gateway")
    signed = sum(r["signed"] for r in rows if r["target"] == "gateway")
    p(f"- The gateway's calls reached the upstream signed: during the gateway's runs the upstream stand-in "
      f"counted {signed:,} calls carrying `Authorization`, for {total:,} requests wrk completed (the difference "
      f"is calls in flight when wrk stopped).")
    p(f"- Gateway log at level=warn: {meta.get('gateway_log_lines')} line(s) over the run.")
    direct = [r for r in rows if r["target"] == "direct" and r["scenario"].startswith("c")]
    ceiling = ""
    if direct:
        best = max(r["rps"] for r in direct)
        cost = med([r["server_cpu_us"] for r in direct])
        ceiling = (f" Its ceiling: {best:,.0f} req/s measured directly (over TLS), and {cost:.1f} us of CPU per "
                   f"request, so about {1e6 / cost:,.0f} req/s for a whole core; a proxy run leaves it a share of "
                   f"the same core.")
    p(f"- Upstream stand-in: peak RSS {int(meta.get('upstream_hwm_kb') or 0) / 1024:.1f} MB.{ceiling} The "
      f"upstream shares the server core with the proxy under test, so a proxy's throughput is bounded by proxy + "
      f"upstream CPU per request. A load-gen CPU near 100% (marked wrk-bound) means wrk, not the server, set "
      f"the pace.")
    p("- The fixed-rate run paces wrk from its Lua `delay()` hook with a schedule shared by the connections; "
      "latency is measured from each request's write, so a stall longer than connections/rate would be "
      "under-reported (coordinated omission). At 2,000/s and 16 connections that is a stall over 8 ms.")
    others = [r["other_cpu_pct"] for r in rows]
    if others:
        p(f"- Other CPU (busy time of the machine not spent by the servers or wrk: other processes and interrupt "
          f"time, in % of one core): median {med(others):.0f}%, max {max(others):.0f}% over the runs. Runs on a "
          f"machine that is not quiet show tens of percent here; their figures are not comparable.")
    p(f"- Load average when the runs started: {meta.get('loadavg')}.")
    p(f"- Wall time of the load runs: {meta.get('runs_seconds')} s.")
    for n in notes:
        p(f"- {n}")


if __name__ == "__main__":
    main()
