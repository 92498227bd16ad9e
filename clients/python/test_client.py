#!/usr/bin/python3
"""Tests model_client.py against the real model_server (no pytest: Debian's python3 only).

    /usr/bin/python3 clients/python/test_client.py --server build/server/model_server

Starts the server on free loopback ports, checks evaluate()'s values (against the demo model
computed here from its definition) and health results, the seed's retry policy (client first,
server ~2 s later: the call still succeeds, after retrying), that non-UNAVAILABLE errors are not
retried, that retries give up after max_attempts, and that SIGTERM stops the server with exit
status 0. Exits non-zero on the first failed check.
"""

import argparse
import math
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grpc  # noqa: E402

import model_client  # noqa: E402

SERVER = None  # path to model_server, from the command line


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(port):
    # stderr goes to a file, not a pipe nobody reads while the server runs (it could fill up).
    log = tempfile.TemporaryFile(mode="w+")
    process = subprocess.Popen([SERVER, "--address", f"127.0.0.1:{port}", "--log-level", "warn"],
                               stdout=subprocess.DEVNULL, stderr=log, text=True)
    process.log = log
    return process


def server_log(process):
    process.log.seek(0)
    return process.log.read()


def wait_until_serving(process, client, timeout_s=120):
    """Polls grpc.health.v1 until SERVING; raises early if the server exits first."""
    deadline = time.monotonic() + timeout_s
    while not client.wait_until_serving(timeout_s=1.0):
        if process.poll() is not None or time.monotonic() > deadline:
            if process.poll() is None:
                process.kill()
                process.wait()
            raise RuntimeError(f"model_server (exit {process.returncode}) not SERVING: "
                               f"{server_log(process)}")


def stop_server(process, test):
    """SIGTERM, then asserts a clean exit (status 0) within 30 s."""
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        test.fail("model_server did not exit within 30 s of SIGTERM")
    log = server_log(process)
    process.log.close()
    test.assertEqual(process.returncode, 0, f"model_server exited {process.returncode}: {log}")


def demo_weights(fan_in, fan_out, phase):
    """The demo model's fixed weights (handlers/torch/demo_model.cc):
    w[i][j] = sin((i * fan_out + j) * 0.7 + phase) / sqrt(fan_in)."""
    return [[math.sin((i * fan_out + j) * 0.7 + phase) / math.sqrt(fan_in)
             for j in range(fan_out)] for i in range(fan_in)]


DEMO_HIDDEN = 32  # model_server's --demo-hidden default
DEMO_LAYERS = [(demo_weights(3, DEMO_HIDDEN, 0.1), demo_weights(1, DEMO_HIDDEN, 0.2)[0]),
               (demo_weights(DEMO_HIDDEN, DEMO_HIDDEN, 0.3), demo_weights(1, DEMO_HIDDEN, 0.4)[0]),
               (demo_weights(DEMO_HIDDEN, 4, 0.5), demo_weights(1, 4, 0.6)[0])]


def demo_predictions(request):
    """y_1 for each row of a demo_request, computed here in float64 from the demo model's
    definition (three tanh layers; params[0] is the final bias, params[1:5] its weights):
    independent of the server, libtorch and the client's decoding."""
    params = request["analyticSettings"]["tunableParams"]["bias_weight_array"]
    inputs = request["inputs"]
    predictions = []
    for row in zip(inputs["x_1"], inputs["x_2"], inputs["x_3"]):
        h = list(row)
        for weights, bias in DEMO_LAYERS:
            h = [math.tanh(bias[j] + sum(h[i] * weights[i][j] for i in range(len(h))))
                 for j in range(len(bias))]
        predictions.append(params[0] + sum(h[k] * params[1 + k] for k in range(4)))
    return predictions


def assert_prediction(test, response, request):
    """`response` answers `request` with the demo model's values (float32 on the server)."""
    test.assertEqual(set(response), {"prediction"})
    test.assertEqual(set(response["prediction"]), {"y_1"})
    values = response["prediction"]["y_1"]
    expected = demo_predictions(request)
    test.assertIsInstance(values, list)
    test.assertEqual(len(values), len(expected))
    for value, want in zip(values, expected):
        test.assertIsInstance(value, (int, float))
        test.assertAlmostEqual(value, want, delta=1e-5, msg=f"y_1 {values} != {expected}")


