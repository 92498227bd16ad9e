#!/usr/bin/python3
"""Several models in one model_server, through the real process: --model NAME=PATH routing
(ModelService serves the first model, the Open Inference Protocol routes by model_name), the
unnamed model as "default", a bad model file as a startup error naming it.

  /usr/bin/python3 test/python/test_models.py --server build/server/model_server
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import unittest
from typing import List

import grpc
import numpy as np
import torch

from harness import (free_port, generate_stubs, sample, scrape, seed_payload, start_server,
                     wait_until_serving)

ARGS = None
TMP = tempfile.TemporaryDirectory()
generate_stubs(TMP.name)
import grpc_predict_v2_pb2 as oip  # noqa: E402  (generated above)
import grpc_predict_v2_pb2_grpc as oip_grpc  # noqa: E402
import model_interface_pb2  # noqa: E402
import model_interface_pb2_grpc  # noqa: E402

X = [[1.0, 2.0, 3.0], [0.5, 0.5, 0.5]]


class Versioned(torch.nn.Module):
    """y = p0 * (x_1 + x_2 + x_3) + p1 + offset: each version answers with its own offset."""
    input_var_order: List[str]
    default_params: List[float]

    def __init__(self, offset: float, ballast: int = 0, inputs: int = 3):
        super().__init__()
        self.input_var_order = [f"x_{i + 1}" for i in range(inputs)]
        self.default_params = [1.0, 0.0]
        self.register_buffer("offset", torch.tensor([offset]))
        self.register_buffer("ballast", torch.zeros(max(ballast, 1)))

    def forward(self, x, params):
        return (params[:, 0:1] * x.sum(dim=1, keepdim=True) + params[:, 1:2] + self.offset
                + self.ballast[0:1])


def path(name):
    return os.path.join(TMP.name, name)


def save(module, name):
    """Saves beside, then renames over `name`: a reader never sees half a file."""
    target = path(name)
    torch.jit.script(module).save(target + ".tmp")
    os.replace(target + ".tmp", target)
    return target


def answers(offset, rows=X):
    return [sum(row) + offset for row in rows]


class Client:
    def __init__(self, address):
        channel = grpc.insecure_channel(address)
        wait_for = time.monotonic() + 60
        while True:
            try:
                grpc.channel_ready_future(channel).result(timeout=1)
                break
            except grpc.FutureTimeoutError:
                if time.monotonic() > wait_for:
                    raise
        self.seed = model_interface_pb2_grpc.ModelServiceStub(channel)
        self.oip = oip_grpc.GRPCInferenceServiceStub(channel)

    def evaluate(self, rows=X):
        payload = json.dumps(seed_payload(rows, [1.0, 0.0])).encode()
        reply = self.seed.EvaluateModel(model_interface_pb2.inRequest(inp_dict_bytes=payload),
                                        timeout=30)
        return json.loads(reply.response_bytes)["prediction"]["y_1"]

    def infer(self, model, rows=X):
        x = np.asarray(rows, dtype="<f4")
        request = oip.ModelInferRequest(model_name=model)
        request.inputs.add(name="x", datatype="FP32", shape=list(x.shape))
        request.raw_input_contents.append(x.tobytes())
        response = self.oip.ModelInfer(request, timeout=30)
        y = np.frombuffer(response.raw_output_contents[0], dtype="<f4")
        return response.model_version, y.tolist()


class Server:
    def __init__(self, *args):
        self.address = f"127.0.0.1:{free_port()}"
        self.metrics = f"127.0.0.1:{free_port()}"
        self.process = start_server(ARGS.server, "--address", self.address, "--torch-threads",
                                    "1", *args, metrics_address=self.metrics)
        wait_until_serving(grpc.insecure_channel(self.address), self.process)
        self.client = Client(self.address)

    def metric(self, name, labels):
        return sample(scrape(self.metrics), name, labels)

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=60)
        log = self.process.stdout.read()
        self.process.stdout.close()
        return code, log


class SeveralModels(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        save(Versioned(100.0), "a.pt")
        save(Versioned(200.0), "b.pt")

    def test_routing_metadata_and_metrics(self):
        server = Server("--model", f"a={path('a.pt')}", "--model", f"b={path('b.pt')}")
        try:
            client = server.client
            self.assertEqual(client.evaluate(), answers(100))  # ModelService: the first model
            self.assertEqual(client.infer("a"), ("1", answers(100)))
            self.assertEqual(client.infer("b"), ("1", answers(200)))
            for name in ("a", "b"):
                metadata = client.oip.ModelMetadata(oip.ModelMetadataRequest(name=name))
                self.assertEqual((metadata.name, list(metadata.versions)), (name, ["1"]))
                self.assertTrue(client.oip.ModelReady(oip.ModelReadyRequest(name=name)).ready)
            with self.assertRaises(grpc.RpcError) as unknown:
                client.infer("default")
            self.assertEqual(unknown.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
            self.assertIn('unknown model "default"; this server serves "a", "b"',
                          unknown.exception.details())
            # Each model has its own batcher: its batches are counted under its own label.
            text = scrape(server.metrics)
            self.assertEqual(sample(text, "model_server_batch_requests_sum", 'model="a"'), 2)
            self.assertEqual(sample(text, "model_server_batch_requests_sum", 'model="b"'), 1)
            self.assertEqual(sample(text, "model_server_model_version", 'model="b"'), 1)
        finally:
            self.assertEqual(server.stop()[0], 0)

    def test_unnamed_model_is_default(self):
        for args, env in ((["--model", path("a.pt")], {}), ([], {"MODEL_LOC": path("b.pt")})):
            os.environ.update(env)
            try:
                server = Server(*args)
            finally:
                for key in env:
                    del os.environ[key]
            try:
                offset = 100 if args else 200
                self.assertEqual(server.client.infer("default"), ("1", answers(offset)))
                self.assertEqual(server.client.evaluate(), answers(offset))
            finally:
                server.stop()

    def assert_refused(self, args, message, exit_code=1):
        result = subprocess.run([ARGS.server, "--metrics-address", "", "--address",
                                 f"127.0.0.1:{free_port()}", *args],
                                capture_output=True, text=True, timeout=120)
        output = result.stdout + result.stderr
        self.assertEqual(result.returncode, exit_code, output)
        self.assertIn(message, output)
        return output

    def test_a_bad_model_file_is_a_startup_error_naming_it(self):
        output = self.assert_refused(
            ["--model", f"a={path('a.pt')}", "--model", f"b={path('missing.pt')}"],
            f'model "b" ({path("missing.pt")}): model file')
        self.assertEqual(len([line for line in output.splitlines() if "[error]" in line]), 1)
        self.assertNotIn("listening", output)

    def test_a_name_given_twice_is_a_usage_error(self):
        self.assert_refused(["--model", f"a={path('a.pt')}", "--model", f"a={path('b.pt')}"],
                            'model name "a" is given twice', exit_code=2)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    ARGS, rest = parser.parse_known_args()
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)
