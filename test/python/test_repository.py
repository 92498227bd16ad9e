#!/usr/bin/python3
"""Model repositories served end to end, driven by Triton's own Python client (tritonclient[grpc]
from PyPI): the repository index, load and unload in explicit mode, poll mode, readiness per
version under each version policy, the settled configuration, inference statistics, inference
over several data types and ranks, and the errors a broken model gives at startup and later.

Every repository is built at test time: TorchScript models from test/python/torch_models.py (run
with Debian's python3, which has torch), the seed's demo model from model_server itself. Answers
are compared with PyTorch's own forward of the same file (in that python3, one request at a time)
to 1e-5, exactly for integer and boolean outputs.

Runs in the project's venv with tritonclient (scripts/setup_oip_peers.sh); without it, exits 77
(ctest reports SKIPPED). Started with any python3, it re-executes itself in that venv:
  /usr/bin/python3 test/python/test_repository.py --server build/server/model_server
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
VENV_PYTHON = os.path.join(REPO, "build-oip-peers", "venv", "bin", "python")
TORCH_PYTHON = "/usr/bin/python3"  # Debian's, with torch 1.13
TORCH_MODELS = os.path.join(HERE, "torch_models.py")
SKIP = 77  # ctest SKIP_RETURN_CODE

ARGS = None
TMP = None  # a tempfile.TemporaryDirectory for the whole run


# ----- repositories ---------------------------------------------------------------------------

def write(path, content):
    """Writes `content` (str or bytes) to `path` by rename, so that a poll never reads half a
    file."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temporary = os.path.join(TMP.name, f".partial-{os.getpid()}-{threading.get_ident()}")
    with open(temporary, "wb" if isinstance(content, bytes) else "w") as out:
        out.write(content)
    os.replace(temporary, path)


def make_models(jobs):
    """Writes TorchScript models: `jobs` is a list of (kind, path) (kinds: torch_models.MODELS);
    one torch process for all of them."""
    staged = []
    for kind, path in jobs:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        staged.append(os.path.join(TMP.name, f"staged-{len(staged)}-{kind}.pt"))
    subprocess.run([TORCH_PYTHON, TORCH_MODELS, "make",
                    *[f"{kind}={stage}" for (kind, _), stage in zip(jobs, staged)]],
                   check=True, capture_output=True)
    for (_, path), stage in zip(jobs, staged):
        os.replace(stage, path)  # whole files only, for poll mode


def demo_model(path):
    """The seed's demo model, as model_server exports it."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    subprocess.run([ARGS.server, "--export-demo-model", path], check=True, capture_output=True)


def build_repository(root, models):
    """Makes a repository under `root`: `models` maps each model name to (config text or None,
    {version: kind}); a kind of None leaves the version folder without a model file, a bytes
    kind is written as the file, "demo" is the seed's demo model."""
    jobs = []
    for name, (config, versions) in models.items():
        os.makedirs(os.path.join(root, name), exist_ok=True)
        if config is not None:
            write(os.path.join(root, name, "config.pbtxt"), config)
        for version, kind in versions.items():
            folder = os.path.join(root, name, str(version))
            os.makedirs(folder, exist_ok=True)
            path = os.path.join(folder, "model.pt")
            if kind is None:
                continue
            if isinstance(kind, bytes):
                write(path, kind)
            elif kind == "demo":
                demo_model(path)
            else:
                jobs.append((kind, path))
    if jobs:
        make_models(jobs)
    return root


# ----- PyTorch's answers ----------------------------------------------------------------------

def torch_answers(calls):
    """PyTorch's outputs for each (model file, [(argument name, array), ...]) of `calls`, one
    forward per call in Debian's python3: a list of {output name: array}."""
    import ml_dtypes
    import numpy as np
    work = tempfile.mkdtemp(dir=TMP.name)
    jobs = []
    for i, (model, arguments) in enumerate(calls):
        arrays = {}
        order = []
        for name, array in arguments:
            if array.dtype == ml_dtypes.bfloat16:
                name += ".bf16"
                array = array.view(np.uint16)
            arrays[name] = array
            order.append(name)
        inputs = os.path.join(work, f"in-{i}.npz")
        np.savez(inputs, __order__=np.array(order), **arrays)
        jobs.append([model, inputs, os.path.join(work, f"out-{i}.npz")])
    with open(os.path.join(work, "jobs.json"), "w") as out:
        json.dump(jobs, out)
    subprocess.run([TORCH_PYTHON, TORCH_MODELS, "run", os.path.join(work, "jobs.json")],
                   check=True, capture_output=True)
    answers = []
    for _, _, outputs in jobs:
        with np.load(outputs) as saved:
            answer = {}
            for name in saved.files:
                if name.endswith(".bf16"):
                    answer[name[:-5]] = saved[name].view(ml_dtypes.bfloat16)
                else:
                    answer[name] = saved[name]
            answers.append(answer)
    shutil.rmtree(work)
    return answers


# ----- the server -----------------------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """model_server on a repository, its log in a file."""

    def __init__(self, repository, *flags):
        import tritonclient.grpc as triton
        self.address = f"127.0.0.1:{free_port()}"
        self.log_path = os.path.join(TMP.name, f"server-{self.address.replace(':', '-')}.log")
        self.log_file = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [ARGS.server, "--model-repository", repository, "--address", self.address,
             "--metrics-address", "", "--torch-threads", "1", *flags],
            stdout=self.log_file, stderr=subprocess.STDOUT)
        self.client = triton.InferenceServerClient(url=self.address)

    def log(self):
        with open(self.log_path) as log:
            return log.read()

    def wait_serving(self, timeout_s=120):
        import tritonclient.grpc as triton
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if self.client.is_server_live():
                    return self
            except triton.InferenceServerException:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = self.log()
                self.stop()
                raise RuntimeError(f"model_server did not start:\n{log}")
            time.sleep(0.1)

    def wait_exit(self, timeout_s=120):
        """The exit code of a server expected to stop by itself."""
        try:
            return self.process.wait(timeout=timeout_s)
        finally:
            self.stop()

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=60)
        self.client.close()
        self.log_file.close()