class ServingTest(unittest.TestCase):
    """One server for the whole class; each test talks to it through fresh clients."""

    @classmethod
    def setUpClass(cls):
        cls.port = free_port()
        cls.server = start_server(cls.port)
        cls.client = model_client.ModelClient(f"127.0.0.1:{cls.port}", timeout_s=30)
        wait_until_serving(cls.server, cls.client)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        if cls.server.poll() is None:
            cls.server.kill()
            cls.server.wait()
        cls.server.log.close()

    def test_health(self):
        self.assertEqual(self.client.health_check(), "SERVING")
        self.assertTrue(self.client.is_serving(""))
        self.assertTrue(self.client.is_serving("modelservice"))
        self.assertFalse(self.client.is_serving("no-such-service"))

    def test_evaluate_values(self):
        for rows in (1, 7, 300):
            with self.subTest(rows=rows):
                request = model_client.demo_request(rows, seed=rows)
                assert_prediction(self, self.client.evaluate(request), request)

    def test_evaluate_is_deterministic_and_input_dependent(self):
        request = model_client.demo_request(5, seed=42)
        first = self.client.evaluate(request)["prediction"]["y_1"]
        self.assertEqual(self.client.evaluate(request)["prediction"]["y_1"], first)
        other = self.client.evaluate(model_client.demo_request(5, seed=43))["prediction"]["y_1"]
        self.assertNotEqual(other, first)

    def test_concurrent_calls(self):
        errors = []

        def worker(seed):
            try:
                for i in range(20):
                    request = model_client.demo_request(3, seed=seed * 100 + i)
                    assert_prediction(self, self.client.evaluate(request), request)
            except Exception as error:  # collected and asserted below
                errors.append(error)

        threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.assertEqual(errors, [])

    def test_invalid_request_is_not_retried(self):
        with model_client.ModelClient(f"127.0.0.1:{self.port}", timeout_s=30) as client:
            request = model_client.demo_request(2, seed=1)
            del request["inputs"]["x_2"]
            started = time.monotonic()
            with self.assertRaises(grpc.RpcError) as raised:
                client.evaluate(request)
            self.assertEqual(raised.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
            self.assertEqual(client.retry.attempts, 1)
            self.assertLess(time.monotonic() - started, 1.0)


class RetryTest(unittest.TestCase):

    def test_call_made_before_the_server_starts_succeeds(self):
        port = free_port()
        client = model_client.ModelClient(f"127.0.0.1:{port}", timeout_s=30)
        request = model_client.demo_request(4, seed=7)
        outcome = {}

        def call():
            started = time.monotonic()
            try:
                outcome["response"] = client.evaluate(request)
            except Exception as error:  # asserted below
                outcome["error"] = error
            outcome["elapsed_s"] = time.monotonic() - started

        caller = threading.Thread(target=call)
        caller.start()
        time.sleep(2.0)
        self.assertTrue(caller.is_alive(), "the call ended before the server started")
        server = start_server(port)
        try:
            caller.join(timeout=60)
            self.assertFalse(caller.is_alive(), "the call did not finish within 60 s")
            self.assertNotIn("error", outcome)
            assert_prediction(self, outcome["response"], request)
            self.assertGreaterEqual(outcome["elapsed_s"], 2.0)
            self.assertGreater(client.retry.attempts, 1)
            self.assertLessEqual(client.retry.attempts, 5)
        finally:
            client.close()
            stop_server(server, self)

    def test_gives_up_after_max_attempts(self):
        client = model_client.ModelClient(f"127.0.0.1:{free_port()}", max_attempts=3,
                                          init_backoff_ms=100, multiplier=2)
        started = time.monotonic()
        with self.assertRaises(grpc.RpcError) as raised:
            client.evaluate(model_client.demo_request(1))
        elapsed = time.monotonic() - started
        client.close()
        self.assertEqual(raised.exception.code(), grpc.StatusCode.UNAVAILABLE)
        self.assertEqual(client.retry.attempts, 3)
        self.assertGreaterEqual(elapsed, 0.3)  # slept 0.1 s + 0.2 s between the attempts

    def test_backoff_schedule_matches_the_seed(self):
        backoff = model_client.ExponentialBackoff(init_backoff_ms=1000, max_backoff_ms=30000, multiplier=2)
        self.assertEqual([backoff.delay_s(a) for a in range(6)], [1.0, 2.0, 4.0, 8.0, 16.0, 30.0])


class ShutdownTest(unittest.TestCase):

    def test_sigterm_exits_cleanly(self):
        port = free_port()
        server = start_server(port)
        with model_client.ModelClient(f"127.0.0.1:{port}", timeout_s=30) as client:
            wait_until_serving(server, client)
            request = model_client.demo_request(2)
            assert_prediction(self, client.evaluate(request), request)
        stop_server(server, self)


def main():
    global SERVER
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True, help="path to the model_server binary")
    args, rest = parser.parse_known_args()
    SERVER = os.path.abspath(args.server)
    if not os.access(SERVER, os.X_OK):
        parser.error(f"{SERVER} is not an executable")
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
    main()
