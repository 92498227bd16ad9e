#!/usr/bin/python3
"""Drain under a saturated queue (docs/RELIABILITY.md, "Drain"): model_server with the demo model
and default flags (plus any after --, e.g. --drain-grace 2); 48 client threads over one channel,
each sending the seed's payload with 2000 rows in a loop (96 k rows offered against the default
--max-queue-rows 65,536, so some calls get RESOURCE_EXHAUSTED); SIGTERM after 3 s.

By default the clients behave like the seed's: UNAVAILABLE is retried after 1 s, 2 s, 4 s, ...;
every other answer is counted and the next call follows at once. With --no-backoff every answer,
UNAVAILABLE included, is followed by the next call at once (a load test, a retry loop without
back-off, a proxy's retries). Every attempt's code is counted, and each run asserts:
  - no code but OK, RESOURCE_EXHAUSTED and UNAVAILABLE (never CANCELLED);
  - the premises: some calls RESOURCE_EXHAUSTED (the queue was full), some refused by the drain;
  - nothing accepted lost: the server's count of calls it accepted (admitted past the drain
    gate) equals the clients' OK and RESOURCE_EXHAUSTED answers, and its `stopped: N requests`
    equals the OK answers;
  - every call the server refused while draining reached its client as UNAVAILABLE: the
    server's refusal count is at least the clients' "server is shutting down" answers and at
    most those plus the clients' other UNAVAILABLEs (a refusal still unsent when the server
    closed the connection reaches its client as the closed connection);
  - each client's call after the exit finds the server gone (UNAVAILABLE);
  - exit code 0, within the drain grace + 5 s of SIGTERM.

  /usr/bin/python3 test/reliability/drain_test.py --server build/server/model_server \
      [--runs 3] [--no-backoff] [-- --drain-grace 2]
  test/reliability/drain_runs.sh build/server/model_server 10   # the four variants, 10 runs each
"""
import argparse
import collections
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

from harness import free_port, generate_stubs, seed_payload, start_server, wait_until_serving  # noqa: E402,E501

TMP = tempfile.TemporaryDirectory()
generate_stubs(TMP.name)
import model_interface_pb2  # noqa: E402  (generated above)
import model_interface_pb2_grpc  # noqa: E402

DRAIN_REFUSAL = "server is shutting down"
FAILURES = []


def check(description, ok):
    print(("PASS: " if ok else "FAIL: ") + description, flush=True)
    if not ok:
        FAILURES.append(description)


def client(stub, request, stop, codes, details, lock, last, backoff_on):
    """Loops until `stop`. Seed-style (`backoff_on`): UNAVAILABLE backs off 1 s, 2 s, 4 s, ...;
    otherwise the next call follows every answer at once. `last` gets [time the latest call
    ended, its outcome]."""
    backoff = 1.0
    while not stop.is_set():
        try:
            stub.EvaluateModel(request, timeout=60)
            key = "OK"
            backoff = 1.0
        except grpc.RpcError as error:
            key = error.code().name
            if error.code() == grpc.StatusCode.UNAVAILABLE:
                key += " (drain)" if error.details() == DRAIN_REFUSAL else " (connection)"
            elif error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                with lock:
                    details[key] = error.details()
        with lock:
            codes[key] += 1
            last[:] = [time.monotonic(), key]
        if backoff_on and key.startswith("UNAVAILABLE"):
            stop.wait(backoff)
            backoff *= 2


