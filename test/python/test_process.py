#!/usr/bin/python3
"""model_server as a process: startup faults, graceful drain, a second signal, TLS and mTLS.

  /usr/bin/python3 test/python/test_process.py --server build/server/model_server
"""
import argparse
import concurrent.futures
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
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


def evaluate(address, rows=50, timeout=60, credentials=None):
    channel = (grpc.secure_channel(address, credentials) if credentials
               else grpc.insecure_channel(address))
    stub = model_interface_pb2_grpc.ModelServiceStub(channel)
    payload = json.dumps(seed_payload([[0.1, 0.2, 0.3]] * rows, [0, 1, 1, 1, 1])).encode()
    reply = stub.EvaluateModel(model_interface_pb2.inRequest(inp_dict_bytes=payload),
                               timeout=timeout)
    return json.loads(reply.response_bytes)["prediction"]["y_1"]


class StartupFaults(unittest.TestCase):
    def assert_refused(self, args, message):
        started = time.monotonic()
        result = subprocess.run([ARGS.server, *args], capture_output=True, text=True, timeout=120)
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
        wait_until_serving(grpc.insecure_channel(address), server)
        return server, address

    def test_sigterm_finishes_every_accepted_call(self):
        server, address = self.start()
        calls = 12
        with concurrent.futures.ThreadPoolExecutor(calls) as pool:
            futures = [pool.submit(evaluate, address) for _ in range(calls)]
            time.sleep(0.5)  # all accepted; one batch of 50 rows at a time, so most are queued
            in_flight = sum(not future.done() for future in futures)
            server.send_signal(signal.SIGTERM)
            self.assertGreater(in_flight, 1)
            time.sleep(0.3)
            # Draining: the standard health says NOT_SERVING or the server refuses new calls.
            health = health_pb2_grpc.HealthStub(grpc.insecure_channel(address))
            try:
                status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status
                self.assertEqual(status, health_pb2.HealthCheckResponse.NOT_SERVING)
            except grpc.RpcError as error:
                self.assertEqual(error.code(), grpc.StatusCode.UNAVAILABLE)
            with self.assertRaises(grpc.RpcError) as refused:
                evaluate(address, timeout=5)
            self.assertEqual(refused.exception.code(), grpc.StatusCode.UNAVAILABLE)
            results = [future.result() for future in futures]
        self.assertTrue(all(len(result) == 50 for result in results))
        self.assertEqual(server.wait(timeout=60), 0)
        log = server.stdout.read()
        self.assertIn(f"stopped: {calls} requests", log)

    def test_second_signal_exits_at_once(self):
        server, address = self.start("--drain-timeout", "120")
        # 16 calls of one 50-row batch each: seconds of draining left when the second signal comes.
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            futures = [pool.submit(evaluate, address) for _ in range(16)]
            time.sleep(0.5)
            in_flight = sum(not future.done() for future in futures)
            server.send_signal(signal.SIGTERM)
            self.assertGreater(in_flight, 1)
            time.sleep(0.2)
            started = time.monotonic()
            server.send_signal(signal.SIGTERM)
            self.assertEqual(server.wait(timeout=10), 1)
            self.assertLess(time.monotonic() - started, 5)
            for future in futures:
                try:
                    future.result()
                except grpc.RpcError:
                    pass  # calls cut off by the forced exit may fail; that is the point


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