def wait_for(condition, what, timeout_s=60):
    """Polls `condition` until it returns a true value, which it returns; fails naming `what`."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def inputs_of(arrays):
    """tritonclient InferInputs for {name: array}, in order."""
    import tritonclient.grpc as triton
    import tritonclient.utils as utils
    inputs = []
    for name, array in arrays.items():
        tensor = triton.InferInput(name, list(array.shape), utils.np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def outputs_of(result):
    """{output name: array} of an InferResult."""
    return {output.name: result.as_numpy(output.name) for output in result.get_response().outputs}


def infer(client, model, arrays, version=""):
    return outputs_of(client.infer(model, inputs_of(arrays), model_version=version))


def infer_concurrently(client, model, requests, timeout_s=120):
    """Sends every request of `requests` ({name: array} each) at once with async_infer, then
    waits for all: their outputs, in order (an InferenceServerException for a failed one)."""
    import tritonclient.grpc as triton
    prepared = [inputs_of(arrays) for arrays in requests]
    results = [None] * len(requests)
    finished = threading.Semaphore(0)

    def done(index, result, error):
        results[index] = error if error is not None else outputs_of(result)
        finished.release()

    for index, inputs in enumerate(prepared):
        # tritonclient calls back with keyword arguments result= and error=.
        client.async_infer(model, inputs,
                           lambda result, error, i=index: done(i, result, error))
    for _ in requests:
        if not finished.acquire(timeout=timeout_s):
            raise AssertionError(f"{model}: calls did not finish within {timeout_s} s")
    for result in results:
        if isinstance(result, triton.InferenceServerException):
            raise AssertionError(f"{model}: a call failed: {result.status()} {result.message()}")
    return results


def statistics(client, model, version="1"):
    """The model version's statistics, as numbers: inference_count, execution_count, the count of
    each duration, last_inference, and {batch size: executions}."""
    stats = client.get_inference_statistics(model, version, as_json=True)["model_stats"]
    assert len(stats) == 1, stats
    stats = stats[0]
    numbers = {"inference_count": int(stats.get("inference_count", 0)),
               "execution_count": int(stats.get("execution_count", 0)),
               "last_inference": int(stats.get("last_inference", 0))}
    for kind in ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output"):
        numbers[kind] = int(stats.get("inference_stats", {}).get(kind, {}).get("count", 0))
    numbers["batches"] = {int(batch["batch_size"]): int(batch["compute_infer"].get("count", 0))
                          for batch in stats.get("batch_stats", [])}
    return numbers


def index(client):
    """The repository index as {(name, version): (state, reason)} (version "" for a model
    without one)."""
    entries = client.get_model_repository_index(as_json=True).get("models", [])
    return {(entry["name"], entry.get("version", "")): (entry.get("state", ""),
                                                       entry.get("reason", ""))
            for entry in entries}


def assert_close(test, got, expected, what):
    """Floating-point outputs to 1e-5; integer and boolean ones exactly (same dtype and shape
    either way)."""
    import numpy as np
    test.assertEqual(got.shape, expected.shape, what)
    test.assertEqual(got.dtype, expected.dtype, what)
    if got.dtype.kind in "iub":
        np.testing.assert_array_equal(got, expected, err_msg=what)
    else:
        np.testing.assert_allclose(got.astype(np.float64), expected.astype(np.float64),
                                   rtol=1e-5, atol=1e-5, err_msg=what)


# ----- configurations -------------------------------------------------------------------------

CNN_CONFIG = """
platform: "pytorch_libtorch"
max_batch_size: 64
input [ { name: "INPUT__0" data_type: TYPE_FP32 dims: [ 3, 32, 32 ] } ]
output [ { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 10 ] } ]
# Long enough that the concurrent calls of a test always meet in the queue.
dynamic_batching { max_queue_delay_microseconds: 200000 }
"""

DTYPES_CONFIG = """
max_batch_size: 8
input [
  { name: "a" data_type: TYPE_FP64 dims: [ 2, 3 ] },
  { name: "b" data_type: TYPE_INT32 dims: [ 5 ] },
  { name: "c" data_type: TYPE_INT16 dims: [ 2 ] },
  { name: "d" data_type: TYPE_INT8 dims: [ 2 ] },
  { name: "e" data_type: TYPE_UINT8 dims: [ 2, 2, 2 ] },
  { name: "f" data_type: TYPE_BOOL dims: [ 4 ] },
  { name: "g" data_type: TYPE_FP16 dims: [ 3 ] },
  { name: "h" data_type: TYPE_BF16 dims: [ 3 ] },
  { name: "s" data_type: TYPE_INT64 dims: [ 1 ] reshape: { shape: [ ] } }
]
output [
  { name: "OUTPUT__0" data_type: TYPE_FP64 dims: [ 2, 3 ] },
  { name: "OUTPUT__1" data_type: TYPE_INT32 dims: [ 5 ] },
  { name: "OUTPUT__2" data_type: TYPE_INT16 dims: [ 2 ] },
  { name: "OUTPUT__3" data_type: TYPE_INT8 dims: [ 2 ] },
  { name: "OUTPUT__4" data_type: TYPE_UINT8 dims: [ 2, 2, 2 ] },
  { name: "OUTPUT__5" data_type: TYPE_BOOL dims: [ 4 ] },
  { name: "OUTPUT__6" data_type: TYPE_FP16 dims: [ 3 ] },
  { name: "OUTPUT__7" data_type: TYPE_BF16 dims: [ 3 ] },
  { name: "OUTPUT__8" data_type: TYPE_INT64 dims: [ 1 ] reshape: { shape: [ ] } }
]
"""

UNBATCHED_CONFIG = """
max_batch_size: 0
input [
  { name: "input0" data_type: TYPE_FP32 dims: [ 4, -1 ] },
  { name: "input1" data_type: TYPE_INT64 dims: [ 1 ] reshape: { shape: [ ] } }
]
output [
  { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 4, -1 ] },
  { name: "OUTPUT__1" data_type: TYPE_INT64 dims: [ 1 ] reshape: { shape: [ ] } }
]
"""

DICT_CONFIG = """
max_batch_size: 4
input [ { name: "x" data_type: TYPE_FP32 dims: [ 3 ] } ]
output [
  { name: "doubled" data_type: TYPE_FP32 dims: [ 3 ] },
  { name: "sum" data_type: TYPE_FP32 dims: [ 1 ] }
]
"""

# Outputs listed out of order: they bind by their __<index>.
LIST_CONFIG = """
max_batch_size: 4
input [
  { name: "INPUT__0" data_type: TYPE_FP32 dims: [ 2 ] },
  { name: "INPUT__1" data_type: TYPE_FP32 dims: [ 2 ] }
]
output [
  { name: "OUTPUT__1" data_type: TYPE_FP32 dims: [ 2 ] },
  { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 2 ] }
]
"""


def scale_config(policy="", max_batch_size=8, extra=""):
    return f"""
