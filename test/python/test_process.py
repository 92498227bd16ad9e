#!/usr/bin/python3
"""model_server as a process: startup faults, graceful drain, a second signal, a lost device (exit
code 4), TLS and mTLS.

  /usr/bin/python3 test/python/test_process.py --server build/server/model_server
"""
import argparse
import concurrent.futures
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request
from typing import List

import grpc
import torch

from harness import free_port, generate_stubs, seed_payload, start_server, wait_until_serving

ARGS = None
TMP = tempfile.TemporaryDirectory()
generate_stubs(TMP.name)
import health_pb2  # noqa: E402  (generated above)
import health_pb2_grpc  # noqa: E402
import model_interface_pb2  # noqa: E402
import model_interface_pb2_grpc  # noqa: E402


def path(name):
    return os.path.join(TMP.name, name)


class SlowModel(torch.nn.Module):
    """x_1..x_3 and 5 params like the demo, but each forward takes a long while."""
    input_var_order: List[str]
    default_params: List[float]

    def __init__(self, iterations: int):
        super().__init__()
        self.input_var_order = ["x_1", "x_2", "x_3"]
        self.default_params = [0.0, 1.0, 1.0, 1.0, 1.0]
        self.iterations = iterations
        self.w = torch.nn.Parameter(torch.eye(512) * 0.5, requires_grad=False)

    def forward(self, x, params):
        h = x.sum(dim=1, keepdim=True).expand(x.shape[0], 512)
        for _ in range(self.iterations):
            h = torch.tanh(h @ self.w)
        return params[:, 0:1] + h[:, 0:1]


class WrongSignature(torch.nn.Module):
    input_var_order: List[str]

    def __init__(self):
        super().__init__()
        self.input_var_order = ["a"]

    def forward(self, x, p, q):
        return x


class LostDevice(torch.nn.Module):
    """The demo's inputs; a row with x_1 == 666 makes forward fail as one does after a sticky CUDA
    error (the text libtorch gives it), so a CPU-only server meets that fault."""
    input_var_order: List[str]
    default_params: List[float]

    def __init__(self):
        super().__init__()
        self.input_var_order = ["x_1", "x_2", "x_3"]
        self.default_params = [0.0, 1.0, 1.0, 1.0, 1.0]

    def forward(self, x, params):
        if bool((x[:, 0] == 666.0).any()):
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return params[:, 0:1] + x.sum(dim=1, keepdim=True)


def evaluate(target, rows=50, timeout=60, credentials=None):
    """EvaluateModel on `target`: an address (a new channel) or an open channel."""
    if not isinstance(target, str):
        channel = target
    elif credentials:
        channel = grpc.secure_channel(target, credentials)
    else:
        channel = grpc.insecure_channel(target)
    stub = model_interface_pb2_grpc.ModelServiceStub(channel)
    payload = json.dumps(seed_payload([[0.1, 0.2, 0.3]] * rows, [0, 1, 1, 1, 1])).encode()
    reply = stub.EvaluateModel(model_interface_pb2.inRequest(inp_dict_bytes=payload),
                               timeout=timeout)
    return json.loads(reply.response_bytes)["prediction"]["y_1"]


def health_statuses(target):
    """What grpc.health.v1 says for "" and "modelservice", and ModelService.HealthCheck.
    `target` is an address or an open channel (a connected one answers within milliseconds)."""
    from google.protobuf import empty_pb2
    channel = grpc.insecure_channel(target) if isinstance(target, str) else target
    health = health_pb2_grpc.HealthStub(channel)
    statuses = [health_pb2.HealthCheckResponse.ServingStatus.Name(
        health.Check(health_pb2.HealthCheckRequest(service=service), timeout=2).status)
        for service in ("", "modelservice")]
    statuses.append(model_interface_pb2_grpc.ModelServiceStub(channel).HealthCheck(
        empty_pb2.Empty(), timeout=2).status)
    if isinstance(target, str):
        channel.close()
    return statuses


def wait_for_health(channel, statuses, timeout_s=5):
    """Polls health_statuses on an open channel until it says `statuses`; fails after
    `timeout_s` with the last answer."""
    deadline = time.monotonic() + timeout_s
    while True:
        now = health_statuses(channel)
        if now == statuses:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"health says {now}, not {statuses}, after {timeout_s} s")
        time.sleep(0.01)


