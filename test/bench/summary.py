"""Summary of test/bench/run.sh's results file: medians of the rounds, the two tables, the
published anchors, and the ratios; the last two lines are the headline ratios."""
import collections
import statistics as st
import sys

rows = collections.defaultdict(lambda: collections.defaultdict(list))
raw = open(sys.argv[1]).read().rstrip()
for line in raw.splitlines():
    f = line.split()
    if f[0] == "idle_rss":
        rows[f[1]]["idle_rss_kb"].append(float(f[2]))
        continue
    if f[0] == "idle_rss_hops":
        rows[f[1]]["idle_hopa_rss_kb"].append(float(f[2]))
        rows[f[1]]["idle_hopb_rss_kb"].append(float(f[3]))
        continue
    kind, name = f[0], f[1]
    for kv in f[2:]:
        key, v = kv.split("=")
        rows[name][f"{kind}_{key}"].append(float(v))
med = {k: {m: st.median(v) for m, v in ms.items()} for k, ms in rows.items()}
# a path that answered anything but success is not a measurement of that path
failed = sorted({f"{k} ({kind})" for k, ms in rows.items() for kind in ("fixed", "max")
                 if f"{kind}_n" in ms and sum(ms[f"{kind}_ok"]) < sum(ms[f"{kind}_n"])})


def g(k, m):
    return med.get(k, {}).get(m, float("nan"))


def ratio(a, b, m):
    return g(a, m) / g(b, m)


def table(title, paths):
    print(title)
    print(f"  {'path':10} {'cpu_us/req':>11} {'p50_ms':>8} {'p90_ms':>8} {'p99_ms':>8} {'max_rps':>9} {'rss_MB':>7} {'idle_MB':>8}")
    for k in paths:
        if k not in med:
            continue
        idle = g(k, "idle_rss_kb") / 1024
        print(f"  {k:10} {g(k,'fixed_cpu_us_per_req'):11.1f} {g(k,'fixed_p50_ms'):8.3f} {g(k,'fixed_p90_ms'):8.3f} {g(k,'fixed_p99_ms'):8.3f}"
              f" {g(k,'max_rps'):9.0f} {g(k,'max_rss_kb')/1024:7.1f} {'' if idle != idle else f'{idle:8.1f}':>8}")


def line(label, a, b):
    return (f"{label} cpu_per_req={ratio(a, b, 'fixed_cpu_us_per_req'):.2f} p50={ratio(a, b, 'fixed_p50_ms'):.2f}"
            f" p99={ratio(a, b, 'fixed_p99_ms'):.2f} max_rps={ratio(a, b, 'max_rps'):.2f}")


print("raw per round:")
print(raw)
print()
if failed:
    print("WARNING: requests failed on " + ", ".join(failed) + ": those rows are not valid measurements")
    print()
print("medians of rounds; cpu and rss: the proxy processes only; fixed load 1000 req/s, 16 connections, 1 KiB")
table("cross-node shape (one proxy process per node, two per path): the headline", ["direct", "weft2p", "nginx2p", "h2direct", "h2weft2p", "h2nginx2p",
                                                                                "grpcdirect", "grpcweft2p", "grpcnginx2p"])
print()
table("same-node shape (both hops in one process)", ["weft", "weftm", "nginx", "rp", "h2weft", "h2nginx"])
print()
print("per node proxy, against the published anchors (ztunnel: ~0.06 vCPU per 1,000 rps at L4 only, ~12 MB;")
print("Istio ambient: two ztunnels add ~0.17 ms at p90 and ~0.20 ms at p99 over direct)")
for k, base in [("weft2p", "direct"), ("nginx2p", "direct"), ("h2weft2p", "h2direct"), ("h2nginx2p", "h2direct"),
                ("grpcweft2p", "grpcdirect"), ("grpcnginx2p", "grpcdirect")]:
    if k not in med or base not in med:
        continue
    print(f"  {k:11} vCPU/1k rps: source {g(k,'fixed_hopa_us_per_req')/1000:.3f}, destination {g(k,'fixed_hopb_us_per_req')/1000:.3f}"
          f" | RSS MB at max load: source {g(k,'max_hopa_rss_kb')/1024:.1f}, destination {g(k,'max_hopb_rss_kb')/1024:.1f}"
          f" | added over {base}: p50 +{g(k,'fixed_p50_ms')-g(base,'fixed_p50_ms'):.3f} ms, p90 +{g(k,'fixed_p90_ms')-g(base,'fixed_p90_ms'):.3f} ms,"
          f" p99 +{g(k,'fixed_p99_ms')-g(base,'fixed_p99_ms'):.3f} ms")
    if "max_hopa_us_per_req" in med[k]:
        whole = ""
        if "max_machine_us_per_req" in med[k]:
            whole = f", whole machine {g(k,'max_machine_us_per_req'):.1f} (backend {g(k,'max_backend_us_per_req'):.1f})"
        print(f"  {'':11} CPU µs/req at max rps ({g(k,'max_rps'):.0f}): source {g(k,'max_hopa_us_per_req'):.1f},"
              f" destination {g(k,'max_hopb_us_per_req'):.1f}{whole}")
print()
if "weft" in med and "nginx" in med:
    print("same-node ratios:")
    print("  " + line("weft/nginx (one process)", "weft", "nginx"))
    if "rp" in med:
        print("  " + line("rp/nginx (two processes)", "rp", "nginx2p" if "nginx2p" in med else "nginx"))
    if "h2weft" in med and "h2nginx" in med:
        print("  " + line("h2c weft/nginx (one process)", "h2weft", "h2nginx"))
if "weftm" in med and "weft" in med:
    print(f"metrics on/off: weftm/weft cpu_per_req={ratio('weftm','weft','fixed_cpu_us_per_req'):.3f} p50={ratio('weftm','weft','fixed_p50_ms'):.3f}"
          f" p99={ratio('weftm','weft','fixed_p99_ms'):.3f} max_rps={ratio('weftm','weft','max_rps'):.3f}"
          f" rss={ratio('weftm','weft','max_rss_kb'):.3f}  (budget: cpu_per_req <= 1.05)")
if "grpcweft2p" in med and "grpcnginx2p" in med:
    print(line("grpc weft/nginx", "grpcweft2p", "grpcnginx2p") + "  (nginx with grpc_pass, both carrying gRPC)")
print("goals (cross-node): cpu_per_req <= 1.2 (stretch 1.0), p50 <= 1.05, p99 <= 1.2, max_rps >= 1.0; h2c and gRPC: cpu_per_req <= 1.5, p99 <= 1.2")
print(line("h2c weft/nginx", "h2weft2p", "h2nginx2p"))
print(line("weft/nginx", "weft2p", "nginx2p"))