max_batch_size: {max_batch_size}
input [ {{ name: "x" data_type: TYPE_FP32 dims: [ 2 ] }} ]
output [ {{ name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 2 ] }} ]
{policy}
{extra}
"""


SLOW_CONFIG = """
max_batch_size: 16
input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 4 ] } ]
"""

# The broken models of the failure tests, each with (a part of) the error it must give.
MISSING_FILE_CONFIG = scale_config('platform: "pytorch_libtorch"\n'
                                   "version_policy: { specific: { versions: [ 1, 2 ] } }")
MISMATCH_CONFIG = """
max_batch_size: 8
input [
  { name: "features" data_type: TYPE_FP32 dims: [ 5 ] },
  { name: "ids" data_type: TYPE_INT64 dims: [ 3 ] }
]
output [
  { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 8 ] },
  { name: "OUTPUT__1" data_type: TYPE_INT64 dims: [ 3 ] }
]
"""
BROKEN = {
    # name: (config, versions, what the error must say)
    "bad_syntax": ("max_batch_size: 8\nmax_bach_size: 4\n", {1: "scale1"},
                   r'bad_syntax/config\.pbtxt:2:\d+: .*max_bach_size'),
    "no_file": (MISSING_FILE_CONFIG, {1: "scale1", 2: None},
                r'version 2: the model file \S*no_file/2/model\.pt is missing'),
    "mismatch": (MISMATCH_CONFIG, {1: "mixed"},
                 r'checking forward on 1 rows failed: .*mat1 and mat2 shapes cannot be multiplied'),
    "corrupt": (None, {1: b"not a TorchScript file"}, r'corrupt/1/model\.pt'),
    "unsupported": (scale_config(extra="sequence_batching { }"), {1: "scale1"},
                    r'config field sequence_batching is not supported'),
}


def broken_models():
    return {name: (config, versions) for name, (config, versions, _) in BROKEN.items()}


def x2(rows, seed):
    import numpy as np
    return {"x": np.random.default_rng(seed).normal(size=(rows, 2)).astype(np.float32)}


# ----- serving every kind of model ------------------------------------------------------------

class ServesModels(unittest.TestCase):
    """Every model of a repository served at once (--model-control-mode none)."""

    @classmethod
    def setUpClass(cls):
        cls.root = build_repository(os.path.join(TMP.name, "serves"), {
            "cnn": (CNN_CONFIG, {1: "cnn"}),
            "mixed": (None, {1: "mixed"}),  # no config.pbtxt: completed from the file
            "demo": (None, {1: "demo"}),  # the seed's demo model, as exported
            "dtypes": (DTYPES_CONFIG, {1: "dtypes"}),
            "unbatched": (UNBATCHED_CONFIG, {1: "unbatched"}),
            "dict": (DICT_CONFIG, {1: "dict"}),
            "list": (LIST_CONFIG, {1: "list"}),
            "counted": (LIST_CONFIG, {1: "list"}),  # only test_statistics_are_exact calls it
        })
        # Models without a config.pbtxt batch with the server's settings.
        cls.server = Server(cls.root, "--max-batch-rows", "64", "--max-queue-delay-us",
                            "100000").wait_serving()
        cls.client = cls.server.client

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def model_file(self, name):
        return os.path.join(self.root, name, "1", "model.pt")

    def check_answers(self, model, requests, results, names=None):
        """Each result against PyTorch's forward of that request alone; `names` maps the
        server's output names to the forward's (OUTPUT__<i>) where they differ."""
        expected = torch_answers([(self.model_file(model), list(request.items()))
                                  for request in requests])
        for i, (got, want) in enumerate(zip(results, expected)):
            for name, forward_name in (names or {}).items():
                got[forward_name] = got.pop(name)
            self.assertEqual(sorted(got), sorted(want), f"{model} request {i}: outputs")
            for name in want:
                assert_close(self, got[name], want[name], f"{model} request {i} {name}")

    def test_index_lists_every_model_ready(self):
        self.assertEqual(index(self.client), {
            (name, "1"): ("READY", "") for name in
            ("cnn", "counted", "demo", "dict", "dtypes", "list", "mixed", "unbatched")})
        self.assertTrue(self.client.is_server_ready())
        self.assertEqual(sorted(self.client.get_server_metadata(as_json=True)["extensions"]),
                         ["model_configuration", "model_repository", "statistics"])

    def test_config_of_a_model_without_config_pbtxt_is_completed_from_its_file(self):
        config = self.client.get_model_config("mixed", as_json=True)["config"]
        self.assertEqual(config["name"], "mixed")
        self.assertEqual(config["platform"], "pytorch_libtorch")
        self.assertEqual(config["backend"], "pytorch")
        self.assertEqual(int(config["max_batch_size"]), 64)
        tensors = lambda key: [(t["name"], t["data_type"], [int(d) for d in t["dims"]])
                               for t in config[key]]
        # forward(features, ids): features reach a Linear(4, 8), ids an Embedding.
        self.assertEqual(tensors("input"), [("features", "TYPE_FP32", [4]),
                                            ("ids", "TYPE_INT64", [-1])])
        self.assertEqual(tensors("output"), [("OUTPUT__0", "TYPE_FP32", [8]),
                                             ("OUTPUT__1", "TYPE_INT64", [-1])])
        self.assertEqual(config["version_policy"], {"latest": {"num_versions": 1}})
        self.assertEqual(int(config["dynamic_batching"]["max_queue_delay_microseconds"]), 100000)
        metadata = self.client.get_model_metadata("mixed", as_json=True)
        self.assertEqual([(t["name"], t["datatype"], t["shape"]) for t in metadata["inputs"]],
                         [("features", "FP32", ["-1", "4"]), ("ids", "INT64", ["-1", "-1"])])
        # The demo model describes itself for the seed protocol.
        demo = self.client.get_model_config("demo", as_json=True)["config"]
        self.assertEqual([(t["name"], t["data_type"], t["dims"]) for t in demo["input"]],
                         [("x", "TYPE_FP32", ["3"]), ("params", "TYPE_FP32", ["5"])])
        self.assertEqual([(t["name"], t["dims"]) for t in demo["output"]], [("y", ["1"])])

    def test_config_written_is_the_config_reported(self):
        config = self.client.get_model_config("cnn", as_json=True)["config"]
        self.assertEqual(config["name"], "cnn")
        self.assertEqual(int(config["max_batch_size"]), 64)
        self.assertEqual([(t["name"], t["data_type"], t["dims"]) for t in config["input"]],
                         [("INPUT__0", "TYPE_FP32", ["3", "32", "32"])])
        self.assertEqual([(t["name"], t["data_type"], t["dims"]) for t in config["output"]],
                         [("OUTPUT__0", "TYPE_FP32", ["10"])])
        self.assertEqual(int(config["dynamic_batching"]["max_queue_delay_microseconds"]), 200000)
        metadata = self.client.get_model_metadata("cnn", as_json=True)
        self.assertEqual(metadata["inputs"], [{"name": "INPUT__0", "datatype": "FP32",
                                               "shape": ["-1", "3", "32", "32"]}])

    def test_every_data_type_and_rank(self):
        import ml_dtypes
        import numpy as np
        rng = np.random.default_rng(7)
        requests = []
        for rows in (1, 3):
            requests.append({
                "a": rng.normal(size=(rows, 2, 3)),
                "b": rng.integers(-1000, 1000, size=(rows, 5), dtype=np.int32),
                "c": rng.integers(-300, 300, size=(rows, 2), dtype=np.int16),
                "d": rng.integers(-100, 100, size=(rows, 2), dtype=np.int8),
                "e": rng.integers(0, 255, size=(rows, 2, 2, 2), dtype=np.uint8),
                "f": rng.integers(0, 2, size=(rows, 4)).astype(bool),
                "g": rng.normal(size=(rows, 3)).astype(np.float16),
                "h": rng.normal(size=(rows, 3)).astype(ml_dtypes.bfloat16),
                "s": rng.integers(-50, 50, size=(rows, 1), dtype=np.int64),
            })
        results = [infer(self.client, "dtypes", request) for request in requests]
        self.assertEqual(results[1]["OUTPUT__8"].shape, (3, 1))  # the [ ] reshape, batched
        self.assertEqual(results[1]["OUTPUT__4"].shape, (3, 2, 2, 2))
        # torch takes s as the [rows] it reshapes to.
        expected = torch_answers([
            (self.model_file("dtypes"),
             [(name, array.reshape(-1) if name == "s" else array)
              for name, array in request.items()]) for request in requests])
        for i, (got, want) in enumerate(zip(results, expected)):
            want["OUTPUT__8"] = want["OUTPUT__8"].reshape(-1, 1)
            for name in want:
                if want[name].dtype == ml_dtypes.bfloat16:  # the bits, exactly
                    self.assertEqual(got[name].dtype, ml_dtypes.bfloat16)
                    np.testing.assert_array_equal(got[name].view(np.uint16),
                                                  want[name].view(np.uint16))
                else:
                    assert_close(self, got[name], want[name], f"dtypes request {i} {name}")

    def test_model_without_batch_dimension(self):
        import numpy as np
        requests = [{"input0": np.arange(20, dtype=np.float32).reshape(4, 5),
                     "input1": np.array([3], dtype=np.int64)},
                    {"input0": np.ones((4, 2), dtype=np.float32),
                     "input1": np.array([-2], dtype=np.int64)}]
        results = [infer(self.client, "unbatched", request) for request in requests]
        expected = torch_answers([(self.model_file("unbatched"),
                                   [("input0", r["input0"]), ("input1", r["input1"].reshape(()))])
                                  for r in requests])
        for got, want in zip(results, expected):
            assert_close(self, got["OUTPUT__0"], want["OUTPUT__0"], "unbatched OUTPUT__0")
            assert_close(self, got["OUTPUT__1"], want["OUTPUT__1"].reshape(1), "OUTPUT__1")
        with self.assertRaises(Exception) as refused:  # a batch dimension it does not take
            infer(self.client, "unbatched", {"input0": np.ones((1, 4, 2), dtype=np.float32),
                                             "input1": np.array([1], dtype=np.int64)})
        self.assertEqual(refused.exception.status(), "StatusCode.INVALID_ARGUMENT")
        self.assertIn("input0", refused.exception.message())

    def test_dict_and_list_outputs(self):
        import numpy as np
        x = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float32)
        got = infer(self.client, "dict", {"x": x})
        np.testing.assert_array_equal(got["doubled"], x * 2)
        np.testing.assert_array_equal(got["sum"], x.sum(1, keepdims=True))
        a = np.array([[1, 2]], dtype=np.float32)
        b = np.array([[5, 7]], dtype=np.float32)
        got = infer(self.client, "list", {"INPUT__0": a, "INPUT__1": b})
        np.testing.assert_array_equal(got["OUTPUT__0"], a - b)
        np.testing.assert_array_equal(got["OUTPUT__1"], a * b)

    def test_cnn_answers_under_concurrent_load_from_mixed_batches(self):
        import numpy as np
        rng = np.random.default_rng(11)
        sizes = [1 + i % 3 for i in range(40)]  # 80 images, at most 3 per request
        requests = [{"INPUT__0": rng.normal(size=(n, 3, 32, 32)).astype(np.float32)}
                    for n in sizes]
        before = statistics(self.client, "cnn")
        results = infer_concurrently(self.client, "cnn", requests)
        after = statistics(self.client, "cnn")
        self.check_answers("cnn", requests, results)
        self.assert_batched_together("cnn", before, after, sizes)

    def test_two_input_model_batches_only_requests_of_the_same_shape(self):
        import numpy as np
        rng = np.random.default_rng(12)
        requests = []
        for i in range(30):  # ids of width 3 and 5: the variable dimension splits the batches
            rows, width = 1 + i % 2, 3 if i % 3 else 5
            requests.append({"features": rng.normal(size=(rows, 4)).astype(np.float32),
                             "ids": rng.integers(0, 50, size=(rows, width), dtype=np.int64)})
        before = statistics(self.client, "mixed")
        results = infer_concurrently(self.client, "mixed", requests)
        after = statistics(self.client, "mixed")
        for request, result in zip(requests, results):
            self.assertEqual(result["OUTPUT__1"].shape, request["ids"].shape)
        self.check_answers("mixed", requests, results)
        self.assert_batched_together("mixed", before, after,
                                     [len(r["features"]) for r in requests])

    def test_demo_model_keeps_each_requests_parameters_in_shared_batches(self):
        import numpy as np
        rng = np.random.default_rng(13)
        requests = [{"x": rng.normal(size=(2, 3)).astype(np.float32),
                     "params": np.repeat(rng.normal(size=(1, 5)), 2, axis=0).astype(np.float32)}
                    for _ in range(24)]
        before = statistics(self.client, "demo")
        results = infer_concurrently(self.client, "demo", requests)
        after = statistics(self.client, "demo")
        self.check_answers("demo", requests, results, names={"y": "OUTPUT__0"})
        self.assert_batched_together("demo", before, after, [2] * len(requests))

    def assert_batched_together(self, model, before, after, sizes):
        """The statistics of `sizes` requests (rows each) that all succeeded, some of them
        executed in one batch: a batch larger than any request held rows of several."""
        rows = sum(sizes)
        self.assertEqual(after["success"] - before["success"], len(sizes), model)
        self.assertEqual(after["fail"] - before["fail"], 0, model)
        self.assertEqual(after["inference_count"] - before["inference_count"], rows, model)
        executions = after["execution_count"] - before["execution_count"]
        self.assertLess(executions, len(sizes), f"{model}: no two requests shared a batch")
        batches = {size: count - before["batches"].get(size, 0)
                   for size, count in after["batches"].items()
                   if count > before["batches"].get(size, 0)}
        self.assertEqual(sum(batches.values()), executions, f"{model}: {batches}")
        self.assertEqual(sum(size * count for size, count in batches.items()), rows, model)
        self.assertGreater(max(batches), max(sizes), f"{model}: no batch mixed requests")

    def test_statistics_are_exact(self):
        import numpy as np
        fresh = statistics(self.client, "counted")
        self.assertEqual(fresh, {"inference_count": 0, "execution_count": 0, "last_inference": 0,
                                 "success": 0, "fail": 0, "queue": 0, "compute_input": 0,
                                 "compute_infer": 0, "compute_output": 0, "batches": {}})
        sizes = [1, 2, 3, 4, 1]  # no dynamic_batching: one execution per request
        start_ms = time.time() * 1000
        for rows in sizes:
            infer(self.client, "counted", {"INPUT__0": np.ones((rows, 2), np.float32),
                                           "INPUT__1": np.ones((rows, 2), np.float32)})
        after = statistics(self.client, "counted")
        self.assertEqual(after["inference_count"], 11)
        self.assertEqual(after["execution_count"], 5)
        for kind in ("success", "queue", "compute_input", "compute_infer", "compute_output"):
            self.assertEqual(after[kind], 5, kind)
        self.assertEqual(after["fail"], 0)
        self.assertEqual(after["batches"], {1: 2, 2: 1, 3: 1, 4: 1})
        self.assertGreaterEqual(after["last_inference"], start_ms - 1000)
        self.assertLessEqual(after["last_inference"], time.time() * 1000 + 1000)


# ----- explicit model control -----------------------------------------------------------------

class ExplicitControl(unittest.TestCase):
    """--model-control-mode explicit: load and unload on request; broken models are refused with
    their reason while the others serve."""

    @classmethod
    def setUpClass(cls):
        versions = {1: "scale1", 2: "scale2", 3: "scale3"}
        cls.root = build_repository(os.path.join(TMP.name, "explicit"), {
            "latest": (scale_config("version_policy: { latest: { num_versions: 2 } }"), versions),
            "pinned": (scale_config("version_policy: { specific: { versions: [ 1, 3 ] } }"),
                       versions),
            "every": (scale_config("version_policy: { all { } }"), versions),
            "slow": (SLOW_CONFIG, {1: "slow"}),
            "mixed": (None, {1: "mixed"}),
            **broken_models(),
        })
        cls.server = Server(cls.root, "--model-control-mode", "explicit", "--load-model",
                            "latest", "--exit-on-error=false").wait_serving()
        cls.client = cls.server.client

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def test_index_lists_every_model_and_the_state_of_loaded_ones(self):
        entries = index(self.client)
        self.assertEqual(entries[("latest", "2")], ("READY", ""))
        self.assertEqual(entries[("latest", "3")], ("READY", ""))
        self.assertNotIn(("latest", "1"), entries)
        names = {name for name, _ in entries}
        self.assertEqual(names, {"latest", "pinned", "every", "slow", "mixed", *BROKEN})

    def test_load_and_unload(self):
        import numpy as np
        import tritonclient.grpc as triton
        arrays = {"features": np.ones((1, 4), np.float32), "ids": np.array([[1, 2]], np.int64)}
        self.assertFalse(self.client.is_model_ready("mixed"))
        self.client.load_model("mixed")
        self.assertTrue(self.client.is_model_ready("mixed"))
        self.assertTrue(self.client.is_model_ready("mixed", "1"))
        self.assertEqual(infer(self.client, "mixed", arrays)["OUTPUT__1"].tolist(), [[8, 15]])
        self.client.unload_model("mixed")
        self.assertFalse(self.client.is_model_ready("mixed"))
        self.assertEqual(index(self.client)[("mixed", "1")], ("UNAVAILABLE", "unloaded"))
        with self.assertRaises(triton.InferenceServerException) as gone:
            infer(self.client, "mixed", arrays)
        self.assertIn('"mixed"', gone.exception.message())
        self.client.load_model("mixed")  # and back
        self.assertEqual(infer(self.client, "mixed", arrays)["OUTPUT__1"].tolist(), [[8, 15]])
        self.client.unload_model("mixed")

    def test_readiness_per_version_follows_the_version_policy(self):
        import numpy as np
        self.client.load_model("pinned")
        self.client.load_model("every")
        ready = {"latest": {2, 3}, "pinned": {1, 3}, "every": {1, 2, 3}}
        x = x2(3, 1)
        for model, versions in ready.items():
            for version in (1, 2, 3, 4):
                self.assertEqual(self.client.is_model_ready(model, str(version)),
                                 version in versions, f"{model} version {version}")
                if version in versions:  # each version answers with its own model
                    got = infer(self.client, model, x, version=str(version))["OUTPUT__0"]
                    np.testing.assert_allclose(got, x["x"] * version, rtol=1e-6)
            # Without a version: the highest one served.
            got = infer(self.client, model, x)["OUTPUT__0"]
            np.testing.assert_allclose(got, x["x"] * max(versions), rtol=1e-6)
            metadata = self.client.get_model_metadata(model, as_json=True)
            self.assertEqual(sorted(metadata["versions"]), sorted(map(str, versions)))
            entries = index(self.client)
            for version in versions:
                self.assertEqual(entries[(model, str(version))], ("READY", ""))
        self.client.unload_model("pinned")
        self.client.unload_model("every")

    def test_broken_models_are_refused_with_their_reason_while_others_serve(self):
        import tritonclient.grpc as triton
        failures = []
        calls = [0]
        stop = threading.Event()

        def keep_calling():  # "latest" serves throughout
            while not stop.is_set():
                try:
                    infer(self.client, "latest", x2(1, calls[0]))
                    calls[0] += 1
                except Exception as error:  # noqa: BLE001 - any failure fails the test
                    failures.append(error)

        caller = threading.Thread(target=keep_calling)
        caller.start()
        try:
            for name, (_, _, reason) in BROKEN.items():
                with self.subTest(model=name):
                    with self.assertRaises(triton.InferenceServerException) as refused:
                        self.client.load_model(name)
                    self.assertIn(f'"{name}"', refused.exception.message())
                    self.assertRegex(refused.exception.message(), reason)
                    self.assertFalse(self.client.is_model_ready(name))
                    states = [(version, state) for (model, version), state in
                              index(self.client).items() if model == name]
                    self.assertTrue(states, f"{name} not in the index")
                    for version, (state, why) in states:
                        if name == "no_file" and version == "1":
                            continue  # its version 1 is fine; version 2 fails the model
                        self.assertEqual(state, "UNAVAILABLE", f"{name} {version}")
                        self.assertRegex(why, reason)
        finally:
            stop.set()
            caller.join()
        self.assertEqual(failures, [])
        self.assertGreater(calls[0], 0)
        # A fixed configuration loads.
        write(os.path.join(self.root, "bad_syntax", "config.pbtxt"), scale_config())
        self.client.load_model("bad_syntax")
        self.assertEqual(index(self.client)[("bad_syntax", "1")], ("READY", ""))
        self.client.unload_model("bad_syntax")
        write(os.path.join(self.root, "bad_syntax", "config.pbtxt"), BROKEN["bad_syntax"][0])

    def test_unload_waits_for_calls_in_flight_and_fails_none(self):
        import numpy as np
        self.client.load_model("slow")
        x = {"x": np.zeros((1, 4), np.float32)}
        infer(self.client, "slow", x)
        # No dynamic_batching: each call is its own execution of ~0.1 s, one after the other.
        finished = []
        lock = threading.Lock()

        def done(result, error):
            with lock:
                finished.append((time.monotonic(), error))

        inputs = inputs_of(x)
        for _ in range(8):
            self.client.async_infer("slow", inputs, done)
        time.sleep(0.05)
        started = time.monotonic()
        self.client.unload_model("slow")
        unloaded = time.monotonic()
        wait_for(lambda: len(finished) == 8, "the calls in flight")
        errors = [error for _, error in finished if error is not None]
        self.assertEqual(errors, [], [(e.status(), e.message()) for e in errors])
        last = max(when for when, _ in finished)
        # The unload returned once the calls were done (their answers then travel back), not
        # while they were still queued.
        self.assertGreater(last - started, 0.3, "the calls were not in flight")
        self.assertLess(last - unloaded, 0.1,
                        f"unload returned {last - unloaded:.3f} s before the last call ended")
        self.assertFalse(self.client.is_model_ready("slow"))


# ----- poll mode ------------------------------------------------------------------------------

class PollMode(unittest.TestCase):
    """--model-control-mode poll: the server follows the repository's changes."""

    def test_follows_versions_configs_and_refuses_broken_files(self):
        import numpy as np
        root = build_repository(os.path.join(TMP.name, "poll"), {
            "scale": (scale_config(), {1: "scale1"}),
        })
        server = Server(root, "--model-control-mode", "poll", "--repository-poll-secs", "0.3",
                        "--exit-on-error=false").wait_serving()
        client = server.client
        try:
            x = x2(2, 5)
            answer = lambda version="": infer(client, "scale", x, version)["OUTPUT__0"]
            np.testing.assert_allclose(answer(), x["x"])

            # A new version folder: version 2 replaces 1 (latest, one version).
            make_models([("scale2", os.path.join(root, "scale", "2", "model.pt"))])
            wait_for(lambda: index(client).get(("scale", "2")) == ("READY", "") and
                     not client.is_model_ready("scale", "1"), "version 2 to replace 1")
            np.testing.assert_allclose(answer(), x["x"] * 2)

            # An edited config.
            write(os.path.join(root, "scale", "config.pbtxt"),
                  scale_config(max_batch_size=4,
                               extra="dynamic_batching { max_queue_delay_microseconds: 1000 }"))
            wait_for(lambda: int(client.get_model_config("scale", as_json=True)["config"]
                                 ["max_batch_size"]) == 4, "the new config")
            np.testing.assert_allclose(answer(), x["x"] * 2)

            # A broken version 3 is refused; version 2 serves on, all along.
            write(os.path.join(root, "scale", "3", "model.pt"), b"garbage, not TorchScript")
            deadline = time.monotonic() + 60
            while index(client).get(("scale", "3"), ("",))[0] != "UNAVAILABLE":
                np.testing.assert_allclose(answer(), x["x"] * 2)
                self.assertLess(time.monotonic(), deadline, "version 3 never refused")
            state, reason = index(client)[("scale", "3")]
            self.assertIn("scale/3/model.pt", reason)
            self.assertTrue(client.is_model_ready("scale", "2"))
            np.testing.assert_allclose(answer(), x["x"] * 2)
            self.assertIn("version 3", server.log())

            # Its folder removed, then version 2's: version 1 serves again.
            shutil.rmtree(os.path.join(root, "scale", "3"))
            shutil.rmtree(os.path.join(root, "scale", "2"))
            wait_for(lambda: client.is_model_ready("scale", "1") and
                     not client.is_model_ready("scale", "2"), "version 1 to serve again")
            np.testing.assert_allclose(answer(), x["x"])

            # A new model appears; a broken new one shows its reason; scale serves on.
            build_repository(root, {"mixed": (None, {1: "mixed"}),
                                    "bad_syntax": BROKEN["bad_syntax"][:2]})
            wait_for(lambda: client.is_model_ready("mixed"), "the new model")
            reason = wait_for(lambda: index(client).get(("bad_syntax", "1"),
                                                        index(client).get(("bad_syntax", ""))),
                              "the broken model in the index")
            self.assertEqual(reason[0], "UNAVAILABLE")
            self.assertRegex(reason[1], BROKEN["bad_syntax"][2])
            np.testing.assert_allclose(answer(), x["x"])

            # A model folder removed: unloaded.
            shutil.rmtree(os.path.join(root, "mixed"))
            wait_for(lambda: not client.is_model_ready("mixed"), "mixed to be unloaded")
            self.assertEqual(server.process.poll(), None)
        finally:
            server.stop()