class StartupFaults(unittest.TestCase):
    def assert_refused(self, args, message):
        started = time.monotonic()
        # No metrics endpoint: the default port (8002) may be taken by another server.
        result = subprocess.run([ARGS.server, "--metrics-address", "", *args],
                                capture_output=True, text=True, timeout=120)
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        errors = [line for line in (result.stdout + result.stderr).splitlines() if "[error]" in line]
        self.assertEqual(len(errors), 1, result.stdout + result.stderr)
        self.assertIn(message, errors[0])
        self.assertLess(time.monotonic() - started, 60)

    def test_missing_model(self):
        self.assert_refused(["--model", path("nope.pt")], "does not exist")

    def test_directory_as_model(self):
        self.assert_refused(["--model", TMP.name], "is not a file")

    def test_corrupt_model(self):
        with open(path("corrupt.pt"), "wb") as f:
            f.write(b"PK\x03\x04 definitely not a model")
        self.assert_refused(["--model", path("corrupt.pt")], "cannot load TorchScript model")

    def test_wrong_signature(self):
        torch.jit.script(WrongSignature()).save(path("wrong.pt"))
        self.assert_refused(["--model", path("wrong.pt")], "must take (x) or (x, params)")

    def test_port_in_use(self):
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            self.assert_refused(["--address", f"127.0.0.1:{port}"], "cannot listen on")

    def test_unreadable_tls_key(self):
        self.assert_refused(["--address", f"127.0.0.1:{free_port()}", "--tls-cert",
                             path("none.pem"), "--tls-key", path("none.key")],
                            "cannot read TLS certificate file")


