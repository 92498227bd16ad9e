#!/usr/bin/python3
"""Scale-out test (docs/RELIABILITY.md, "Scale-out and failover"): three model_server replicas on
loopback.

Phase 1, fair share: model_bench with the three targets comma-separated (it balances them
round-robin), closed loop at concurrency 24 for 4 s; each replica's `stopped: N requests` must be
25-42 % of the total.

Phase 2, failover: one gRPC channel over `ipv4:127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3` with the
round_robin policy and a retry policy for UNAVAILABLE in its service config
(clients/python/model_client.py with channel_options; its own seed-style retries are switched
off, max_attempts=1, so only gRPC's retries act). 16 threads call EvaluateModel for ~8 s; after
3 s one replica is SIGKILLed. No call may fail, calls must keep succeeding after the kill, and
each survivor must have served more than a third of all calls.

  /usr/bin/python3 test/reliability/scaleout_test.py --server build/server/model_server \
      --bench build/bench/model_bench
"""
import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

import grpc

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "test", "python"))
sys.path.insert(0, os.path.join(REPO, "clients", "python"))

from harness import free_port, start_server  # noqa: E402
import model_client  # noqa: E402

SERVICE_CONFIG = {
    "loadBalancingConfig": [{"round_robin": {}}],  # --lb pick_first replaces it
    "methodConfig": [{
        "name": [{"service": "ModelService"}],
        "retryPolicy": {"maxAttempts": 5, "initialBackoff": "0.1s", "maxBackoff": "1s",
                        "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]},
    }],
}

FAILURES = []


def check(description, ok):
    print(("PASS: " if ok else "FAIL: ") + description, flush=True)
    if not ok:
        FAILURES.append(description)


def start_replicas(server, n=3):
    replicas = []
    for _ in range(n):
        port = free_port()
        process = start_server(server, "--address", f"127.0.0.1:{port}", "--log-level", "info")
        replicas.append({"port": port, "process": process})
    for r in replicas:
        with model_client.ModelClient(f"127.0.0.1:{r['port']}") as client:
            if not client.wait_until_serving(timeout_s=60):
                raise RuntimeError(f"replica on {r['port']} not serving: "
                                   f"{r['process'].poll()} {r['process'].stdout.read()}")
    return replicas


def stop_replica(replica):
    """SIGTERM, wait; returns (exit code, requests from the `stopped:` line or None, log)."""
    process = replica["process"]
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        log, _ = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        log, _ = process.communicate()
    match = re.search(r"stopped: (\d+) requests", log or "")
    return process.returncode, (int(match.group(1)) if match else None), log


def phase_fair_share(args):
    print("== phase 1: fair share, model_bench over three targets, concurrency 24, 4 s", flush=True)
    replicas = start_replicas(args.server)
    try:
        targets = ",".join(f"127.0.0.1:{replicas[int(i)]['port']}"
                           for i in args.fair_targets.split(","))
        with tempfile.TemporaryDirectory() as tmp:
            result_file = os.path.join(tmp, "fair.json")
            bench = subprocess.run([args.bench, "--target", targets, "--concurrency", "24",
                                    "--duration", "4", "--warmup", "1", "--rows", "10",
                                    "--json", result_file],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            print("\n".join(l for l in bench.stdout.splitlines() if "% done" not in l))
            step = json.load(open(result_file))["steps"][0]
    finally:
        stopped = [stop_replica(r) for r in replicas]
    counts = [n for _, n, _ in stopped]
    print(f"model_bench: {step['ok']} OK, errors {step.get('errors', {})}, "
          f"{step['throughput_rps']:.0f} req/s", flush=True)
    check(f"replicas exit 0 on SIGTERM: {[rc for rc, _, _ in stopped]}",
          all(rc == 0 for rc, _, _ in stopped))
    check(f"every replica logged its count: {counts}", all(n is not None for n in counts))
    check(f"model_bench: no errors ({step.get('errors', {})})", not step.get("errors"))
    if all(n is not None for n in counts):
        total = sum(counts)
        shares = [n / total if total else 0 for n in counts]
        print(f"fair share: {counts} requests of {total} = "
              + ", ".join(f"{s:.1%}" for s in shares), flush=True)
        check("each replica got 25-42 % of the calls", total > 0 and all(0.25 <= s <= 0.42 for s in shares))


def phase_failover(args):
    print(f"== phase 2: failover, one {args.lb} channel over three replicas, 16 threads, "
          f"{args.seconds:.0f} s, SIGKILL of one replica after {args.kill_after:.0f} s", flush=True)
    replicas = start_replicas(args.server)
    address = "ipv4:" + ",".join(f"127.0.0.1:{r['port']}" for r in replicas)
    service_config = json.loads(json.dumps(SERVICE_CONFIG))
    if args.no_retry_policy:  # to see the test fail without gRPC's retries
        del service_config["methodConfig"][0]["retryPolicy"]
    service_config["loadBalancingConfig"] = [{args.lb: {}}]
    client = model_client.ModelClient(
        address, max_attempts=1, timeout_s=10,
        channel_options=[("grpc.service_config", json.dumps(service_config)),
                         ("grpc.enable_retries", 1)])
    request = model_client.demo_request(rows=4, seed=1)
    lock = threading.Lock()
    successes = []   # monotonic time of each success
    failures = []    # (time, code, details)
    start = time.monotonic()
    stop_at = start + args.seconds

    def worker():
        while time.monotonic() < stop_at:
            try:
                response = client.evaluate(request)
                ok = len(response["prediction"]["y_1"]) == 4
            except grpc.RpcError as e:
                with lock:
                    failures.append((time.monotonic() - start, e.code(), e.details()))
                continue
            with lock:
                if ok:
                    successes.append(time.monotonic() - start)
                else:
                    failures.append((time.monotonic() - start, None, str(response)))

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    victim = replicas[0]
    time.sleep(args.kill_after)
    kill_time = time.monotonic() - start
    victim["process"].send_signal(signal.SIGKILL)
    victim["process"].wait()
    for t in threads:
        t.join()
    client.close()
    survivors = [stop_replica(r) for r in replicas[1:]]
    victim_rc = victim["process"].returncode

    total = len(successes)
    before = sum(1 for t in successes if t < kill_time)
    after = total - before
    last_window = sum(1 for t in successes if t >= args.seconds - 3)
    rate_before = before / kill_time
    rate_after = after / (args.seconds - kill_time)
    counts = [n for _, n, _ in survivors]
    print(f"client: {total} calls OK ({before} before the kill at {kill_time:.1f} s, {after} after;"
          f" {rate_before:.0f}/s before, {rate_after:.0f}/s after; {last_window} in the last 3 s),"
          f" {len(failures)} failed", flush=True)
    for f in failures[:5]:
        print(f"  failed at {f[0]:.2f} s: {f[1]} {f[2]}")
    print(f"killed replica exit {victim_rc}; survivors served {counts} "
          f"(exit codes {[rc for rc, _, _ in survivors]})", flush=True)
    check(f"the victim died of SIGKILL ({victim_rc})", victim_rc == -signal.SIGKILL)
    check(f"no failed calls ({len(failures)})", not failures)
    check(f"calls kept succeeding after the kill: {last_window} in the last 3 s > 0, "
          f"{rate_after:.0f}/s after >= 20 % of {rate_before:.0f}/s before",
          last_window > 0 and rate_after >= 0.2 * rate_before)
    check(f"survivors exit 0 on SIGTERM: {[rc for rc, _, _ in survivors]}",
          all(rc == 0 for rc, _, _ in survivors))
    if all(n is not None for n in counts) and total:
        shares = [n / total for n in counts]
        print("survivor shares of all calls: " + ", ".join(f"{s:.1%}" for s in shares), flush=True)
        check("each survivor served more than a third of all calls", all(s > 1 / 3 for s in shares))
    else:
        check(f"survivors logged their counts: {counts}", False)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--server", required=True)
    parser.add_argument("--bench", required=True)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--kill-after", type=float, default=3.0)
    parser.add_argument("--no-retry-policy", action="store_true",
                        help="drop the retryPolicy (shows that the failover check can fail)")
    parser.add_argument("--lb", default="round_robin",
                        help="phase 2's policy; pick_first shows that the share check can fail")
    parser.add_argument("--fair-targets", default="0,1,2",
                        help="phase 1: replicas model_bench gets, e.g. 0,0,1 to see the check fail")
    parser.add_argument("--phase", choices=["all", "fair", "failover"], default="all")
    args = parser.parse_args()
    if args.phase in ("all", "fair"):
        phase_fair_share(args)
    if args.phase in ("all", "failover"):
        phase_failover(args)
    if FAILURES:
        print(f"scaleout_test: FAIL ({len(FAILURES)})")
        return 1
    print("scaleout_test: PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
