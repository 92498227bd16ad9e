#!/usr/bin/python3
"""AOTInductor packages (.pt2: torch.export + aoti_compile_and_package) served by the real
model_server, checked through real gRPC clients against the eager modules' answers.

  /usr/bin/python3 test/python/test_aoti.py --server build-torch2/build/server/model_server \\
      --torch-python build-torch2/venv/bin/python3 --expect serve

--expect serve (a libtorch 2.x build): test/python/aoti_models.py exports the test models once
with the wheel's PyTorch through scripts/export_model.py (the demo-style (x, params) MLP, a small
CNN, a model of an FP32 and an INT64 input, a second MLP, a static-batch package), then:
batches of 1, 7 and 64 rows formed from concurrent single-row requests over the seed protocol and
the Open Inference Protocol (the batch sizes read back from ModelStatistics) answer as the eager
modules do (1e-5; integers exactly) with no config file; a config's larger max_batch_size is
lowered to the package's and a larger request still answers, in pieces; a static-batch package, a
corrupt one, declared inputs that differ from the package's, and an unwritable TMPDIR are refused
at startup with one clear line; a .pt2 hot swap under load fails no call; a TorchScript and a .pt2
version of the same model serve side by side alike; instances share one loaded package; the
unpacked packages leave TMPDIR empty once the server exits.
--expect refuse (a libtorch 1.13 build): a .pt2 stops the server at startup with one line naming
the build that serves it. Needs no PyTorch.
Exits 77 (ctest: skipped) for --expect serve when the wheel's interpreter is absent.
"""
import argparse
import concurrent.futures
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import zipfile

import grpc
import numpy as np

from harness import free_port, generate_stubs, seed_payload, wait_until_serving

SKIPPED = 77
ARGS = None
CASES = None
TMP = tempfile.TemporaryDirectory()
generate_stubs(TMP.name)
import grpc_predict_v2_pb2 as oip  # noqa: E402  (generated above)
import grpc_predict_v2_pb2_grpc as oip_grpc  # noqa: E402
import model_interface_pb2  # noqa: E402
import model_interface_pb2_grpc  # noqa: E402
import triton_extensions_pb2 as triton  # noqa: E402

NUMPY_TYPES = {"FP32": "<f4", "FP64": "<f8", "INT64": "<i8", "INT32": "<i4", "BOOL": "?"}
# A batch closes when full (64 rows, the packages' maximum) or 3 s after its first request:
# single-row requests sent at once (asynchronous calls) form one batch of their number.
QUEUE_DELAY_US = "3000000"


def models_path(name):
    return os.path.join(TMP.name, "models", name)


def tensors(model, kind):
    """{name: array} of a case's inputs or outputs, as aoti_models.py wrote them."""
    found = {}
    for name, spec in CASES["models"][model][kind].items():
        with open(models_path(spec["file"]), "rb") as f:
            found[name] = np.frombuffer(f.read(), dtype=NUMPY_TYPES[spec["type"]]).reshape(
                spec["shape"])
    return found


def error_lines(log):
    return [line for line in log.splitlines() if "[error]" in line]