# ----- a repository written by hand from Triton's documentation --------------------------------

TRITON_SERVED = os.path.join(REPO, "test", "repository", "triton_served")
# The model files the test puts into its version folders (the configs are committed).
TRITON_SERVED_MODELS = {
    "resnet50": {1: "tiny_resnet"},
    "simple_pair": {1: "pair_add", 2: "pair_sub"},
    "dict_model": {1: "dict_model"},
    "scalar_in": {1: "scalar"},
}


class TritonDocsRepository(unittest.TestCase):
    """test/repository/triton_served: configs typed by hand from Triton's documentation and
    examples, served unchanged (only the model files are added) and called model by model."""

    @classmethod
    def setUpClass(cls):
        cls.root = os.path.join(TMP.name, "triton_served")
        shutil.copytree(TRITON_SERVED, cls.root)
        jobs = [(kind, os.path.join(cls.root, name, str(version), "model.pt"))
                for name, versions in TRITON_SERVED_MODELS.items()
                for version, kind in versions.items()]
        make_models(jobs)
        cls.server = Server(cls.root).wait_serving()
        cls.client = cls.server.client

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def model_file(self, name, version=1):
        return os.path.join(self.root, name, str(version), "model.pt")

    def test_configs_are_the_committed_ones(self):
        for name in TRITON_SERVED_MODELS:
            with open(os.path.join(TRITON_SERVED, name, "config.pbtxt"), "rb") as committed, \
                    open(os.path.join(self.root, name, "config.pbtxt"), "rb") as served:
                self.assertEqual(committed.read(), served.read(), name)

    def test_every_model_and_version_is_ready(self):
        self.assertEqual(index(self.client), {
            ("dict_model", "1"): ("READY", ""), ("resnet50", "1"): ("READY", ""),
            ("scalar_in", "1"): ("READY", ""), ("simple_pair", "1"): ("READY", ""),
            ("simple_pair", "2"): ("READY", "")})

    def test_resnet50_with_reshaped_input_and_output(self):
        import numpy as np
        image = np.random.default_rng(21).normal(size=(3, 224, 224)).astype(np.float32)
        got = infer(self.client, "resnet50", {"input__0": image})["output__0"]
        self.assertEqual(got.shape, (1, 1000, 1, 1))
        want = torch_answers([(self.model_file("resnet50"), [("x", image[None])])])[0]
        assert_close(self, got.reshape(1, 1000), want["OUTPUT__0"], "resnet50")
        config = self.client.get_model_config("resnet50", as_json=True)["config"]
        self.assertEqual(config["input"][0]["reshape"], {"shape": ["1", "3", "224", "224"]})
        self.assertNotIn("max_batch_size", config)  # 0

    def test_simple_pair_serves_all_versions(self):
        import numpy as np
        rng = np.random.default_rng(22)
        arrays = {"input0": rng.normal(size=(3, 16)).astype(np.float32),
                  "input1": rng.normal(size=(3, 16)).astype(np.float32)}
        for version, sign in ((1, 1), (2, -1)):
            got = infer(self.client, "simple_pair", arrays, version=str(version))["output0"]
            want = torch_answers([(self.model_file("simple_pair", version),
                                   list(arrays.items()))])[0]["OUTPUT__0"]
            assert_close(self, got, want, f"simple_pair version {version}")
            np.testing.assert_allclose(got, arrays["input0"] + sign * arrays["input1"],
                                       rtol=1e-6)

    def test_dict_model_under_concurrent_load(self):
        import numpy as np
        rng = np.random.default_rng(23)
        requests = [{"INPUT__0": rng.normal(size=(1 + i % 2, 10)).astype(np.float32)}
                    for i in range(16)]
        results = infer_concurrently(self.client, "dict_model", requests)
        expected = torch_answers([(self.model_file("dict_model"), list(r.items()))
                                  for r in requests])
        for i, (got, want) in enumerate(zip(results, expected)):
            self.assertEqual(sorted(got), ["embeddings", "logits"])
            for name in want:
                assert_close(self, got[name], want[name], f"dict_model request {i} {name}")
        config = self.client.get_model_config("dict_model", as_json=True)["config"]
        self.assertEqual(config["instance_group"][0]["count"], 2)
        self.assertEqual(config["instance_group"][0]["kind"], "KIND_CPU")

    def test_scalar_input_named_in_binds_by_its_place(self):
        import numpy as np
        x = np.array([[1.5], [-2.0], [0.25]], dtype=np.float32)
        got = infer(self.client, "scalar_in", {"in": x})["out"]
        self.assertEqual(got.shape, (3, 1))
        want = torch_answers([(self.model_file("scalar_in"), [("x", x.reshape(-1))])])[0]
        assert_close(self, got.reshape(-1), want["OUTPUT__0"], "scalar_in")


