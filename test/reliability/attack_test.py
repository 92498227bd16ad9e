#!/usr/bin/python3
"""Attack suite (docs/SECURITY.md): hostile clients against a real model_server on loopback, one
attack per run, each bounded in time (under 30 s of attack), asserting the bound that ends it.

  fd_exhaustion      idle connections past the open-files limit. With room to raise the soft
                     limit the server does, and the handshake timeout closes the idle
                     connections; without room gRPC 1.51 stops accepting for good
                     (CVE-2023-4785) and the self-check ends the server with exit code 3.
  metrics_slowloris  64 connections trickling a never-ending request into /metrics while a
                     scraper asks twice a second: every scrape is answered at once, every slow
                     connection is closed by the endpoint's deadline.
  stalled_call       one call announcing 2 GiB and trickling 64 B/s, an idle connection and a
                     ping flood, next to a legitimate client: each is ended by its bound
                     (connection age + grace, idle limit, ping strikes); the legitimate calls
                     all succeed.
  rapid_reset_proxy  HEADERS + RST_STREAM as fast as one connection takes them (CVE-2023-44487),
                     reset at once and reset 2 ms later, through docker/haproxy/haproxy.cfg,
                     next to a legitimate client: the server's RSS stays bounded and no
                     legitimate call fails.

  /usr/bin/python3 test/reliability/attack_test.py ATTACK --server build/server/model_server \
      --bench build/bench/model_bench [--haproxy /usr/sbin/haproxy] [--seconds S] [--direct]

--seconds sets the attack's length (default: what ctest runs); --direct aims rapid_reset_proxy
at the server itself, without the proxy (what gRPC 1.51 alone does: expected to fail). Exit
codes: 0 pass, 1 fail, 77 skipped (haproxy missing).
"""
import argparse
import json
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

import grpc

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "test", "python"))

import attacks  # noqa: E402
from harness import free_port, generate_stubs  # noqa: E402

SKIP = 77
FAILURES = []
WORK = None  # a scratch directory for the run (set by main)


def check(description, ok, detail=""):
    print(("PASS: " if ok else "FAIL: ") + description + (f" ({detail})" if detail else ""),
          flush=True)
    if not ok:
        FAILURES.append(description)


