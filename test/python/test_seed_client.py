#!/usr/bin/python3
"""The seed's Python client, unchanged, against the real model_server.

Run with Debian's interpreter (it sees python3-grpcio and python3-torch):
  /usr/bin/python3 test/python/test_seed_client.py --server build/server/model_server
"""
import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import grpc
import torch

from harness import free_port, generate_stubs, seed_payload, start_server, wait_until_serving

ARGS = None


# --- The seed's client code, as its users run it --------------------------------------------
class ExponentialBackoff:
    def __init__(self, *, init_backoff_ms, max_backoff_ms, multiplier):
        self.init_backoff = random.randint(0, init_backoff_ms)
        self.max_backoff = max_backoff_ms
        self.multiplier = multiplier

    def sleep(self, try_i):
        sleep_range = min(self.init_backoff * self.multiplier ** try_i, self.max_backoff)
        time.sleep(random.randint(0, sleep_range) / 1000)


class RetryOnRpcErrorClientInterceptor(grpc.UnaryUnaryClientInterceptor):
    def __init__(self, *, max_attempts, sleeping_policy, status_for_retry=None):
        self.max_attempts = max_attempts
        self.sleeping_policy = sleeping_policy
        self.status_for_retry = status_for_retry

    def intercept_unary_unary(self, continuation, client_call_details, request):
        for try_i in range(self.max_attempts):
            response = continuation(client_call_details, request)
            if isinstance(response, grpc.RpcError):
                if try_i == self.max_attempts - 1:
                    return response
                if self.status_for_retry and response.code() not in self.status_for_retry:
                    return response
                self.sleeping_policy.sleep(try_i)
            else:
                return response


def seed_stub(address):
    import model_interface_pb2_grpc
    interceptors = (
        RetryOnRpcErrorClientInterceptor(
            max_attempts=5,
            sleeping_policy=ExponentialBackoff(init_backoff_ms=1000, max_backoff_ms=30000,
                                               multiplier=2),
            status_for_retry=(grpc.StatusCode.UNAVAILABLE,),
        ),
    )
    return model_interface_pb2_grpc.ModelServiceStub(
        grpc.intercept_channel(grpc.insecure_channel(address), *interceptors))
# ----------------------------------------------------------------------------------------------


class SeedClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        generate_stubs(cls.tmp.name)
        cls.model_path = os.path.join(cls.tmp.name, "demo.pt")
        subprocess.run([ARGS.server, "--export-demo-model", cls.model_path], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cls.model = torch.jit.load(cls.model_path)
        cls.port = free_port()
        cls.address = f"127.0.0.1:{cls.port}"
        cls.server = start_server(ARGS.server, "--address", cls.address, "--model", cls.model_path)
        wait_until_serving(grpc.insecure_channel(cls.address), cls.server)

    @classmethod
    def tearDownClass(cls):
        if cls.server.poll() is None:
            cls.server.send_signal(signal.SIGTERM)
            cls.server.wait(timeout=30)
        cls.tmp.cleanup()

    def expected(self, rows, params):
        x = torch.tensor(rows, dtype=torch.float32)
        p = torch.tensor(params, dtype=torch.float32).expand(len(rows), len(params))
        return self.model(x, p).reshape(-1).tolist()

    def test_1_seed_client_gets_correct_predictions(self):
        import model_interface_pb2
        stub = seed_stub(self.address)
        rng = random.Random(7)
        for run in range(200):
            rows = [[rng.uniform(-3, 3) for _ in range(3)] for _ in range(50)]
            params = [rng.uniform(-1, 1) for _ in range(5)]
            if run == 0:
                params = [0, 1, 2, 3, 4]  # integers, as JSON clients often send them
            loc_inp_dict_encoded = json.dumps(seed_payload(rows, params)).encode("utf-8")
            query = model_interface_pb2.inRequest(inp_dict_bytes=loc_inp_dict_encoded)
            response = stub.EvaluateModel(query)
            prediction = json.loads(response.response_bytes.decode("utf-8"))["prediction"]
            self.assertEqual(list(prediction), ["y_1"])
            for got, want in zip(prediction["y_1"], self.expected(rows, params), strict=True):
                self.assertAlmostEqual(got, want, delta=1e-5)

    def test_2_health_check(self):
        from google.protobuf import empty_pb2
        reply = seed_stub(self.address).HealthCheck(empty_pb2.Empty())
        self.assertEqual(reply.status, "SERVING")

    def test_3_bad_payload_is_invalid_argument(self):
        import model_interface_pb2
        stub = seed_stub(self.address)
        with self.assertRaises(grpc.RpcError) as raised:
            stub.EvaluateModel(model_interface_pb2.inRequest(inp_dict_bytes=b'{"inputs": {}}'))
        self.assertEqual(raised.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("x_1", raised.exception.details())

    def test_4_sigterm_exits_cleanly(self):
        self.server.send_signal(signal.SIGTERM)
        self.assertEqual(self.server.wait(timeout=30), 0)
        log = self.server.stdout.read()
        self.assertIn("stopped:", log)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    ARGS, rest = parser.parse_known_args()
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)