class Drain(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        torch.jit.script(SlowModel(iterations=600)).save(path("slow.pt"))

    def start(self, *extra):
        address = f"127.0.0.1:{free_port()}"
        server = start_server(ARGS.server, "--address", address, "--model", path("slow.pt"),
                              "--max-batch-rows", "50", "--torch-threads", "1", *extra)
        self.addCleanup(server.stdout.close)
        # The log up to "listening" names the metrics endpoint (the server's own in-flight count).
        for line in server.stdout:
            metrics = re.search(r"serving GET /metrics on (\S+)", line)
            if metrics:
                self.metrics_url = f"http://{metrics.group(1)}/metrics"
            if "listening on port" in line:
                break
        wait_until_serving(grpc.insecure_channel(address), server)
        return server, address

    def wait_for_server(self, in_flight, arrived):
        """Waits until the server has at least `in_flight` EvaluateModel calls in flight and has
        seen `arrived` in all (in flight or answered), by its own metrics: a client's call that
        is not done may not have reached the server yet."""
        deadline = time.monotonic() + 30
        while True:
            with urllib.request.urlopen(self.metrics_url, timeout=5) as reply:
                text = reply.read().decode()
            now_in_flight = float(re.search(r"^model_server_inflight_requests (\S+)$", text,
                                            re.MULTILINE).group(1))
            answered = sum(float(value) for value in re.findall(
                r'^model_server_requests_total\{method="EvaluateModel",code="\w+"\} (\S+)$', text,
                re.MULTILINE))
            if now_in_flight >= in_flight and now_in_flight + answered >= arrived:
                return
            self.assertLess(time.monotonic(), deadline,
                            f"{now_in_flight} calls in flight, {answered} answered")
            time.sleep(0.02)

    def test_sigterm_finishes_every_accepted_call(self):
        server, address = self.start()
        # Open before SIGTERM: health polls on it answer within milliseconds.
        channel = grpc.insecure_channel(address)
        self.addCleanup(channel.close)
        self.assertEqual(health_statuses(channel), ["SERVING"] * 3)
        calls = 12
        with concurrent.futures.ThreadPoolExecutor(calls) as pool:
            futures = [pool.submit(evaluate, address) for _ in range(calls)]
            # One batch of 50 rows at a time (~0.2 s), so most calls are queued.
            self.wait_for_server(in_flight=8, arrived=calls)
            server.send_signal(signal.SIGTERM)
            # Draining: health says NOT_SERVING (without a grace period the drain refuses new
            # calls from that moment), and new calls are refused with UNAVAILABLE.
            wait_for_health(channel, ["NOT_SERVING"] * 3)
            with self.assertRaises(grpc.RpcError) as refused:
                evaluate(address, timeout=5)
            self.assertEqual(refused.exception.code(), grpc.StatusCode.UNAVAILABLE)
            self.assertEqual(refused.exception.details(), "server is shutting down")
            results = [future.result() for future in futures]
        self.assertTrue(all(len(result) == 50 for result in results))
        self.assertEqual(server.wait(timeout=60), 0)
        log = server.stdout.read()
        self.assertIn(f"stopped: {calls} requests", log)

    def test_grace_period_serves_with_health_not_serving(self):
        grace = 2
        server, address = self.start("--drain-grace", str(grace))
        # One connection, open before SIGTERM: health polls answer within milliseconds and the
        # calls below reach the server at once.
        channel = grpc.insecure_channel(address)
        self.addCleanup(channel.close)
        self.assertEqual(health_statuses(channel), ["SERVING"] * 3)
        signalled = time.monotonic()
        server.send_signal(signal.SIGTERM)
        while health_statuses(channel) != ["NOT_SERVING"] * 3:
            self.assertLess(time.monotonic() - signalled, 0.3, "health still SERVING")
            time.sleep(0.01)
        # Served normally during the grace period.
        self.assertEqual(len(evaluate(channel, timeout=10)), 50)
        self.assertLess(time.monotonic() - signalled, grace)
        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            # Sent (and accepted: none is refused below) in the grace period, still computing
            # after it, one 50-row batch each: seconds of work even on a machine twice as fast.
            late = [pool.submit(evaluate, channel) for _ in range(32)]
            self.wait_for_server(in_flight=8, arrived=1 + len(late))
            self.assertLess(time.monotonic() - signalled, grace, "calls sent after the grace")
            time.sleep(max(0.0, signalled + grace + 0.3 - time.monotonic()))
            self.assertTrue(any(not future.done() for future in late))
            with self.assertRaises(grpc.RpcError) as refused:
                evaluate(address, timeout=5)
            self.assertEqual(refused.exception.code(), grpc.StatusCode.UNAVAILABLE)
            self.assertEqual(refused.exception.details(), "server is shutting down")
            self.assertTrue(all(len(future.result()) == 50 for future in late))
        self.assertEqual(server.wait(timeout=60), 0)
        log = server.stdout.read()
        self.assertIn(f"stopped: {1 + len(late)} requests", log)
        self.assertIn("drain: connections closed; 1 calls refused while draining", log)

    def test_second_signal_exits_at_once(self):
        server, address = self.start("--drain-timeout", "120")
        channel = grpc.insecure_channel(address)
        self.addCleanup(channel.close)
        self.assertEqual(health_statuses(channel), ["SERVING"] * 3)
        # 16 calls of one 50-row batch each: seconds of draining left when the second signal comes.
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            futures = [pool.submit(evaluate, address) for _ in range(16)]
            self.wait_for_server(in_flight=8, arrived=8)
            server.send_signal(signal.SIGTERM)
            # The drain has begun (the server watches for a second signal before it turns
            # health NOT_SERVING).
            wait_for_health(channel, ["NOT_SERVING"] * 3)
            started = time.monotonic()
            server.send_signal(signal.SIGTERM)
            self.assertEqual(server.wait(timeout=10), 1)
            self.assertLess(time.monotonic() - started, 5)
            answered, cut_off = 0, 0
            for future in futures:
                try:
                    self.assertEqual(len(future.result()), 50)
                    answered += 1
                except grpc.RpcError as error:
                    # Cut off by the exit (the connection closes under the call), or, for a
                    # call that arrived after the first SIGTERM, refused by the drain: both
                    # UNAVAILABLE. Any other error is a fault.
                    self.assertEqual(error.code(), grpc.StatusCode.UNAVAILABLE,
                                     f"{error.code()}: {error.details()}")
                    cut_off += 1
            # Seconds of work were left: the forced exit cut calls off instead of draining them.
            self.assertGreater(cut_off, 0, f"{answered} calls answered, none cut off")


class DeviceFault(unittest.TestCase):
    def test_a_lost_device_ends_serving_with_exit_code_4(self):
        torch.jit.script(LostDevice()).save(path("lost_device.pt"))
        address = f"127.0.0.1:{free_port()}"
        # The grace period keeps the server up (NOT_SERVING) long enough to look at it.
        server = start_server(ARGS.server, "--address", address, "--model", path("lost_device.pt"),
                              "--self-check-interval-ms", "0", "--drain-grace", "2")
        self.addCleanup(server.stdout.close)
        channel = grpc.insecure_channel(address)
        self.addCleanup(channel.close)
        wait_until_serving(channel, server)
        stub = model_interface_pb2_grpc.ModelServiceStub(channel)

        def call(x_1):
            payload = json.dumps(seed_payload([[x_1, 0, 0]], [0, 1, 1, 1, 1])).encode()
            return stub.EvaluateModel(model_interface_pb2.inRequest(inp_dict_bytes=payload),
                                      timeout=30)

        # A call that finishes before the fault is answered.
        self.assertEqual(json.loads(call(1.0).response_bytes)["prediction"]["y_1"], [1.0])
        with self.assertRaises(grpc.RpcError) as lost:
            call(666.0)
        self.assertEqual(lost.exception.code(), grpc.StatusCode.UNAVAILABLE)
        self.assertIn("illegal memory access", lost.exception.details())
        # NOT_SERVING at once; the instance computes nothing any more: UNAVAILABLE at once.
        wait_for_health(channel, ["NOT_SERVING"] * 3, timeout_s=1)
        with self.assertRaises(grpc.RpcError) as after:
            call(2.0)
        self.assertEqual(after.exception.code(), grpc.StatusCode.UNAVAILABLE)
        # Then the drain and the exit with the lost device's own code.
        self.assertEqual(server.wait(timeout=60), 4)
        log = server.stdout.read()
        self.assertIn("its device can compute nothing any more", log)
        self.assertIn("draining, then exiting with code 4", log)


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_ca(name):
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
            "-keyout", path(f"{name}.key"), "-out", path(f"{name}.pem"))


