#!/usr/bin/python3
"""Triton's own Python client (tritonclient[grpc] from PyPI) against model_server's Open
Inference Protocol endpoint: health, metadata, inference (answers checked against PyTorch's own
forward of the demo model), and the errors it reports.

Runs in the project's venv with tritonclient (scripts/setup_oip_peers.sh); without it, exits 77
(ctest reports SKIPPED). Started with any python3, it re-executes itself in that venv:
  /usr/bin/python3 test/python/test_tritonclient.py --server build/server/model_server
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

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV_PYTHON = os.path.join(REPO, "build-oip-peers", "venv", "bin", "python")
SKIP = 77  # ctest SKIP_RETURN_CODE

ARGS = None
TMP = tempfile.TemporaryDirectory()

# The demo model's answers, from PyTorch itself (Debian's python3 has torch; the venv does not).
EXPECTED = r"""
import json, sys, torch
model = torch.jit.load(sys.argv[1])
x = torch.tensor(json.loads(sys.argv[2]))
params = torch.tensor(json.loads(sys.argv[3]))
with torch.no_grad():
    print(json.dumps(model(x, params).reshape(x.shape[0], -1).tolist()))
"""


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TritonClient(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        import tritonclient.grpc as triton
        cls.triton = triton
        cls.model_path = os.path.join(TMP.name, "demo.pt")
        subprocess.run([ARGS.server, "--export-demo-model", cls.model_path], check=True,
                       capture_output=True)
        cls.address = f"127.0.0.1:{free_port()}"
        cls.server = subprocess.Popen(
            [ARGS.server, "--address", cls.address, "--metrics-address", "", "--torch-threads",
             "1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        cls.client = triton.InferenceServerClient(url=cls.address)
        deadline = time.monotonic() + 60
        while True:
            try:
                if cls.client.is_server_ready():
                    break
            except triton.InferenceServerException:
                pass
            if cls.server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"model_server did not become ready:\n{cls.server.stdout.read()}")
            time.sleep(0.1)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        cls.server.send_signal(signal.SIGTERM)
        cls.server.wait(timeout=60)
        cls.server.stdout.close()

    def expected(self, x, params):
        result = subprocess.run(["/usr/bin/python3", "-c", EXPECTED, self.model_path,
                                 json.dumps(x.tolist()), json.dumps(params.tolist())],
                                check=True, capture_output=True, text=True)
        return json.loads(result.stdout)

    def test_health_and_metadata(self):
        self.assertTrue(self.client.is_server_live())
        self.assertTrue(self.client.is_server_ready())
        self.assertTrue(self.client.is_model_ready("default"))
        self.assertTrue(self.client.is_model_ready("default", model_version="1"))
        self.assertFalse(self.client.is_model_ready("nope"))
        self.assertEqual(self.client.get_server_metadata().name, "model_server")
        metadata = self.client.get_model_metadata("default", as_json=True)
        self.assertEqual(metadata["versions"], ["1"])
        self.assertEqual([(t["name"], t["datatype"], t["shape"]) for t in metadata["inputs"]],
                         [("x", "FP32", ["-1", "3"]), ("params", "FP32", ["-1", "5"])])
        self.assertEqual([(t["name"], t["datatype"], t["shape"]) for t in metadata["outputs"]],
                         [("y", "FP32", ["-1", "1"])])

    def test_infer_matches_pytorch(self):
        import numpy as np
        rng = np.random.default_rng(3)
        x = rng.normal(size=(20, 3)).astype(np.float32)
        params = rng.normal(size=(20, 5)).astype(np.float32)
        inputs = [self.triton.InferInput("x", list(x.shape), "FP32"),
                  self.triton.InferInput("params", list(params.shape), "FP32")]
        inputs[0].set_data_from_numpy(x)
        inputs[1].set_data_from_numpy(params)
        result = self.client.infer("default", inputs, request_id="t-1",
                                   outputs=[self.triton.InferRequestedOutput("y")])
        y = result.as_numpy("y")
        self.assertEqual(y.shape, (20, 1))
        self.assertEqual(result.get_response().model_version, "1")
        self.assertEqual(result.get_response().id, "t-1")
        expected = np.concatenate([np.asarray(self.expected(x[i:i + 1], params[i:i + 1]))
                                   for i in range(len(x))])
        np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)

    def test_errors_reach_the_client(self):
        import numpy as np
        x = self.triton.InferInput("x", [1, 3], "FP64")
        x.set_data_from_numpy(np.zeros((1, 3), dtype=np.float64))
        with self.assertRaises(self.triton.InferenceServerException) as refused:
            self.client.infer("default", [x])
        self.assertEqual(refused.exception.status(), "StatusCode.INVALID_ARGUMENT")
        self.assertIn('input "x" has datatype "FP64"', refused.exception.message())
        with self.assertRaises(self.triton.InferenceServerException) as unknown:
            self.client.get_model_metadata("nope")
        self.assertIn('unknown model "nope"', unknown.exception.message())


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    ARGS, rest = parser.parse_known_args()
    if os.path.realpath(sys.prefix) != os.path.realpath(os.path.dirname(os.path.dirname(VENV_PYTHON))):
        if not os.path.exists(VENV_PYTHON):
            print(f"SKIPPED: no {VENV_PYTHON}; scripts/setup_oip_peers.sh installs tritonclient")
            sys.exit(SKIP)
        os.execv(VENV_PYTHON, [VENV_PYTHON, os.path.abspath(__file__), *sys.argv[1:]])
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)