class Server:
    """model_server with its own TMPDIR, log captured."""

    def __init__(self, *args, tmpdir=None, env=None):
        self.tmpdir = tmpdir or tempfile.mkdtemp(dir=TMP.name)
        self.address = f"127.0.0.1:{free_port()}"
        self.process = subprocess.Popen(
            [ARGS.server, "--address", self.address, "--metrics-address", "", "--device", "cpu",
             *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=dict(os.environ, TMPDIR=self.tmpdir, **(env or {})))
        channel = grpc.insecure_channel(self.address)
        try:
            wait_until_serving(channel, self.process, timeout_s=120)
        except Exception:
            self.stop()
            raise
        self.oip = oip_grpc.GRPCInferenceServiceStub(channel)
        self.seed = model_interface_pb2_grpc.ModelServiceStub(channel)

    def unpacked(self):
        return sorted(glob.glob(os.path.join(self.tmpdir, "model_server-pt2-*")))

    def stop(self):
        """Stops the server (SIGTERM); returns its log."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        finally:
            log = self.process.stdout.read()
            self.process.stdout.close()
        return log

    def infer(self, model, inputs, version=""):
        """OIP ModelInfer; returns (model_version, {output: array})."""
        return self.parse_infer(self.infer_async(model, inputs, version).result())

    def infer_async(self, model, inputs, version=""):
        """OIP ModelInfer, sent; returns the call's future."""
        request = oip.ModelInferRequest(model_name=model, model_version=version)
        for name, array in inputs.items():
            wire = {np.dtype("<f4"): "FP32", np.dtype("<i8"): "INT64"}[array.dtype]
            request.inputs.add(name=name, datatype=wire, shape=list(array.shape))
            request.raw_input_contents.append(np.ascontiguousarray(array).tobytes())
        return self.oip.ModelInfer.future(request, timeout=60)

    @staticmethod
    def parse_infer(response):
        outputs = {}
        for output, raw in zip(response.outputs, response.raw_output_contents):
            outputs[output.name] = np.frombuffer(raw, dtype=NUMPY_TYPES[output.datatype]).reshape(
                list(output.shape))
        return response.model_version, outputs

    def evaluate(self, rows, params):
        """The seed protocol's EvaluateModel on the served MLP: y_1 per row."""
        return self.parse_evaluate(self.evaluate_async(rows, params).result())

    def evaluate_async(self, rows, params):
        payload = seed_payload(rows, params)
        return self.seed.EvaluateModel.future(
            model_interface_pb2.inRequest(inp_dict_bytes=json.dumps(payload).encode()),
            timeout=60)

    @staticmethod
    def parse_evaluate(reply):
        return json.loads(reply.response_bytes)["prediction"]["y_1"]

    def executions(self, model):
        """execution_count (forward passes) from ModelStatistics."""
        response = self.oip.ModelStatistics(triton.ModelStatisticsRequest(name=model), timeout=30)
        return sum(stats.execution_count for stats in response.model_stats)

    def batches(self, model):
        """{batch size: executions} from ModelStatistics."""
        response = self.oip.ModelStatistics(triton.ModelStatisticsRequest(name=model), timeout=30)
        counts = {}
        for stats in response.model_stats:
            for batch in stats.batch_stats:
                counts[batch.batch_size] = counts.get(batch.batch_size, 0) + \
                    batch.compute_infer.count
        return counts


class AotiTestCase(unittest.TestCase):
    def assert_close(self, served, expected, what):
        self.assertEqual(served.shape, expected.shape, what)
        if expected.dtype.kind == "f":
            np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-5, err_msg=what)
        else:
            np.testing.assert_array_equal(served, expected, err_msg=what)

    def in_batches(self, server, model, send, parse):
        """Sends send(row) for rows 0..n-1 at once (each returns a call's future), n = 1, 7 and
        64, each as one batch of n (checked in ModelStatistics); returns {n: [parse(reply) in
        row order]}."""
        answers = {}
        for rows in (1, 7, 64):
            before = server.batches(model)
            calls = [send(row) for row in range(rows)]
            answers[rows] = [parse(call.result()) for call in calls]
            after = server.batches(model)
            formed = {size: count - before.get(size, 0) for size, count in after.items()
                      if count != before.get(size, 0)}
            self.assertEqual(formed, {rows: 1}, f"{model}: {rows} concurrent single-row "
                                                "requests did not run as one batch")
        return answers

    def assert_refused(self, args, parts, tmpdir=None):
        """The server stops at startup with exit code 1 and one error line holding every part;
        returns that line."""
        env = dict(os.environ, TMPDIR=tmpdir or tempfile.mkdtemp(dir=TMP.name))
        result = subprocess.run([ARGS.server, "--address", f"127.0.0.1:{free_port()}",
                                 "--metrics-address", "", "--device", "cpu", *args],
                                capture_output=True, text=True, timeout=120, env=env)
        log = result.stdout + result.stderr
        self.assertEqual(result.returncode, 1, log)
        errors = error_lines(log)
        self.assertEqual(len(errors), 1, log)
        for part in parts:
            self.assertIn(part, errors[0])
        for trace in ["Traceback", "frame #", "Exception raised from"]:
            self.assertNotIn(trace, log)
        if os.path.isdir(env["TMPDIR"]):
            self.assertEqual(os.listdir(env["TMPDIR"]), [], "unpacked package left behind")
        return errors[0]


