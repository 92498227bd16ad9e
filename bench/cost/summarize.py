"""Tables for docs/BENCHMARKS.md from a bench/cost/compare.sh run: python3 summarize.py OUT_DIR."""
import glob
import json
import os
import re
import statistics
import sys

out = sys.argv[1]


def cost(directory, name):
    with open(os.path.join(out, directory, name + ".json")) as f:
        return json.load(f)


def role_sum(data, role):
    return sum(t["per_request"] for t in data["threads"] if t["role"] == role)


print("### Instructions per request, per thread (callgrind; near-free model, 50 rows, c=16)\n")
print("| server | connections | busiest thread | completion-queue threads | codec threads | "
      "batch thread | gRPC's threads | total | total / echo |")
print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
for connections in (1, 4):
    echo = cost("cost-echo", f"echo-c{connections}")
    for label, directory, name in (("before", "cost-before", f"ours-c{connections}"),
                                   ("after", "cost-after", f"ours-c{connections}"),
                                   ("echo", "cost-echo", f"echo-c{connections}")):
        data = cost(directory, name)
        busiest = data["busiest"]
        grpc = role_sum(data, "grpc-executor") + role_sum(data, "grpc-poller")
        print(f"| {label} | {connections} | {busiest['per_request']:,.0f} ({busiest['role']}) | "
              f"{role_sum(data, 'cq'):,.0f} | {role_sum(data, 'codec'):,.0f} | "
              f"{role_sum(data, 'batch'):,.0f} | {grpc:,.0f} | "
              f"{data['total_per_request']:,.0f} | "
              f"{data['total_per_request'] / echo['total_per_request']:.2f} |")

loads = {}
with open(os.path.join(out, "raw", "loadavg.txt")) as f:
    for line in f:
        name, load = line.split()
        loads[name] = float(load)


def throughput(pattern):
    values = []
    for path in sorted(glob.glob(os.path.join(out, "raw", pattern + ".json"))):
        with open(path) as f:
            step = json.load(f)["steps"][0]
        assert not step["errors"], (path, step["errors"])
        values.append(step["throughput_rps"])
    return values


def median(values):
    return statistics.median(values) if values else float("nan")


rows = [("near-free model, c=64", "free_before_r*", "free_after_r*"),
        ("demo model, c=64", "demo64_before_r*", "demo64_after_r*"),
        ("demo model, c=1", "demo1_before_r*", "demo1_after_r*")]
echo = throughput("echo_r*")
print("\n### Throughput on one server core (req/s; median of rounds, each round alternating)\n")
print("| workload | before | after | after / before | after / echo |")
print("|---|---:|---:|---:|---:|")
for label, before_glob, after_glob in rows:
    before, after = throughput(before_glob), throughput(after_glob)
    print(f"| {label} | {median(before):,.0f} ({', '.join(f'{v:,.0f}' for v in before)}) | "
          f"{median(after):,.0f} ({', '.join(f'{v:,.0f}' for v in after)}) | "
          f"{median(after) / median(before):.2f} | {median(after) / median(echo):.2f} |")
print(f"| echo, c=64 | | {median(echo):,.0f} ({', '.join(f'{v:,.0f}' for v in echo)}) | | |")
values = sorted(loads.values())
print(f"\n1-minute load average at the end of each step: median {statistics.median(values):.2f}, "
      f"range {values[0]:.2f}–{values[-1]:.2f} over {len(values)} steps.")

print("\n### Cross-check: h2load against model_bench (same payload, 4 connections x 16 streams)\n")
print("| server | h2load req/s | model_bench req/s | h2load / model_bench |")
print("|---|---:|---:|---:|")
counted = 0
for target in ("free", "echo"):
    h2_rates = []
    for path in sorted(glob.glob(os.path.join(out, "raw", f"h2load_{target}_r*.txt"))):
        with open(path) as f:
            text = f.read()
        h2_rates.append(float(re.search(r"finished in [^,]+, ([0-9.]+) req/s", text).group(1)))
        succeeded = re.search(r"requests: .* (\d+) succeeded", text)
        if target == "free":
            counted += int(succeeded.group(1)) if succeeded else 0
    bench_rates = throughput(f"h2check_bench_{target}_r*")
    h2, bench = median(h2_rates), median(bench_rates)
    print(f"| {'ours (near-free model)' if target == 'free' else 'echo'} | {h2:,.0f} "
          f"({', '.join(f'{v:,.0f}' for v in h2_rates)}) | {bench:,.0f} "
          f"({', '.join(f'{v:,.0f}' for v in bench_rates)}) | {h2 / bench:.2f} |")
# h2load counts HTTP 200s; the gRPC status is in the trailers, so the server's own count of
# answered requests (warm-ups and model_bench's included) must cover what h2load counted.
with open(os.path.join(out, "raw", "h2_free.log")) as f:
    served = int(re.search(r"stopped: (\d+) requests", f.read()).group(1))
assert served >= counted, (served, counted)
print(f"\n(medians of {len(h2_rates)} alternating rounds; the server answered {served:,} requests, "
      f"h2load counted {counted:,} succeeded.)")
