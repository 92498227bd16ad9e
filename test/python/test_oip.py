#!/usr/bin/python3
"""The Open Inference Protocol through the real model_server, with stubs generated from the
repository's protos/grpc_predict_v2.proto: metadata, ModelInfer (raw and typed) against the demo
model run in PyTorch, bad requests, and a mixed load of ModelService and OIP calls sharing
batches (seen in /metrics).

  /usr/bin/python3 test/python/test_oip.py --server build/server/model_server
"""
import argparse
import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import unittest

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

PARAMS = [0.1, 0.2, 0.3, 0.4, 0.5]


def infer_request(x, params=None, raw=True, model="default"):
    """A ModelInferRequest for rows x ([n, 3]) and params ([n, 5], [1, 5] or None)."""
    request = oip.ModelInferRequest(model_name=model)
    for name, values in (("x", x), ("params", params)):
        if values is None:
            continue
        values = np.asarray(values, dtype=np.float32)
        tensor = request.inputs.add(name=name, datatype="FP32", shape=list(values.shape))
        if raw:
            request.raw_input_contents.append(values.astype("<f4").tobytes())
        else:
            tensor.contents.fp32_contents.extend(values.flatten().tolist())
    return request


def output_y(response):
    """y of a ModelInferResponse as an array, from whichever form it came in."""
    (y,) = [output for output in response.outputs if output.name == "y"]
    assert y.datatype == "FP32"
    if response.raw_output_contents:
        values = np.frombuffer(response.raw_output_contents[0], dtype="<f4")
    else:
        values = np.array(y.contents.fp32_contents, dtype=np.float32)
    return values.reshape(list(y.shape))