class Serve(AotiTestCase):
    def test_seed_mlp_without_config(self):
        """The demo-style MLP's .pt2 and no config: the seed protocol with per-request
        parameters (defaults from its metadata), and OIP, in batches of 1, 7 and 64."""
        inputs, expected = tensors("mlp", "inputs"), tensors("mlp", "outputs")["y"]
        server = Server("--model", f"mlp={models_path('mlp.pt2')}",
                        "--max-queue-delay-us", QUEUE_DELAY_US)
        try:
            self.assertEqual(len(server.unpacked()), 1)
            x, params = inputs["x"], inputs["params"]
            seed = self.in_batches(
                server, "mlp",
                lambda row: server.evaluate_async([x[row].tolist()], params[row].tolist()),
                lambda reply: server.parse_evaluate(reply)[0])
            for rows, answers in seed.items():
                self.assert_close(np.asarray(answers, dtype=np.float32), expected[:rows, 0],
                                  f"seed protocol, batch of {rows}")
            served = self.in_batches(
                server, "mlp",
                lambda row: server.infer_async(
                    "mlp", {"x": x[row:row + 1], "params": params[row:row + 1]}),
                lambda reply: server.parse_infer(reply)[1]["y"][0])
            for rows, answers in served.items():
                self.assert_close(np.stack(answers), expected[:rows], f"OIP, batch of {rows}")
            # Metadata made the config: its inputs, outputs, batch limit and seed defaults.
            config = server.oip.ModelConfig(triton.ModelConfigRequest(name="mlp")).config
            self.assertEqual(config.platform, "torch_aoti")
            self.assertEqual(config.max_batch_size, 64)
            self.assertEqual([(t.name, list(t.dims)) for t in config.input],
                             [("x", [3]), ("params", [5])])
            self.assertEqual([(t.name, list(t.dims)) for t in config.output], [("y", [1])])
            # Without tunableParams: the default_params of the module, from the metadata.
            payload = seed_payload([x[0].tolist()], [0.0])
            del payload["analyticSettings"]["tunableParams"]
            reply = server.seed.EvaluateModel(model_interface_pb2.inRequest(
                inp_dict_bytes=json.dumps(payload).encode()), timeout=60)
            defaults = np.asarray([[0.1, 0.2, 0.3, 0.4, 0.5]], dtype=np.float32)
            _, with_defaults = server.infer("mlp", {"x": x[0:1], "params": defaults})
            self.assert_close(np.asarray(json.loads(reply.response_bytes)["prediction"]["y_1"],
                                         dtype=np.float32), with_defaults["y"][:, 0],
                              "default parameters")
        finally:
            log = server.stop()
        self.assertIn("AOTInductor package", log)
        self.assertEqual(server.unpacked(), [], "unpacked package left after exit")

    def test_cnn_and_two_inputs_from_a_repository_without_config(self):
        repository = tempfile.mkdtemp(dir=TMP.name)
        for name in ("cnn", "two_input"):
            os.makedirs(os.path.join(repository, name, "1"))
            shutil.copy(models_path(f"{name}.pt2"), os.path.join(repository, name, "1",
                                                                 "model.pt2"))
        server = Server("--model-repository", repository, "--max-queue-delay-us", QUEUE_DELAY_US)
        try:
            self.assertEqual(len(server.unpacked()), 2)
            for name in ("cnn", "two_input"):
                inputs, expected = tensors(name, "inputs"), tensors(name, "outputs")
                served = self.in_batches(
                    server, name,
                    lambda row: server.infer_async(
                        name, {k: v[row:row + 1] for k, v in inputs.items()}),
                    lambda reply: server.parse_infer(reply)[1])
                for rows, answers in served.items():
                    for output, want in expected.items():
                        got = np.concatenate([answer[output] for answer in answers])
                        self.assert_close(got, want[:rows], f"{name} {output}, batch of {rows}")
            metadata = server.oip.ModelMetadata(oip.ModelMetadataRequest(name="two_input"))
            self.assertEqual([(t.name, t.datatype, list(t.shape)) for t in metadata.inputs],
                             [("features", "FP32", [-1, 4]), ("ids", "INT64", [-1, 2])])
            self.assertEqual([(t.name, t.datatype, list(t.shape)) for t in metadata.outputs],
                             [("scores", "FP32", [-1, 3]), ("total", "INT64", [-1])])
        finally:
            server.stop()
        self.assertEqual(server.unpacked(), [])

    def test_package_without_model_server_metadata(self):
        """The CNN exported without scripts/export_model.py: inputs and the batch range from
        the package's compiled input checks (INPUT__0; batches of 16 to 64, so smaller ones run
        padded), outputs from a probe run. The package's own checks are on
        (AOTI_RUNTIME_CHECK_INPUTS=1): it refuses any batch outside its range, dtype or shape
        that differs, so these answers show that none reached it."""
        repository = tempfile.mkdtemp(dir=TMP.name)
        os.makedirs(os.path.join(repository, "plain", "1"))
        shutil.copy(models_path("cnn_plain.pt2"),
                    os.path.join(repository, "plain", "1", "model.pt2"))
        server = Server("--model-repository", repository, "--max-queue-delay-us", QUEUE_DELAY_US,
                        env={"AOTI_RUNTIME_CHECK_INPUTS": "1"})
        try:
            image = tensors("cnn", "inputs")["image"]
            expected = tensors("cnn", "outputs")["OUTPUT__0"]
            metadata = server.oip.ModelMetadata(oip.ModelMetadataRequest(name="plain"))
            self.assertEqual([(t.name, t.datatype, list(t.shape)) for t in metadata.inputs],
                             [("INPUT__0", "FP32", [-1, 3, 32, 32])])
            self.assertEqual([(t.name, t.datatype, list(t.shape)) for t in metadata.outputs],
                             [("OUTPUT__0", "FP32", [-1, 10])])
            served = self.in_batches(
                server, "plain",
                lambda row: server.infer_async("plain", {"INPUT__0": image[row:row + 1]}),
                lambda reply: server.parse_infer(reply)[1]["OUTPUT__0"][0])
            for rows, answers in served.items():
                self.assert_close(np.stack(answers), expected[:rows], f"batch of {rows}")
        finally:
            log = server.stop()
        self.assertIn("smaller batches run padded to", log)

    def test_runtime_input_checks_narrow_the_metadata_range(self):
        """AOTI_RUNTIME_CHECK_INPUTS=1 makes a package refuse what its compiled checks do
        (batches below 16 for this CNN, though scripts/export_model.py checked batch 1): the
        server then pads small batches to 16."""
        image = tensors("cnn", "inputs")["image"]
        expected = tensors("cnn", "outputs")["OUTPUT__0"]
        server = Server("--model", f"cnn={models_path('cnn.pt2')}",
                        env={"AOTI_RUNTIME_CHECK_INPUTS": "1"})
        try:
            for rows in (1, 7, 64):
                _, outputs = server.infer("cnn", {"image": image[:rows]})
                self.assert_close(outputs["OUTPUT__0"], expected[:rows], f"{rows} rows")
        finally:
            log = server.stop()
        self.assertIn("smaller batches run padded to 16 rows", log)

    def test_config_max_batch_size_beyond_the_package(self):
        """max_batch_size 128 over a package of at most 64: batches stop at 64; a request of
        100 rows runs in two pieces and answers."""
        repository = tempfile.mkdtemp(dir=TMP.name)
        os.makedirs(os.path.join(repository, "cnn", "1"))
        shutil.copy(models_path("cnn.pt2"), os.path.join(repository, "cnn", "1", "model.pt2"))
        with open(os.path.join(repository, "cnn", "config.pbtxt"), "w") as f:
            f.write('platform: "torch_aoti"\nmax_batch_size: 128\n'
                    'input [{ name: "image" data_type: TYPE_FP32 dims: [3, 32, 32] }]\n'
                    'output [{ name: "OUTPUT__0" data_type: TYPE_FP32 dims: [10] }]\n')
        server = Server("--model-repository", repository)
        try:
            image = tensors("cnn", "inputs")["image"]
            expected = tensors("cnn", "outputs")["OUTPUT__0"]
            rows = np.arange(100) % 64
            _, outputs = server.infer("cnn", {"image": image[rows]})
            self.assert_close(outputs["OUTPUT__0"], expected[rows], "100 rows in pieces")
            # Two forward passes (64 + 36 rows): the handler refuses a batch above the
            # package's 64 rows, so the answer shows that none reached it.
            self.assertEqual(server.executions("cnn"), 2)
        finally:
            log = server.stop()
        self.assertIn("accepts batches of up to 64 rows", log)

    def test_torchscript_and_pt2_side_by_side(self):
        """The same MLP as TorchScript and as .pt2 in one server: the same signature, the same
        answers."""
        inputs, expected = tensors("mlp", "inputs"), tensors("mlp", "outputs")["y"]
        server = Server("--model", f"ts={models_path('mlp.pt')}", "--model",
                        f"pt2={models_path('mlp.pt2')}")
        try:
            shapes = {}
            answers = {}
            for name in ("ts", "pt2"):
                metadata = server.oip.ModelMetadata(oip.ModelMetadataRequest(name=name))
                shapes[name] = ([(t.name, t.datatype, list(t.shape)) for t in metadata.inputs],
                                [(t.name, t.datatype, list(t.shape)) for t in metadata.outputs])
                _, outputs = server.infer(name, inputs)
                answers[name] = outputs["y"]
                self.assert_close(answers[name], expected, name)
            self.assertEqual(shapes["ts"], shapes["pt2"])
            np.testing.assert_allclose(answers["ts"], answers["pt2"], rtol=1e-5, atol=1e-5)
        finally:
            server.stop()

    def test_instances_share_one_package(self):
        inputs, expected = tensors("mlp", "inputs"), tensors("mlp", "outputs")["y"]
        server = Server("--model", f"mlp={models_path('mlp.pt2')}", "--instances", "2")
        try:
            self.assertEqual(len(server.unpacked()), 1, "two instances unpacked two copies")
            with concurrent.futures.ThreadPoolExecutor(16) as pool:
                answers = list(pool.map(lambda row: server.infer(
                    "mlp", {k: v[row:row + 1] for k, v in inputs.items()})[1]["y"][0],
                    range(64)))
            self.assert_close(np.stack(answers), expected, "two instances")
        finally:
            log = server.stop()
        self.assertIn("(2 runners,", log)

    def test_hot_swap_under_load(self):
        """Replacing the .pt2 under load (SIGHUP): no call fails, answers switch from the first
        package's to the second's, the first one's unpacked files go."""
        inputs = tensors("mlp", "inputs")
        first, second = tensors("mlp", "outputs")["y"], tensors("mlp_v2", "outputs")["y"]
        self.assertFalse(np.allclose(first, second, atol=1e-3), "the versions must differ")
        served = os.path.join(tempfile.mkdtemp(dir=TMP.name), "model.pt2")
        shutil.copy(models_path("mlp.pt2"), served)
        server = Server("--model", f"mlp={served}")
        stop = threading.Event()
        failures, versions, lock = [], set(), threading.Lock()

        def client(offset):
            row = offset
            while not stop.is_set():
                row = (row + 1) % 64
                try:
                    version, outputs = server.infer(
                        "mlp", {k: v[row:row + 1] for k, v in inputs.items()})
                    want = {"1": first, "2": second}.get(version)
                    if want is None or not np.allclose(outputs["y"][0], want[row], rtol=1e-5,
                                                       atol=1e-5):
                        raise AssertionError(f"version {version} answered {outputs['y'][0]}")
                    with lock:
                        versions.add(version)
                except Exception as error:  # noqa: BLE001  (every failure counts)
                    with lock:
                        failures.append(repr(error))

        try:
            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                clients = [pool.submit(client, offset) for offset in range(0, 64, 16)]
                time.sleep(1)
                shutil.copy(models_path("mlp_v2.pt2"), served + ".tmp")
                os.replace(served + ".tmp", served)
                server.process.send_signal(signal.SIGHUP)
                deadline = time.monotonic() + 60
                while "2" not in versions and time.monotonic() < deadline:
                    time.sleep(0.1)
                time.sleep(1)  # load keeps coming on the new version
                stop.set()
                for future in clients:
                    future.result()
            self.assertEqual(failures, [])
            self.assertEqual(versions, {"1", "2"})
            deadline = time.monotonic() + 30
            while len(server.unpacked()) > 1 and time.monotonic() < deadline:
                time.sleep(0.1)
            self.assertEqual(len(server.unpacked()), 1, "the first version's files stayed")
        finally:
            log = server.stop()
        self.assertIn("model mlp: version 2", log)
        self.assertEqual(server.unpacked(), [])

    def test_static_batch_refused(self):
        self.assert_refused(["--model", f"s={models_path('static.pt2')}"],
                            ['model "s"', "static batch of 1 row", "torch.export.Dim(\"batch\"",
                             "scripts/export_model.py", "max_batch_size: 0"])

    def test_corrupt_packages_refused(self):
        truncated = os.path.join(TMP.name, "truncated.pt2")
        with open(models_path("mlp.pt2"), "rb") as whole, open(truncated, "wb") as half:
            data = whole.read()
            half.write(data[:len(data) // 2])
        self.assert_refused(["--model", f"t={truncated}"],
                            [f"cannot read AOTInductor package {truncated}"])
        # A well-formed archive whose compiled library is garbage.
        broken = os.path.join(TMP.name, "broken.pt2")
        with zipfile.ZipFile(models_path("mlp.pt2")) as good, \
                zipfile.ZipFile(broken, "w", zipfile.ZIP_STORED) as bad:
            for entry in good.infolist():
                data = good.read(entry.filename)
                if entry.filename.endswith(".so"):
                    data = b"not a shared library" * 100
                bad.writestr(entry, data)
        self.assert_refused(["--model", f"b={broken}"],
                            [f"cannot load AOTInductor package {broken}"])
        # A TorchScript file named .pt2.
        renamed = os.path.join(TMP.name, "torchscript.pt2")
        shutil.copy(models_path("mlp.pt"), renamed)
        self.assert_refused(["--model", f"r={renamed}"],
                            ["holds no compiled model", "TorchScript"])

    def test_declared_inputs_that_differ_refused(self):
        repository = tempfile.mkdtemp(dir=TMP.name)
        os.makedirs(os.path.join(repository, "cnn", "1"))
        shutil.copy(models_path("cnn.pt2"), os.path.join(repository, "cnn", "1", "model.pt2"))
        with open(os.path.join(repository, "cnn", "config.pbtxt"), "w") as f:
            f.write('platform: "torch_aoti"\nmax_batch_size: 8\n'
                    'input [{ name: "image" data_type: TYPE_FP32 dims: [3, 16, 16] }]\n'
                    'output [{ name: "OUTPUT__0" data_type: TYPE_FP32 dims: [10] }]\n')
        self.assert_refused(["--model-repository", repository],
                            ['model "cnn"', 'input 0 "image": [n, 3, 16, 16] where the package '
                             'takes [n, 3, 32, 32]'])

    def test_unwritable_tmpdir_refused(self):
        not_a_folder = os.path.join(TMP.name, "a-file")
        with open(not_a_folder, "w") as f:
            f.write("x")
        self.assert_refused(["--model", f"m={models_path('mlp.pt2')}"],
                            [f"cannot create a directory in {not_a_folder} (TMPDIR)",
                             "Not a directory", "point TMPDIR at a writable directory"],
                            tmpdir=not_a_folder)


class Refuse(AotiTestCase):
    def test_pt2_refused_naming_the_build(self):
        package = os.path.join(TMP.name, "model.pt2")
        with open(package, "wb") as f:
            f.write(b"PK")
        self.assert_refused(["--model", f"m={package}"],
                            [f'model "m" ({package}): it is an AOTInductor package',
                             "libtorch 2.x build", "scripts/build_torch2.sh"])


def main():
    global ARGS, CASES
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    parser.add_argument("--torch-python", required=True)
    parser.add_argument("--expect", choices=["serve", "refuse"], required=True)
    parser.add_argument("--reuse-models", metavar="DIR",
                        help="(development) use the packages aoti_models.py wrote into DIR "
                             "before, exporting them there first if it has none")
    ARGS, rest = parser.parse_known_args()
    if ARGS.expect == "refuse":
        unittest.main(argv=[sys.argv[0], *(rest or ["Refuse"])], verbosity=2)
    if not os.access(ARGS.torch_python, os.X_OK):
        print(f"SKIPPED: no current PyTorch at {ARGS.torch_python}; scripts/setup_torch2.sh "
              "installs it")
        sys.exit(SKIPPED)
    out = os.path.join(TMP.name, "models")
    if ARGS.reuse_models:
        os.makedirs(ARGS.reuse_models, exist_ok=True)
        os.symlink(os.path.abspath(ARGS.reuse_models), out)
    else:
        os.makedirs(out)
    started = time.monotonic()
    models = os.path.join(os.path.dirname(os.path.abspath(__file__)), "aoti_models.py")
    if not os.path.exists(os.path.join(out, "cases.json")):
        subprocess.run([ARGS.torch_python, "-W", "ignore", models, "--out", out], check=True)
    with open(os.path.join(out, "cases.json")) as f:
        CASES = json.load(f)
    print(f"packages exported by PyTorch {CASES['torch']} (CPU ISA {CASES['isa']}) in "
          f"{time.monotonic() - started:.0f} s: {CASES['compile_seconds']}", flush=True)
    unittest.main(argv=[sys.argv[0], *(rest or ["Serve"])], verbosity=2)


if __name__ == "__main__":
    main()
