#!/usr/bin/python3
"""Several models in one model_server, and swapping a model's file under load, through the real
process: --model NAME=PATH routing (ModelService serves the first model, the Open Inference
Protocol routes by model_name), the unnamed model as "default", a bad model file as a startup
error naming it, and new versions picked up by polling (--model-poll-seconds) or SIGHUP while
calls keep coming: no failed call, answers switching from the old version's to the new one's, a
broken file or one of another signature refused while the old version serves on, memory back to
one version's after a swap.

  /usr/bin/python3 test/python/test_models.py --server build/server/model_server
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
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

BALLAST_FLOATS = 10_000_000  # 40 MB per version: large enough to see in the process's RSS
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


def rss_mib(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(field)


def reset_peak_rss(pid):
    """Resets the process's peak RSS (VmHWM) to its RSS now (Linux >= 4.0, proc(5)
    clear_refs "5"), so that VmHWM then shows the peak since this call, not since startup."""
    with open(f"/proc/{pid}/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


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


class Load:
    """Closed-loop callers over both protocols; every answer is kept with its time."""

    def __init__(self, client, model="default", threads=4):
        self.client = client
        self.model = model
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.seen = []  # (caller, kind, version or None, answer), in completion order
        self.errors = []
        self.threads = [threading.Thread(target=self.run, args=(i,)) for i in range(threads)]
        for thread in self.threads:
            thread.start()

    def run(self, index):
        while not self.stop.is_set():
            try:
                if index % 2:
                    version, y = self.client.infer(self.model)
                    item = (index, "oip", version, [round(v, 3) for v in y])
                else:
                    item = (index, "seed", None, [round(v, 3) for v in self.client.evaluate()])
            except grpc.RpcError as error:
                with self.lock:
                    self.errors.append(f"{error.code()}: {error.details()}")
                continue
            with self.lock:
                self.seen.append(item)

    def wait_for(self, offset, timeout=60):
        """Waits until both protocols answer with `offset`'s version."""
        expected = [round(v, 3) for v in answers(offset)]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                recent = self.seen[-8:]  # two rounds of the four callers
            if len(recent) == 8 and all(answer == expected for _, _, _, answer in recent):
                return time.monotonic()
            time.sleep(0.05)
        raise AssertionError(f"answers never switched to offset {offset}: {self.seen[-4:]}")

    def finish(self):
        self.stop.set()
        for thread in self.threads:
            thread.join()
        return self.seen, self.errors


