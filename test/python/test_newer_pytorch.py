#!/usr/bin/python3
"""Models saved by current PyTorch (the pinned wheel of scripts/setup_torch2.sh), served by the
real model_server and checked through a real gRPC client against PyTorch's own forward.

  /usr/bin/python3 test/python/test_newer_pytorch.py --server build-torch2/build/server/model_server \
      --torch-python build-torch2/venv/bin/python3 --expect serve

--expect serve (a libtorch 2.x build): both models serve, answers within 1e-5.
--expect refuse (a libtorch 1.13 build): the demo-style model serves; the one using
scaled_dot_product_attention stops the server at startup with one error line naming the operator
and the fix. Both: a file format newer than the libtorch's is refused the same way.
Exits 77 (ctest: skipped) when the wheel's interpreter is absent.
"""
import argparse
import concurrent.futures
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import unittest
import zipfile

import grpc

from harness import free_port, generate_stubs, start_server, wait_until_serving

SKIPPED = 77
ARGS = None
CASES = None
TMP = tempfile.TemporaryDirectory()
generate_stubs(TMP.name)
import model_interface_pb2  # noqa: E402  (generated above)
import model_interface_pb2_grpc  # noqa: E402


def payload(model, request):
    """The seed's request for one case: the model's input and output names, its own params."""
    settings = {"modelParams": {"input_var_order": model["inputs"],
                                "output_var_order": model["outputs"]}}
    if request["params"] is not None:
        settings["tunableParams"] = {"bias_weight_array": request["params"]}
    columns = {name: [row[i] for row in request["rows"]] for i, name in enumerate(model["inputs"])}
    return json.dumps({"analyticSettings": settings, "inputs": columns}).encode()


class NewerPyTorchModels(unittest.TestCase):
    def serve(self, name):
        """Starts the server on the model, sends every case at once (so they batch) and checks
        each answer against the saved file's own forward in PyTorch."""
        model = CASES["models"][name]
        address = f"127.0.0.1:{free_port()}"
        server = start_server(ARGS.server, "--address", address, "--model", model["file"],
                              "--device", "cpu")
        self.addCleanup(server.stdout.close)  # cleanups run last first: stop, reap, close
        self.addCleanup(server.wait, 60)
        self.addCleanup(server.terminate)
        channel = grpc.insecure_channel(address)
        wait_until_serving(channel, server)
        stub = model_interface_pb2_grpc.ModelServiceStub(channel)

        def evaluate(request):
            reply = stub.EvaluateModel(
                model_interface_pb2.inRequest(inp_dict_bytes=payload(model, request)), timeout=60)
            return json.loads(reply.response_bytes)["prediction"]

        with concurrent.futures.ThreadPoolExecutor(len(model["requests"])) as pool:
            answers = list(pool.map(evaluate, model["requests"]))
        for request, answer in zip(model["requests"], answers):
            self.assertEqual(sorted(answer), sorted(model["outputs"]))
            for column, output in enumerate(model["outputs"]):
                served = answer[output]
                expected = [row[column] for row in request["expected"]]
                self.assertEqual(len(served), len(expected))
                for got, want in zip(served, expected):
                    self.assertTrue(math.isclose(got, want, rel_tol=1e-5, abs_tol=1e-5),
                                    f"{name} {output}: served {got}, PyTorch {want}")

    def test_demo_style_model_serves(self):
        self.serve("demo_style")

    def assert_refused(self, model, parts):
        """The server stops at startup on `model` with one error line holding every part."""
        started = time.monotonic()
        result = subprocess.run([ARGS.server, "--address", f"127.0.0.1:{free_port()}",
                                 "--metrics-address", "", "--device", "cpu", "--model", model],
                                capture_output=True, text=True, timeout=120)
        log = result.stdout + result.stderr
        self.assertEqual(result.returncode, 1, log)
        self.assertLess(time.monotonic() - started, 60)
        errors = [line for line in log.splitlines() if "[error]" in line]
        self.assertEqual(len(errors), 1, log)
        for part in parts:
            self.assertIn(part, errors[0])
        # One line, not TorchScript's source excerpt or a C++ stack trace.
        for trace in ["Traceback", "<--- HERE", "code/__torch__", "frame #"]:
            self.assertNotIn(trace, log)

    def test_attention_model(self):
        if ARGS.expect == "serve":
            self.serve("attention")
        else:
            self.assert_refused(CASES["models"]["attention"]["file"],
                                ["aten::scaled_dot_product_attention", "newer libtorch",
                                 "build model_server against libtorch 2.x", "docs/MODELS.md"])

    def test_newer_file_format_refused(self):
        """A file whose format version is newer than any libtorch's: refused with the fix, by
        both builds."""
        future = os.path.join(TMP.name, "future_format.pt")
        with zipfile.ZipFile(CASES["models"]["demo_style"]["file"]) as saved, \
                zipfile.ZipFile(future, "w", zipfile.ZIP_STORED) as rewritten:
            for entry in saved.infolist():
                data = saved.read(entry.filename)
                if entry.filename.count("/") == 1 and entry.filename.endswith("/version"):
                    data = b"99\n"
                rewritten.writestr(entry, data)
        self.assert_refused(future, ["with version 99", "newer libtorch", "build model_server",
                                     "docs/MODELS.md"])


def main():
    global ARGS, CASES
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    parser.add_argument("--torch-python", required=True)
    parser.add_argument("--expect", choices=["serve", "refuse"], required=True)
    ARGS, rest = parser.parse_known_args()
    if not os.access(ARGS.torch_python, os.X_OK):
        print(f"SKIPPED: no current PyTorch at {ARGS.torch_python}; scripts/setup_torch2.sh "
              "installs it")
        sys.exit(SKIPPED)
    models = os.path.join(os.path.dirname(os.path.abspath(__file__)), "newer_models.py")
    subprocess.run([ARGS.torch_python, models, "--out", TMP.name], check=True)
    with open(os.path.join(TMP.name, "cases.json")) as f:
        CASES = json.load(f)
    print(f"models saved by PyTorch {CASES['torch']}")
    if int(CASES["torch"].split(".")[0]) < 2:
        sys.exit(f"{ARGS.torch_python} runs PyTorch {CASES['torch']}, not 2.x")
    unittest.main(argv=[sys.argv[0], *rest], verbosity=2)


if __name__ == "__main__":
    main()