class Oip(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.model_path = os.path.join(TMP.name, "demo.pt")
        subprocess.run([ARGS.server, "--export-demo-model", cls.model_path], check=True,
                       capture_output=True)
        cls.model = torch.jit.load(cls.model_path)
        cls.address = f"127.0.0.1:{free_port()}"
        cls.metrics = f"127.0.0.1:{free_port()}"
        # A queue delay long enough that the mixed load's calls find each other in batches.
        cls.server = start_server(ARGS.server, "--address", cls.address, "--torch-threads", "1",
                                  "--max-queue-delay-us", "20000", metrics_address=cls.metrics)
        channel = grpc.insecure_channel(cls.address)
        wait_until_serving(channel, cls.server)
        cls.oip = oip_grpc.GRPCInferenceServiceStub(channel)
        cls.seed = model_interface_pb2_grpc.ModelServiceStub(channel)

    @classmethod
    def tearDownClass(cls):
        cls.server.send_signal(signal.SIGTERM)
        cls.server.wait(timeout=60)
        cls.server.stdout.close()

    def expected(self, x, params):
        x = torch.tensor(np.asarray(x, dtype=np.float32))
        params = torch.tensor(np.asarray(params, dtype=np.float32)).expand(x.shape[0], 5)
        with torch.no_grad():
            return self.model(x, params).reshape(x.shape[0], -1).numpy()

    def test_health_and_metadata(self):
        self.assertTrue(self.oip.ServerLive(oip.ServerLiveRequest()).live)
        self.assertTrue(self.oip.ServerReady(oip.ServerReadyRequest()).ready)
        self.assertTrue(self.oip.ModelReady(oip.ModelReadyRequest(name="default")).ready)
        self.assertFalse(self.oip.ModelReady(oip.ModelReadyRequest(name="nope")).ready)
        self.assertEqual(self.oip.ServerMetadata(oip.ServerMetadataRequest()).name,
                         "model_server")
        metadata = self.oip.ModelMetadata(oip.ModelMetadataRequest(name="default"))
        self.assertEqual(metadata.name, "default")
        self.assertEqual(list(metadata.versions), ["1"])
        self.assertEqual([(t.name, t.datatype, list(t.shape)) for t in metadata.inputs],
                         [("x", "FP32", [-1, 3]), ("params", "FP32", [-1, 5])])
        self.assertEqual([(t.name, t.datatype, list(t.shape)) for t in metadata.outputs],
                         [("y", "FP32", [-1, 1])])

    def test_infer_matches_pytorch_in_both_forms(self):
        rng = np.random.default_rng(7)
        x = rng.normal(size=(37, 3)).astype(np.float32)
        params = rng.normal(size=(37, 5)).astype(np.float32)  # a vector per row
        expected = np.concatenate([self.expected(x[i:i + 1], params[i:i + 1])
                                   for i in range(len(x))])
        for raw in (True, False):
            request = infer_request(x, params, raw=raw)
            request.id = "r-1"
            if not raw:
                request.parameters["binary_data_output"].bool_param = False
            response = self.oip.ModelInfer(request, timeout=30)
            self.assertEqual((response.model_name, response.model_version, response.id),
                             ("default", "1", "r-1"))
            self.assertEqual(len(response.raw_output_contents), 1 if raw else 0)
            np.testing.assert_allclose(output_y(response), expected, rtol=1e-5, atol=1e-5)

    def test_broadcast_and_default_params_match_the_seed_protocol(self):
        x = [[0.5, -1.0, 2.0], [1.0, 2.0, 3.0]]
        reply = self.seed.EvaluateModel(model_interface_pb2.inRequest(
            inp_dict_bytes=json.dumps(seed_payload(x, PARAMS)).encode()), timeout=30)
        seed_y = json.loads(reply.response_bytes)["prediction"]["y_1"]
        for params in ([PARAMS], None):  # [1, 5] broadcast; absent: the model's defaults
            response = self.oip.ModelInfer(infer_request(x, params), timeout=30)
            np.testing.assert_allclose(output_y(response)[:, 0], seed_y, rtol=1e-6)
        np.testing.assert_allclose(seed_y, self.expected(x, [PARAMS])[:, 0], rtol=1e-5)

    def test_bad_requests(self):
        wrong_type = infer_request([[1, 2, 3]], [PARAMS])
        wrong_type.inputs[0].datatype = "FP64"
        short_raw = infer_request([[1, 2, 3]], [PARAMS])
        short_raw.raw_input_contents[0] = short_raw.raw_input_contents[0][:-4]
        cases = [
            (infer_request([[1, 2, 3]], model="nope"), 'unknown model "nope"'),
            (wrong_type, 'input "x" has datatype "FP64"'),
            (short_raw, 'raw_input_contents of input "x" has 8 bytes'),
            (infer_request([[1, 2]]), 'input "x" has shape [1, 2]; the model takes "x" FP32 [n, 3]'),
            (infer_request([[1, 2, 3]] * 2, [PARAMS] * 3), 'input "params" has shape [3, 5]'),
        ]
        for request, message in cases:
            with self.assertRaises(grpc.RpcError) as refused:
                self.oip.ModelInfer(request, timeout=30)
            self.assertEqual(refused.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
            self.assertIn(message, refused.exception.details())

    def test_mixed_load_shares_batches(self):
        """4 seed clients and 4 OIP clients, one call in flight each: a batch of more than 4
        requests must hold both kinds."""
        text = scrape(self.metrics)
        bucket = 'model_server_batch_requests_bucket'
        before_small = sample(text, bucket, 'model="default",le="4"')
        before_all = sample(text, bucket, 'model="default",le="+Inf"')
        x = [[0.1, 0.2, 0.3]] * 3
        seed_request = model_interface_pb2.inRequest(
            inp_dict_bytes=json.dumps(seed_payload(x, PARAMS)).encode())
        oip_request = infer_request(x, [PARAMS])
        expected = self.expected(x, [PARAMS])[:, 0]
        stop = threading.Event()
        errors = []

        def seed_client():
            while not stop.is_set():
                reply = self.seed.EvaluateModel(seed_request, timeout=30)
                y = json.loads(reply.response_bytes)["prediction"]["y_1"]
                if not np.allclose(y, expected, rtol=1e-5):
                    errors.append(y)

        def oip_client():
            while not stop.is_set():
                y = output_y(self.oip.ModelInfer(oip_request, timeout=30))[:, 0]
                if not np.allclose(y, expected, rtol=1e-5):
                    errors.append(y)

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(client) for client in [seed_client] * 4 + [oip_client] * 4]
            stop.wait(3)
            stop.set()
            for future in futures:
                future.result()
        self.assertEqual(errors, [])
        text = scrape(self.metrics)
        batches = sample(text, bucket, 'model="default",le="+Inf"') - before_all
        mixed = batches - (sample(text, bucket, 'model="default",le="4"') - before_small)
        self.assertGreater(batches, 0)
        # Batches of more than 4 requests: seed and OIP calls computed together.
        self.assertGreater(mixed, 0, text)
        self.assertGreater(sample(text, "model_server_requests_total",
                                  'method="ModelInfer",code="OK"'), 0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    ARGS, rest = parser.parse_known_args()
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)