def run_once(args, run):
    address = f"127.0.0.1:{free_port()}"
    server = start_server(args.server, "--address", address, *args.server_args)
    try:
        # Reconnecting soon after the first refused connection: the default back-off (1 s, then
        # x1.6) would add seconds to each run.
        wait_until_serving(grpc.insecure_channel(address, options=[
            ("grpc.initial_reconnect_backoff_ms", 50), ("grpc.min_reconnect_backoff_ms", 50),
            ("grpc.max_reconnect_backoff_ms", 100)]), server)
        channel = grpc.insecure_channel(address, options=[
            ("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)])
        stub = model_interface_pb2_grpc.ModelServiceStub(channel)
        payload = seed_payload([[0.1 * (i % 7), 0.2, 0.3] for i in range(args.rows)],
                               [0.1, 0.2, 0.3, 0.4, 0.5])
        request = model_interface_pb2.inRequest(inp_dict_bytes=json.dumps(payload).encode())
        stop = threading.Event()
        lock = threading.Lock()
        codes = collections.Counter()
        details = {}  # an unexpected code's message
        lasts = [[0.0, None] for _ in range(args.clients)]
        threads = [threading.Thread(target=client,
                                    args=(stub, request, stop, codes, details, lock, last,
                                          not args.no_backoff))
                   for last in lasts]
        for thread in threads:
            thread.start()
        time.sleep(args.load_seconds)
        signalled = time.monotonic()
        server.send_signal(signal.SIGTERM)
        try:
            exit_code = server.wait(timeout=120)
        except subprocess.TimeoutExpired:
            exit_code = None
        exited = time.monotonic()
        drain_s = exited - signalled
        # Each client calls again after the exit (at once, or after its back-off): that call
        # must find the server gone (UNAVAILABLE), not dropped.
        deadline = exited + 10
        while time.monotonic() < deadline:
            with lock:
                if all(when > exited for when, _ in lasts):
                    break
            time.sleep(0.05)
        stop.set()
        for thread in threads:
            thread.join()
        channel.close()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        log = server.stdout.read()
        server.stdout.close()

    stopped = re.search(r"stopped: (\d+) requests", log)
    refused = re.search(r"(\d+) calls refused while draining", log)
    accepted = re.search(r"(\d+) calls accepted since start", log)
    print(f"run {run}: {dict(sorted(codes.items()))}; exit {exit_code} after {drain_s:.2f} s; "
          f"server: {stopped.group(0) if stopped else 'no stopped line'}, "
          f"{refused.group(0) if refused else 'no refusal count'}, "
          f"{accepted.group(0) if accepted else 'no accepted count'}", flush=True)
    for line in log.splitlines():
        if "drain:" in line or "accept4" in line or "received" in line or "stopped:" in line:
            print(f"run {run}: server: {line}")
    allowed = {"OK", "RESOURCE_EXHAUSTED", "UNAVAILABLE (drain)", "UNAVAILABLE (connection)"}
    check(f"run {run}: only OK, RESOURCE_EXHAUSTED and UNAVAILABLE (CANCELLED: "
          f"{codes['CANCELLED']})", set(codes) <= allowed)
    check(f"run {run}: the queue was full (RESOURCE_EXHAUSTED: {codes['RESOURCE_EXHAUSTED']})",
          codes["RESOURCE_EXHAUSTED"] > 0)
    check(f"run {run}: calls arrived during the drain and were refused "
          f"({codes['UNAVAILABLE (drain)']})", codes["UNAVAILABLE (drain)"] > 0)
    check(f"run {run}: exit code 0", exit_code == 0)
    check(f"run {run}: exit {drain_s:.2f} s after SIGTERM, within the drain grace "
          f"({args.grace:g} s) + 5 s", drain_s <= args.grace + 5)
    after_exit = collections.Counter(outcome for _, outcome in lasts)
    check(f"run {run}: each client's call after the exit found the server gone ({dict(after_exit)})",
          after_exit == {"UNAVAILABLE (connection)": args.clients})
    check(f"run {run}: every computed request was answered OK ({codes['OK']} OK)",
          stopped is not None and int(stopped.group(1)) == codes["OK"])
    check(f"run {run}: every accepted call was answered (server: "
          f"{accepted.group(1) if accepted else '?'} accepted; clients: "
          f"{codes['OK'] + codes['RESOURCE_EXHAUSTED']} OK or RESOURCE_EXHAUSTED)",
          accepted is not None
          and int(accepted.group(1)) == codes["OK"] + codes["RESOURCE_EXHAUSTED"])
    drain_refusals = codes["UNAVAILABLE (drain)"]
    other_unavailable = codes["UNAVAILABLE (connection)"]
    check(f"run {run}: every refusal reached its client as UNAVAILABLE (server: "
          f"{refused.group(1) if refused else '?'} refused; clients: {drain_refusals} refused, "
          f"{other_unavailable} other UNAVAILABLE)",
          refused is not None
          and drain_refusals <= int(refused.group(1)) <= drain_refusals + other_unavailable)
    for code, message in details.items():
        print(f"run {run}: {code}: {message}")
    if exit_code != 0 or FAILURES:
        print(log[-4000:])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--clients", type=int, default=48)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--load-seconds", type=float, default=3.0)
    parser.add_argument("--no-backoff", action="store_true",
                        help="clients call again at once after every answer, UNAVAILABLE included")
    parser.add_argument("server_args", nargs="*", help="extra model_server flags (after --)")
    args = parser.parse_args()
    grace = [args.server_args[i + 1] for i, flag in enumerate(args.server_args[:-1])
             if flag == "--drain-grace"]
    args.grace = float(grace[-1]) if grace else 0.0
    for run in range(1, args.runs + 1):
        run_once(args, run)
    print(f"drain: {'FAIL' if FAILURES else 'PASS'} ({args.runs} runs, "
          f"{'no back-off' if args.no_backoff else 'back-off'}, grace {args.grace:g} s)")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