def make_cert(name, ca, server=False):
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
            "-keyout", path(f"{name}.key"), "-out", path(f"{name}.csr"))
    extensions = path(f"{name}.ext")
    with open(extensions, "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n" if server else
                "extendedKeyUsage=clientAuth\n")
    openssl("x509", "-req", "-in", path(f"{name}.csr"), "-CA", path(f"{ca}.pem"),
            "-CAkey", path(f"{ca}.key"), "-CAcreateserial", "-days", "2",
            "-extfile", extensions, "-out", path(f"{name}.pem"))


def read(name):
    with open(path(name), "rb") as f:
        return f.read()


class Tls(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        make_ca("ca")
        make_ca("other_ca")
        make_cert("server", "ca", server=True)
        make_cert("client", "ca")
        make_cert("stranger", "other_ca")

    def serve(self, *extra, client="client"):
        """Starts a TLS server, waits until `client` sees it SERVING; returns its address and its
        log up to "listening on port"."""
        address = f"localhost:{free_port()}"
        server = start_server(ARGS.server, "--address", address, "--tls-cert", path("server.pem"),
                              "--tls-key", path("server.key"), *extra)
        self.addCleanup(server.stdout.close)
        self.addCleanup(lambda: (server.send_signal(signal.SIGTERM), server.wait(timeout=30)))
        wait_until_serving(grpc.secure_channel(address, self.credentials(client)), server)
        log = ""
        while "listening on port" not in log:
            line = server.stdout.readline()
            self.assertTrue(line, f"model_server's log ended early:\n{log}")
            log += line
        self.address = address
        return address, log

    def assert_self_check_on(self, log):
        """The self-check connected over (m)TLS at startup and keeps checking."""
        self.assertIn(f"self-check: a new connection to {self.address} every", log)
        self.assertNotIn("self-check off", log)

    def credentials(self, client=None):
        if client is None:
            return grpc.ssl_channel_credentials(root_certificates=read("ca.pem"))
        return grpc.ssl_channel_credentials(root_certificates=read("ca.pem"),
                                            private_key=read(f"{client}.key"),
                                            certificate_chain=read(f"{client}.pem"))

    def assert_refused(self, address, credentials=None):
        with self.assertRaises(grpc.RpcError) as refused:
            evaluate(address, timeout=5, credentials=credentials)
        self.assertEqual(refused.exception.code(), grpc.StatusCode.UNAVAILABLE)

    def test_tls_client_works_and_plaintext_fails(self):
        address, log = self.serve()
        self.assert_self_check_on(log)
        self.assertEqual(len(evaluate(address, credentials=self.credentials())), 50)
        self.assert_refused(address)

    def test_mtls_requires_a_certificate_from_the_ca(self):
        # The self-check presents the server's own certificate, which "ca" signed.
        address, log = self.serve("--tls-client-ca", path("ca.pem"))
        self.assert_self_check_on(log)
        self.assertEqual(len(evaluate(address, credentials=self.credentials("client"))), 50)
        self.assert_refused(address, self.credentials())
        self.assert_refused(address, self.credentials("stranger"))
        self.assert_refused(address)

    def test_mtls_whose_ca_refuses_the_server_certificate_turns_the_self_check_off(self):
        # Clients must come from "other_ca", which did not sign the server's certificate: the
        # self-check cannot connect, says so once, and the server serves on.
        address, log = self.serve("--tls-client-ca", path("other_ca.pem"), client="stranger")
        self.assertIn("self-check off: a new connection to", log)
        self.assertEqual(len(evaluate(address, credentials=self.credentials("stranger"))), 50)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    ARGS, rest = parser.parse_known_args()
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)
