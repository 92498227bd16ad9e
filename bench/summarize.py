#!/usr/bin/python3
"""Turns bench/run_benchmarks.sh's raw results into the tables of docs/BENCHMARKS.md (markdown
on stdout). --best KIND prints the server flags of KIND's fastest tuning variant;
--max-throughput prints our highest median closed-loop throughput."""
import argparse
import glob
import json
import os
import re
import statistics


def load(out, pattern):
    """{name without _rN: [json per round]} for raw/<pattern>_rN.json."""
    runs = {}
    for path in sorted(glob.glob(os.path.join(out, "raw", pattern + "_r*.json"))):
        if path.endswith(".meta.json"):
            continue
        name = re.sub(r"_r\d+\.json$", "", os.path.basename(path))
        result = json.load(open(path))
        meta_path = path[:-5] + ".meta.json"
        result["meta"] = json.load(open(meta_path)) if os.path.exists(meta_path) else {}
        flags_path = path[:-5] + ".flags"
        result["flags"] = open(flags_path).read().strip() if os.path.exists(flags_path) else ""
        runs.setdefault(name, []).append(result)
    return runs


def step_values(rounds, key, field, sub=None):
    """Per step key (concurrency or rate): values of field across rounds."""
    values = {}
    for result in rounds:
        for step in result["steps"]:
            value = step[field][sub] if sub else step[field]
            values.setdefault(step[key], []).append(value)
    return values


def med(values):
    return statistics.median(values)


def errors(rounds):
    return sum(sum(step["errors"].values()) for r in rounds for step in r["steps"])


def per_batch(rounds):
    ratios = [r["meta"]["requests"] / r["meta"]["batches"] for r in rounds
              if r["meta"].get("batches")]
    return "%.1f" % med(ratios) if ratios else "n/a"


def rss_mb(rounds):
    return med([r["meta"]["vmhwm_kb"] / 1024 for r in rounds])


def best(out, kind):
    runs = load(out, "tune_%s-*" % kind)
    name = max(runs, key=lambda n: med(step_values(runs[n], "concurrency", "throughput_rps")[64]))
    return runs[name][0]["flags"]


def max_throughput(out):
    sweep = load(out, "sweep_ours")["sweep_ours"]
    return round(max(med(v) for v in step_values(sweep, "concurrency", "throughput_rps").values()))