# ----- failures at startup --------------------------------------------------------------------

class StartupFailures(unittest.TestCase):
    """A model that cannot load stops the server at startup (--exit-on-error=true, the default)
    with an error naming it; with --exit-on-error=false the others serve and the index shows
    why."""

    def test_each_broken_model_stops_the_server_naming_it(self):
        for name, (config, versions, reason) in BROKEN.items():
            with self.subTest(model=name):
                root = build_repository(os.path.join(TMP.name, f"startup-{name}"), {
                    "good": (scale_config(), {1: "scale1"}),
                    name: (config, versions),
                })
                server = Server(root)
                self.assertEqual(server.wait_exit(), 1, server.log())
                log = server.log()
                self.assertRegex(log, rf'cannot start: model "{name}"')
                self.assertRegex(log, reason)

    def test_unreadable_repository_stops_the_server(self):
        missing = os.path.join(TMP.name, "no-such-repository")
        server = Server(missing, "--exit-on-error=false")
        self.assertEqual(server.wait_exit(), 1, server.log())
        self.assertIn(f"cannot start: model repository {missing} cannot be read", server.log())
        a_file = os.path.join(TMP.name, "a-file")
        write(a_file, "not a folder")
        server = Server(a_file)
        self.assertEqual(server.wait_exit(), 1, server.log())
        self.assertIn(a_file, server.log())

    def test_without_exit_on_error_the_others_serve(self):
        import numpy as np
        root = build_repository(os.path.join(TMP.name, "startup-all"), {
            "good": (scale_config(), {1: "scale1"}),
            **broken_models(),
        })
        for mode in (["--model-control-mode", "explicit", "--load-model", "*"],
                     ["--model-control-mode", "poll"], ["--model-control-mode", "none"]):
            with self.subTest(mode=mode[1]):
                server = Server(root, *mode, "--exit-on-error=false").wait_serving()
                try:
                    x = x2(1, 2)
                    np.testing.assert_allclose(infer(server.client, "good", x)["OUTPUT__0"],
                                               x["x"])
                    entries = index(server.client)
                    for name, (_, _, reason) in BROKEN.items():
                        self.assertFalse(server.client.is_model_ready(name), name)
                        states = [state for (model, version), state in entries.items()
                                  if model == name and not (name == "no_file" and version == "1")]
                        self.assertTrue(states, f"{name} not in the index")
                        for state, why in states:
                            self.assertEqual(state, "UNAVAILABLE", name)
                            self.assertRegex(why, reason)
                finally:
                    server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    ARGS, rest = parser.parse_known_args()
    if os.path.realpath(sys.prefix) != os.path.realpath(os.path.dirname(os.path.dirname(VENV_PYTHON))):
        if not os.path.exists(VENV_PYTHON):
            print(f"SKIPPED: no {VENV_PYTHON}; scripts/setup_oip_peers.sh installs tritonclient")
            sys.exit(SKIP)
        os.execv(VENV_PYTHON, [VENV_PYTHON, os.path.abspath(__file__), *sys.argv[1:]])
    if not os.path.exists(TORCH_PYTHON):
        print(f"SKIPPED: no {TORCH_PYTHON} (Debian's, with torch) to make the models")
        sys.exit(SKIP)
    ARGS.server = os.path.abspath(ARGS.server)
    TMP = tempfile.TemporaryDirectory()
    try:
        unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)
    finally:
        TMP.cleanup()