class Swap(unittest.TestCase):
    def check_history(self, seen, offsets):
        """Every answer is one of the versions', every version answered, and no caller ever
        goes back to an older version: a caller's calls are sequential, so once one of them
        ran on a version, every later one runs on it or a newer one."""
        expected = {tuple(round(v, 3) for v in answers(offset)): i
                    for i, offset in enumerate(offsets)}
        last = {}
        versions = set()
        for caller, kind, version, answer in seen:
            index = expected.get(tuple(answer))
            self.assertIsNotNone(index, f"an answer from no version: {answer}")
            if version is not None:
                self.assertEqual(version, str(index + 1), "model_version is not its answer's")
            self.assertGreaterEqual(index, last.get(caller, 0), f"caller {caller} went back")
            last[caller] = index
            versions.add(index)
        self.assertEqual(sorted(versions), list(range(len(offsets))))

    def settle(self, server, version):
        """Waits until `version` serves and is the only version in memory."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            text = scrape(server.metrics)
            if (sample(text, "model_server_model_version", 'model="default"') == version and
                    sample(text, "model_server_model_versions_loaded", 'model="default"') == 1):
                return
            time.sleep(0.05)
        self.fail(f"version {version} did not settle")

    def test_three_polled_swaps_under_load_one_broken(self):
        ballast_mib = BALLAST_FLOATS * 4 / 2**20
        model = save(Versioned(100.0, BALLAST_FLOATS), "swap.pt")
        server = Server("--model", model, "--model-poll-seconds", "0.2")
        pid = server.process.pid
        load = Load(server.client)
        try:
            load.wait_for(100)
            time.sleep(1)  # allocator arenas warm with the load
            baseline = rss_mib(pid)
            reset_peak_rss(pid)  # VmHWM from here on is the swap's peak, not startup's

            save(Versioned(200.0, BALLAST_FLOATS), "swap.pt")
            load.wait_for(200)
            self.settle(server, 2)
            after_first = rss_mib(pid)
            peak_first = rss_mib(pid, "VmHWM")
            # Both versions were in memory during the swap (the check below can see a model) ...
            self.assertGreater(peak_first, baseline + 0.8 * ballast_mib)
            # ... and only one is once the old version's last batch is done.
            self.assertLess(after_first, baseline + 0.5 * ballast_mib)

            with open(path("swap.pt.tmp"), "wb") as broken:
                broken.write(b"PK\x03\x04 not a model at all")
            os.replace(path("swap.pt.tmp"), model)
            deadline = time.monotonic() + 30
            while server.metric("model_server_model_reloads_total",
                                'model="default",result="failed"') != 1:
                self.assertLess(time.monotonic(), deadline, "the broken file was not tried")
                time.sleep(0.05)
            time.sleep(0.5)
            self.assertEqual(server.client.infer("default"), ("2", answers(200)))

            before_third = rss_mib(pid)
            reset_peak_rss(pid)
            save(Versioned(300.0, BALLAST_FLOATS), "swap.pt")
            load.wait_for(300)
            self.settle(server, 3)
            after_third = rss_mib(pid)
            peak_third = rss_mib(pid, "VmHWM")
            print(f"\nRSS MiB: baseline {baseline:.0f} (one version of {ballast_mib:.0f} MiB "
                  f"ballast), peak in swap 1 {peak_first:.0f}, after it {after_first:.0f}, "
                  f"peak in swap 3 {peak_third:.0f}, after it {after_third:.0f}", file=sys.stderr)
            self.assertGreater(peak_third, before_third + 0.8 * ballast_mib)
            self.assertLess(after_third, baseline + 0.5 * ballast_mib)
        finally:
            seen, errors = load.finish()
            code, log = server.stop()
        self.assertEqual(errors, [], log[-3000:])
        self.assertEqual(code, 0)
        self.check_history(seen, [100, 200, 300])
        self.assertGreater(len(seen), 100)
        oip_versions = {version for _, kind, version, _ in seen if kind == "oip"}
        self.assertEqual(oip_versions, {"1", "2", "3"})
        self.assertIn("cannot load TorchScript model", log)
        self.assertEqual(log.count("released"), 2, log[-3000:])  # versions 1 and 2

    def test_sighup_reloads_and_a_new_signature_is_refused(self):
        model = save(Versioned(100.0), "hup.pt")
        server = Server("--model", f"m={model}")
        load = Load(server.client, model="m")
        try:
            load.wait_for(100)
            save(Versioned(500.0, inputs=4), "hup.pt")
            server.process.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 30
            while server.metric("model_server_model_reloads_total",
                                'model="m",result="failed"') != 1:
                self.assertLess(time.monotonic(), deadline, "SIGHUP did not try the new file")
                time.sleep(0.05)
            self.assertEqual(server.client.infer("m"), ("1", answers(100)))
            save(Versioned(200.0), "hup.pt")
            server.process.send_signal(signal.SIGHUP)
            load.wait_for(200)
            self.assertEqual(server.client.infer("m")[0], "2")
        finally:
            seen, errors = load.finish()
            code, log = server.stop()
        self.assertEqual(errors, [])
        self.assertEqual(code, 0)
        self.check_history(seen, [100, 200])
        self.assertIn("signature", log)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    ARGS, rest = parser.parse_known_args()
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)
