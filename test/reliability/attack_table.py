#!/usr/bin/python3
"""The attack table of docs/SECURITY.md: each attack against model_server at its default flags,
once directly and once through docker/haproxy/haproxy.cfg, with a legitimate client at 100
calls/s alongside. Measures, does not assert (test/reliability/attack_test.py asserts). Loopback
only; about 8 minutes.

  /usr/bin/python3 test/reliability/attack_table.py --server build/server/model_server \
      --bench build/bench/model_bench [--seconds 20] [--only NAME,...] [--direct-only] \
      [--after 5] [--preload LIBRARY] [--server-flags "--memory-trim-interval-ms 0"]

Prints one markdown row per attack and path: what the attack did, the server's RSS (idle, peak,
--after seconds after), the legitimate calls (OK, failed, p99 against the quiet p99 measured
just before). --preload runs the server with LD_PRELOAD (e.g. another allocator).
"""
import argparse
import os
import resource
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import attacks  # noqa: E402
from attack_test import Proxy, Server, bench_result, legit_load  # noqa: E402
from harness import generate_stubs  # noqa: E402

GIB2 = (1 << 31) - 1


def attacks_for(port, seconds):
    """name -> (description, the attack aimed at `port`)."""
    return {
        "rapid_reset_1": ("Rapid Reset, 1 connection",
                          attacks.RapidReset(port, seconds, connections=1)),
        "rapid_reset_4": ("Rapid Reset, 4 connections",
                          attacks.RapidReset(port, seconds, connections=4)),
        "rapid_reset_late": ("Rapid Reset, 1 connection, each batch of 90 calls reset 2 ms "
                             "after it was sent whole",
                             attacks.RapidReset(port, seconds, reset_after=0.002)),
        "stalled_streams": ("4 connections x 64 streams, each announcing 4 MiB, sending all but "
                            "16 KiB, then stalling",
                            attacks.StalledStreams(port, seconds, connections=4, streams=64,
                                                   announce=4 << 20,
                                                   send_bytes=(4 << 20) - 16384)),
        "trickle": ("1 stream announcing 2 GiB, trickling 64 B/s",
                    attacks.StalledStreams(port, seconds, announce=GIB2)),
        "push": ("1 stream announcing 2 GiB, pushed as fast as flow control allows",
                 attacks.StalledStreams(port, seconds, announce=GIB2, send_bytes=GIB2)),
        "idle_flood": ("5000 idle HTTP/2 connections", attacks.IdleFlood(port, seconds, 5000)),
        "tcp_flood": ("2000 TCP connections that send nothing",
                      attacks.ConnectionFlood(port, seconds, 2000)),
    }


def measure(args, name, through_proxy, work):
    server = Server(args, *args.server_flags.split(), metrics=False,
                    env={"LD_PRELOAD": args.preload} if args.preload else None)
    proxy = None
    try:
        proxy = Proxy(args.haproxy, server.port) if through_proxy else None
        target = proxy.port if proxy else server.port
        quiet = bench_result(legit_load(args, target, 5, 100, os.path.join(work, "quiet.json")),
                             os.path.join(work, "quiet.json"))
        idle = attacks.rss_mib(server.process.pid)
        sampler = attacks.RssSampler(server.process.pid)
        legit = legit_load(args, target, args.seconds, 100, os.path.join(work, "legit.json"))
        description, attack = attacks_for(target, args.seconds)[name]
        stats = attack.start().join()
        result = bench_result(legit, os.path.join(work, "legit.json"))
        peak = sampler.stop()
        time.sleep(args.after)
        after = attacks.rss_mib(server.process.pid)
        alive = server.process.poll() is None
    finally:
        if proxy:
            proxy.stop()
        code = server.stop(check_log=False)
    errors = ", ".join(f"{count} {kind}" for kind, count in result["error_kinds"].items())
    print(f"| {description} | {'HAProxy' if through_proxy else 'direct'} | {stats} "
          f"| {idle:.0f} / {peak:.0f} / {after:.0f} | {result['ok']} OK"
          f"{', ' + errors if errors else ''} | {result['p99_ms']:.1f} ({quiet['p99_ms']:.1f}) "
          f"| {'up' if alive else 'DIED'}, exit {code} |", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", required=True)
    parser.add_argument("--bench", required=True)
    parser.add_argument("--haproxy", default="/usr/sbin/haproxy")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--only", default="")
    parser.add_argument("--direct-only", action="store_true")
    parser.add_argument("--after", type=float, default=5)
    parser.add_argument("--preload", default="")
    parser.add_argument("--server-flags", default="")
    ARGS = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the floods need descriptors
    names = ARGS.only.split(",") if ARGS.only else list(attacks_for(0, 0))
    print(f"load before: {open('/proc/loadavg').read().strip()}")
    print(f"| attack | path | what the attack did | server RSS MiB idle / peak / {ARGS.after:g} s after "
          "| legit calls (100/s) | legit p99 ms (quiet) | server |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as work:
        generate_stubs(work)
        for name in names:
            for through_proxy in (False,) if ARGS.direct_only else (False, True):
                measure(ARGS, name, through_proxy, work)
    print(f"load after: {open('/proc/loadavg').read().strip()}")