def summary(out):
    print("```\n" + open(os.path.join(out, "machine.txt")).read().strip() + "\n```\n")
    loads = [r["meta"]["load_average"] for runs in load(out, "*").values() for r in runs
             if "load_average" in r["meta"]]
    print("1-minute load average at the end of each run (other work on the machine): median "
          "%.2f, range %.2f–%.2f over %d runs.\n" % (med(loads), min(loads), max(loads), len(loads)))

    print("### 0. Settings (concurrency 64; server on one core)\n")
    print("| variant | server flags | req/s (median) | per round | p99 ms | req/batch "
          "| server core busy | errors |")
    print("|---|---|---:|---|---:|---:|---:|---:|")
    for name, rounds in load(out, "tune_*").items():
        tput = step_values(rounds, "concurrency", "throughput_rps")[64]
        p99 = step_values(rounds, "concurrency", "latency_ms", "p99")[64]
        print("| %s | `%s` | %.0f | %s | %.2f | %s | %.0f %% | %d |" % (
            name[5:], rounds[0]["flags"] or "(defaults)", med(tput),
            " ".join("%.0f" % t for t in tput), med(p99), per_batch(rounds),
            100 * med([r["meta"]["server_busy"] for r in rounds]), errors(rounds)))
    print("\nBest (used below): " + open(os.path.join(out, "best.txt")).read().strip() + "\n")

    sweeps = {kind: load(out, "sweep_" + kind)["sweep_" + kind] for kind in ("ours", "peer", "echo")}
    tput = {k: step_values(v, "concurrency", "throughput_rps") for k, v in sweeps.items()}
    p50 = {k: step_values(v, "concurrency", "latency_ms", "p50") for k, v in sweeps.items()}
    p99 = {k: step_values(v, "concurrency", "latency_ms", "p99") for k, v in sweeps.items()}
    print("### 1. Ours vs the seed-built peer vs the echo limit (closed loop, 50 rows, "
          "distinct params)\n")
    print("| concurrency | ours req/s | peer req/s | echo req/s | ours/echo | ours/peer "
          "| ours p50/p99 ms | peer p50/p99 ms | echo p50/p99 ms |")
    print("|---:|---:|---:|---:|---:|---:|---|---|---|")
    for c in sorted(tput["ours"]):
        o, p, e = med(tput["ours"][c]), med(tput["peer"][c]), med(tput["echo"][c])
        print("| %d | %.0f | %.0f | %.0f | %.0f %% | %.1f× | %s | %s | %s |" % (
            c, o, p, e, 100 * o / e, o / p,
            *["%.2f / %.2f" % (med(p50[k][c]), med(p99[k][c])) for k in ("ours", "peer", "echo")]))
    print("\nServer core busy over each sweep run (median): " + ", ".join(
        "%s %.0f %%" % (k, 100 * med([r["meta"]["server_busy"] for r in v]))
        for k, v in sweeps.items()) + ".")
    print("\nOurs in rows/s at concurrency 64: %.0f. Requests per forward pass over each whole "
          "sweep run (median): %s. Errors: ours %d, peer %d, echo %d.\n" % (
              50 * med(tput["ours"][64]), per_batch(sweeps["ours"]), errors(sweeps["ours"]),
              errors(sweeps["peer"]), errors(sweeps["echo"])))

    on, off = load(out, "batching_on")["batching_on"], load(out, "batching_off")["batching_off"]
    print("### 2. Batching on vs off (`--max-batch-rows 50`)\n")
    print("| concurrency | on req/s | off req/s | on/off | on p50/p99 ms | off p50/p99 ms |")
    print("|---:|---:|---:|---:|---|---|")
    t_on, t_off = step_values(on, "concurrency", "throughput_rps"), step_values(
        off, "concurrency", "throughput_rps")
    for c in sorted(t_on):
        lat = [(med(step_values(r, "concurrency", "latency_ms", "p50")[c]),
                med(step_values(r, "concurrency", "latency_ms", "p99")[c])) for r in (on, off)]
        print("| %d | %.0f | %.0f | %.2f× | %.2f / %.2f | %.2f / %.2f |" % (
            c, med(t_on[c]), med(t_off[c]), med(t_on[c]) / med(t_off[c]), *lat[0], *lat[1]))
    print("\nRequests per forward pass (whole run, median): on %s, off %s.\n" % (
        per_batch(on), per_batch(off)))

    open_loop = load(out, "open")["open"]
    print("### 3. Open loop (Poisson arrivals), %s\n" %
          open(os.path.join(out, "open_loop_rates.txt")).read().strip())
    print("| offered req/s | achieved req/s | p50 ms | p99 ms | p99.9 ms | max ms | errors |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    achieved = step_values(open_loop, "rate", "throughput_rps")
    for rate in sorted(achieved):
        q = {k: med(step_values(open_loop, "rate", "latency_ms", k)[rate])
             for k in ("p50", "p99", "p99.9", "max")}
        print("| %.0f | %.0f | %.3f | %.3f | %.3f | %.3f | %d |" % (
            rate, med(achieved[rate]), q["p50"], q["p99"], q["p99.9"], q["max"],
            errors(open_loop)))
    print()

    print("### 4. Server CPU cost per request (callgrind, concurrency 16)\n")
    per_request = {}
    for kind in ("ours", "echo"):
        requests = json.load(open(os.path.join(out, "raw", "callgrind_%s.json" % kind)))
        inclusive = open(os.path.join(out, "callgrind_%s_inclusive.txt" % kind)).read()
        total = int(re.search(r"^([\d,]+) \(100.0%\)\s+PROGRAM TOTALS", inclusive, re.M)
                    .group(1).replace(",", ""))
        per_request[kind] = (total, requests["steps"][0]["ok"], inclusive)
    batches = open(os.path.join(out, "callgrind_batches.txt")).read().strip()
    print("| server | instructions | requests | instructions/request |\n|---|---:|---:|---:|")
    for kind, (total, requests, _) in per_request.items():
        print("| %s | %d | %d | **%.0f** |" % (kind, total, requests, total / requests))
    print("\nmodel_server under valgrind: %s.\n" % batches)
    total, requests, inclusive = per_request["ours"]
    print("Where model_server's instructions go (inclusive, `callgrind_annotate --inclusive=yes`):\n")
    print("| function (inclusive) | instructions/request | share |\n|---|---:|---:|")
    for label, pattern in (
            ("TorchHandler::Run (the forward pass)", "TorchHandler::Run()"),
            ("  of which tanh (Sleef)", "Sleef_tanhf8_u10 "),
            ("  of which sgemm (OpenBLAS)", "sgemm_ "),
            ("handlers::DecodeRequest (JSON in)", "handlers::DecodeRequest("),
            ("  of which simdjson parse", "dom_parser_implementation::parse("),
            ("EvaluateCall::Reply (JSON out + gRPC finish)", "server::EvaluateCall::Reply("),
            ("  of which handlers::EncodeResponse", "handlers::EncodeResponse("),
            ("  of which std::to_chars(float)", "std::to_chars(char*, char*, float)")):
        match = next((l for l in inclusive.splitlines() if pattern in l), None)
        if match:
            ir = int(match.split()[0].replace(",", ""))
            print("| %s | %.0f | %.1f %% |" % (label, ir / requests, 100.0 * ir / total))
    self_text = open(os.path.join(out, "callgrind_ours_self.txt")).read()
    print("\nTop functions of model_server by own instructions (`callgrind_annotate "
          "--inclusive=no`):\n```")
    lines = [l for l in self_text.splitlines() if re.match(r"^\s*[\d,]+ \(\s*[\d.]+%\)\s+\S", l)
             and "PROGRAM TOTALS" not in l]
    print("\n".join(l[:150] for l in lines[:20]) + "\n```\n")

    print("### 5. Peak RSS (VmHWM at the end of each run, median over rounds)\n")
    print("| run | peak RSS MiB |")
    print("|---|---:|")
    for pattern in ("sweep_ours", "sweep_peer", "sweep_echo", "batching_off", "open"):
        for name, rounds in load(out, pattern).items():
            print("| %s | %.0f |" % (name, rss_mb(rounds)))
    print()

    print("### 6. The model's limit (model_forward_bench, 1 torch thread, CPU 0)\n```")
    print(open(os.path.join(out, "forward.txt")).read().rstrip() + "\n```\n")

    o64, e64, p64 = med(tput["ours"][64]), med(tput["echo"][64]), med(tput["peer"][64])
    half = sorted(achieved)[1]
    p99_half = med(step_values(open_loop, "rate", "latency_ms", "p99")[half])
    print("### Targets\n")
    print("| target | measured | verdict |\n|---|---:|---|")
    print("| ≥ 70 %% of echo at c=64 | %.0f %% | %s |" % (
        100 * o64 / e64, "met" if o64 >= 0.7 * e64 else "MISSED"))
    print("| ≥ 10× the seed-built peer at c=64 | %.1f× | %s |" % (
        o64 / p64, "met" if o64 >= 10 * p64 else "MISSED"))
    print("| open-loop p99 at 50 %% of max ≤ 5 ms | %.3f ms | %s |" % (
        p99_half, "met" if p99_half <= 5 else "MISSED"))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--best")
    parser.add_argument("--max-throughput", action="store_true")
    args = parser.parse_args()
    if args.best:
        print(best(args.out, args.best))
    elif args.max_throughput:
        print(max_throughput(args.out))
    else:
        summary(args.out)


main()