class Server:
    """model_server on loopback with its log in a file; `nofile` sets (soft, hard) RLIMIT_NOFILE
    for it, `env` adds to its environment."""

    def __init__(self, args, *flags, nofile=None, metrics=False, env=None):
        self.port = free_port()
        self.metrics_port = free_port() if metrics else None
        self.log_file = tempfile.NamedTemporaryFile("w+", prefix="model_server-", suffix=".log")
        limits = (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, nofile)) if nofile else None
        self.process = subprocess.Popen(
            [args.server, "--address", f"127.0.0.1:{self.port}", "--metrics-address",
             f"127.0.0.1:{self.metrics_port}" if metrics else "", *flags],
            stdout=self.log_file, stderr=subprocess.STDOUT, preexec_fn=limits,
            env=dict(os.environ, **(env or {})))
        deadline = time.monotonic() + 60
        while "listening on port" not in self.log():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.process.kill()
                raise RuntimeError(f"model_server did not start:\n{self.log()}")
            time.sleep(0.1)

    def log(self):
        with open(self.log_file.name) as log:
            return log.read()

    def health(self, timeout=3):
        """HealthCheck on a new connection: the reply's status, or the error's code name."""
        import model_interface_pb2_grpc
        from google.protobuf import empty_pb2
        channel = grpc.insecure_channel(f"127.0.0.1:{self.port}",
                                        options=[("grpc.use_local_subchannel_pool", 1)])
        try:
            stub = model_interface_pb2_grpc.ModelServiceStub(channel)
            return stub.HealthCheck(empty_pb2.Empty(), timeout=timeout).status
        except grpc.RpcError as error:
            return error.code().name
        finally:
            channel.close()

    def stop(self, check_log=True):
        """SIGTERM (unless it already exited); returns the exit code. With check_log, checks
        that no log line failed to format (spdlog writes "LOG ERROR" instead of the line)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        if check_log:
            check("every log line of the server formatted", "LOG ERROR" not in self.log())
        return code


class Proxy:
    """HAProxy with the shipped docker/haproxy/haproxy.cfg, in front of `server_port`."""

    def __init__(self, haproxy, server_port):
        self.port = free_port()
        env = dict(os.environ, PROXY_BIND=f"127.0.0.1:{self.port}",
                   MODEL_SERVER_ADDRESS=f"127.0.0.1:{server_port}")
        self.process = subprocess.Popen(
            [haproxy, "-db", "-f", os.path.join(REPO, "docker", "haproxy", "haproxy.cfg")],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 10
        while True:
            try:
                attacks.socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"haproxy did not start: {self.process.stdout.read()}")
                time.sleep(0.05)

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def legit_load(args, port, seconds, rate, out):
    """model_bench at `rate` calls/s for `seconds` (open loop), started now; returns the
    process. Its --json result is written to `out`."""
    return subprocess.Popen(
        [args.bench, "--target", f"127.0.0.1:{port}", "--rate", str(rate), "--duration",
         str(seconds), "--warmup", "0", "--timeout-ms", "5000", "--no-wait", "--json", out],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


def bench_result(process, out):
    process.wait(timeout=120)
    with open(out) as result:
        step = json.load(result)["steps"][0]
    return {"ok": step["ok"], "errors": sum(step["errors"].values()),
            "error_kinds": step["errors"], "p50_ms": step["latency_ms"]["p50"],
            "p99_ms": step["latency_ms"]["p99"], "max_ms": step["latency_ms"]["max"]}


def fd_exhaustion(args):
    seconds = args.seconds or 4
    flags = ("--handshake-timeout-ms", "2000", "--self-check-interval-ms", "1000",
             "--self-check-failures", "3")
    # 1. Room to raise: the soft limit goes up to the hard one, the flood does not exhaust it,
    #    and the handshake timeout closes the connections that never speak HTTP/2.
    server = Server(args, *flags, nofile=(256, 4096))
    try:
        check("the soft open-files limit is raised to the hard one",
              "open files limit raised from 256 to 4096" in server.log())
        flood = attacks.ConnectionFlood(server.port, seconds, 600).start()
        time.sleep(1)
        during = server.health()
        stats = flood.join()
        check("600 idle connections were opened", stats["opened"] == 600, str(stats))
        check("a new connection is served during the flood", during == "SERVING", during)
        check("the handshake timeout (2 s) closed every idle connection",
              stats["closed_by_server"] == stats["opened"], str(stats))
        check("a new connection is served after the flood", server.health() == "SERVING")
        check("the server never stopped accepting", "Failed accept4" not in server.log())
    finally:
        check("SIGTERM still drains and exits 0", server.stop() == 0)

    # 2. No room (hard limit 256): the flood exhausts the descriptors, gRPC 1.51's listener
    #    stops for good; the self-check notices and the server exits 3 to be restarted.
    server = Server(args, *flags, nofile=(256, 256))
    try:
        flood = attacks.ConnectionFlood(server.port, 3, 600).start()
        flood.join()
        released = time.monotonic()
        check("the flood exhausted the descriptors (gRPC logged the failed accept)",
              "Failed accept4" in server.log())
        try:
            code = server.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            code = None
        log = server.log()
        check("the server exits with code 3 after failed self-checks", code == 3,
              f"exit code {code} {time.monotonic() - released:.1f} s after the flood")
        check("it logged why", re.search(r"self-check: new connections to \S+ failed 3 times",
                                         log) is not None)
        check("and drained first", "draining, then exiting with code 3" in log and
              "stopped:" in log)
    finally:
        server.stop()


def metrics_slowloris(args):
    seconds = args.seconds or 15
    server = Server(args, metrics=True)
    try:
        attack = attacks.Slowloris(server.metrics_port, seconds, connections=64, every=1.0)
        attack.start()
        waits, failures = [], 0
        end = time.monotonic() + seconds
        time.sleep(1)
        while time.monotonic() < end:
            start = time.monotonic()
            try:
                with urllib.request.urlopen(
                        f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10) as reply:
                    ok = reply.status == 200 and b"model_server_requests_total" in reply.read()
            except OSError:
                ok = False
            waits.append(time.monotonic() - start)
            failures += not ok
            time.sleep(0.5)
        stats = attack.join()
        print(f"slowloris: {stats}; scrapes: {len(waits)}, slowest {max(waits) * 1000:.0f} ms")
        check("every scrape under slowloris was answered", failures == 0 and len(waits) >= 10,
              f"{failures} of {len(waits)} failed")
        check("each within 1 s", max(waits) < 1.0, f"slowest {max(waits):.2f} s")
        check("the endpoint closed slow connections at its deadline (3 s)",
              stats["closed_by_server"] >= 64 and stats["longest_life_s"] <= 4.5,
              str(stats))
    finally:
        check("SIGTERM still drains and exits 0", server.stop() == 0)


def stalled_call(args):
    seconds = args.seconds or 14
    age_ms, grace_ms, idle_ms = 4000, 3000, 2000
    server = Server(args, "--max-connection-age-ms", str(age_ms), "--max-connection-age-grace-ms",
                    str(grace_ms), "--max-connection-idle-ms", str(idle_ms))
    work = WORK
    try:
        legit = legit_load(args, server.port, seconds, 50, os.path.join(work, "legit.json"))
        trickle = attacks.StalledStreams(server.port, seconds, announce=(1 << 31) - 1,
                                         trickle_bytes=64, trickle_every=1.0).start()
        idle = attacks.H2Socket(server.port)
        opened = time.monotonic()
        pings = attacks.H2Socket(server.port)
        for i in range(10):
            pings.send(attacks.frame(attacks.PING, 0, 0, i.to_bytes(8, "big")))
            time.sleep(0.05)
        stats = trickle.join()
        result = bench_result(legit, os.path.join(work, "legit.json"))
        print(f"trickle: {stats}; legit: {result}")
        bound = age_ms * 1.1 / 1000 + grace_ms / 1000 + 1.5
        closed = stats["closed_after_s"][0]
        check("the trickled call got GOAWAY at the connection's age",
              stats["goaways"] == 1 and stats["goaway_after_s"][0] <= age_ms * 1.1 / 1000 + 0.5,
              str(stats))
        check("and its connection was closed by age + grace",
              closed is not None and closed <= bound, f"closed after {closed} s, bound {bound} s")
        idle_closed = idle.closed_at and idle.closed_at - opened
        # Before the age limit could have closed it (4 s - 10 % jitter).
        check("an idle connection got GOAWAY and was closed at the idle limit (2 s)",
              idle.goaway is not None and idle_closed is not None and idle_closed < 3,
              f"goaway {idle.goaway}, closed after {idle_closed:.1f} s")
        check("a ping flood got GOAWAY ENHANCE_YOUR_CALM",
              pings.goaway is not None and pings.goaway[1] == 0xB, f"goaway {pings.goaway}")
        check("every legitimate call succeeded (connection age included)",
              result["errors"] == 0 and result["ok"] > 0, str(result))
        idle.close()
        pings.close()
    finally:
        check("SIGTERM still drains and exits 0", server.stop() == 0)


def rapid_reset_proxy(args):
    seconds = args.seconds or 12  # per phase
    if not args.direct and not os.access(args.haproxy, os.X_OK):
        print(f"SKIP: {args.haproxy} not found (Debian's haproxy package)")
        return SKIP
    server = Server(args, metrics=True)
    proxy = None
    work = WORK
    rate = 100
    try:
        proxy = None if args.direct else Proxy(args.haproxy, server.port)
        target = server.port if args.direct else proxy.port
        quiet = bench_result(legit_load(args, target, 5, rate, os.path.join(work, "quiet.json")),
                             os.path.join(work, "quiet.json"))
        idle_rss = attacks.rss_mib(server.process.pid)
        sampler = attacks.RssSampler(server.process.pid)
        legit = legit_load(args, target, 2 * seconds, rate, os.path.join(work, "legit.json"))
        # Reset at once (what HAProxy drops before passing anything on), then reset 2 ms later
        # (once passed on: what its per-address call rate cuts off).
        at_once = attacks.RapidReset(target, seconds).start().join()
        late = attacks.RapidReset(target, seconds, reset_after=0.002).start().join()
        result = bench_result(legit, os.path.join(work, "legit.json"))
        peak = sampler.stop()
        with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics") as reply:
            scrape = reply.read().decode()
        reached = sum(int(float(v)) for v in re.findall(
            r'model_server_requests_total\{method="EvaluateModel",code="[A-Z_]+"\} (\S+)', scrape))
        print(f"{'direct' if args.direct else 'through haproxy'}: reset at once {at_once}; "
              f"reset 2 ms later {late}; quiet {quiet}; under attack {result}; server RSS idle "
              f"{idle_rss:.0f} MiB, peak {peak:.0f}; EvaluateModel calls the server finished: "
              f"{reached}")
        check("the attack ran", at_once["streams"] > 10000 and late["streams"] > 1000,
              f"{at_once['streams']} and {late['streams']} streams")
        check("the server's RSS stayed within 100 MiB of idle", peak - idle_rss < 100,
              f"idle {idle_rss:.0f} MiB, peak {peak:.0f} MiB")
        check("no legitimate call failed", result["errors"] == 0 and result["ok"] > 0,
              str(result))
        check("the server stayed up", server.process.poll() is None)
    finally:
        if proxy:
            proxy.stop()
        check("SIGTERM still drains and exits 0", server.stop() == 0)


ATTACKS = {"fd_exhaustion": fd_exhaustion, "metrics_slowloris": metrics_slowloris,
           "stalled_call": stalled_call, "rapid_reset_proxy": rapid_reset_proxy}

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("attack", choices=sorted(ATTACKS))
    parser.add_argument("--server", required=True)
    parser.add_argument("--bench", required=True)
    parser.add_argument("--haproxy", default="/usr/sbin/haproxy")
    parser.add_argument("--seconds", type=float, default=0)
    parser.add_argument("--direct", action="store_true")
    ARGS = parser.parse_args()
    with tempfile.TemporaryDirectory() as WORK:
        generate_stubs(WORK)
        started = time.monotonic()
        code = ATTACKS[ARGS.attack](ARGS)
        print(f"{ARGS.attack}: {time.monotonic() - started:.0f} s")
    if code == SKIP:
        sys.exit(SKIP)
    print(("FAIL: " + "; ".join(FAILURES)) if FAILURES else "PASS", flush=True)
    sys.exit(1 if FAILURES else 0)
