#!/usr/bin/python3
"""Priorities, queue policies and the response cache through Triton's own Python client
(tritonclient[grpc] from PyPI) against the real binary, configured in a model repository as
Triton's users configure them (docs: repository/README.md, docs/SCHEDULING.md).

Every check counts the order in which calls finish, never how long they took: the model spins for
as many iterations as its input asks (column 3 of x), so a test makes one call long and the
others short and then sees which finished first.

Runs in the project's venv with tritonclient (scripts/setup_oip_peers.sh); without it, exits 77
(ctest reports SKIPPED). Started with any python3, it re-executes itself in that venv:
  /usr/bin/python3 test/python/test_scheduling.py --server build/server/model_server
"""
import argparse
import functools
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import unittest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV_PYTHON = os.path.join(REPO, "build-oip-peers", "venv", "bin", "python")
SKIP = 77  # ctest SKIP_RETURN_CODE

ARGS = None
TMP = tempfile.TemporaryDirectory()

# The model (Debian's python3 has torch; the venv does not): y = x, after spinning x[0, 3]
# iterations (0 while warming up on zeros). One request at a time when max_batch_size is 1.
MAKE_MODEL = r"""
import sys, torch
class Spin(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.eye(4) * 0.5, requires_grad=False)
    def forward(self, x):
        iterations = int(torch.clamp(torch.abs(x[0, 3]), 0.0, 10000000.0).item())
        h = x
        for _ in range(iterations):
            h = torch.tanh(h @ self.w)
        return x + 0.0 * h
torch.jit.script(Spin()).save(sys.argv[1])
"""

TENSORS = """
platform: "pytorch_libtorch"
input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] } ]
"""

CONFIGS = {
    # Two levels; 2 is the default.
    "prio": """
max_batch_size: 1
dynamic_batching { priority_levels: 2 default_priority_level: 2 }
""",
    # Level 2 holds two requests at most; level 1 has no bound.
    "bounded": """
max_batch_size: 1
dynamic_batching {
  priority_levels: 2
  default_priority_level: 2
  priority_queue_policy { key: 2 value: { max_queue_size: 2 } }
}
""",
    # 1: REJECT after 50 ms; 2: DELAY, requests set their own timeout; 3: REJECT, requests may
    # not set one (and the level has none); 4: REJECT, requests set their own.
    "timeouts": """
max_batch_size: 1
dynamic_batching {
  priority_levels: 4
  default_priority_level: 2
  priority_queue_policy {
    key: 1 value: { timeout_action: REJECT default_timeout_microseconds: 50000 } }
  priority_queue_policy { key: 2 value: { timeout_action: DELAY allow_timeout_override: true } }
  priority_queue_policy {
    key: 3 value: { timeout_action: REJECT allow_timeout_override: false } }
  priority_queue_policy { key: 4 value: { timeout_action: REJECT allow_timeout_override: true } }
}
""",
    # A fixed delay of an hour, replaced by a 5 ms latency objective.
    "objective": """
max_batch_size: 8
dynamic_batching { max_queue_delay_microseconds: 3600000000 }
parameters { key: "latency_objective_p99_microseconds" value: { string_value: "5000" } }
""",
    "cached": """
max_batch_size: 8
dynamic_batching { }
response_cache { enable: true }
""",
}

CACHE_BYTES = 16384
LONG = 300000  # iterations: hundreds of milliseconds
SHORT = 1000   # about a millisecond


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Calls:
    """Asynchronous calls and the order in which they finish."""

    def __init__(self, client, triton):
        self.client = client
        self.triton = triton
        self.lock = threading.Lock()
        self.done = threading.Condition(self.lock)
        self.finished = []  # (name, error or None), in the order the calls finished
        self.started_after = {}  # name -> calls finished when it was sent

    def inputs(self, spin, value=1.0):
        import numpy as np
        x = self.triton.InferInput("x", [1, 4], "FP32")
        x.set_data_from_numpy(np.array([[value, 2, 3, spin]], dtype=np.float32))
        return [x]

    def _finish(self, name, result, error):
        with self.lock:
            self.finished.append((name, error))
            self.done.notify_all()

    def send(self, name, model, spin, **kwargs):
        with self.lock:
            self.started_after[name] = len(self.finished)
        self.client.async_infer(model, self.inputs(spin), functools.partial(self._finish, name),
                                **kwargs)

    def note(self, name, error=None):
        """A call finished synchronously (e.g. refused at once)."""
        self._finish(name, None, error)

    def wait(self, count, timeout=120):
        with self.lock:
            if not self.done.wait_for(lambda: len(self.finished) >= count, timeout):
                raise TimeoutError(f"{len(self.finished)} of {count} calls finished")

    def position(self, name):
        with self.lock:
            return [n for n, _ in self.finished].index(name)

    def error(self, name):
        with self.lock:
            return dict(self.finished)[name]


class Scheduling(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        import tritonclient.grpc as triton
        cls.triton = triton
        repository = os.path.join(TMP.name, "models")
        model_file = os.path.join(TMP.name, "spin.pt")
        maker = os.path.join(TMP.name, "make_model.py")  # torch.jit.script reads the source
        with open(maker, "w") as f:
            f.write(MAKE_MODEL)
        subprocess.run(["/usr/bin/python3", maker, model_file], check=True)
        for name, config in CONFIGS.items():
            os.makedirs(os.path.join(repository, name, "1"))
            os.symlink(model_file, os.path.join(repository, name, "1", "model.pt"))
            with open(os.path.join(repository, name, "config.pbtxt"), "w") as f:
                f.write(TENSORS + config)
        cls.address = f"127.0.0.1:{free_port()}"
        cls.metrics_address = f"127.0.0.1:{free_port()}"
        cls.server = subprocess.Popen(
            [ARGS.server, "--address", cls.address, "--metrics-address", cls.metrics_address,
             "--model-repository", repository, "--model-control-mode", "explicit",
             "--load-model", "*", "--cache-config", f"local,size={CACHE_BYTES}",
             "--torch-threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        cls.client = triton.InferenceServerClient(url=cls.address)
        deadline = time.monotonic() + 120
        while True:
            try:
                if cls.client.is_server_ready():
                    break
            except triton.InferenceServerException:
                pass
            if cls.server.poll() is not None or time.monotonic() > deadline:
                cls.server.kill()
                raise RuntimeError(f"model_server did not become ready:\n{cls.server.stdout.read()}")
            time.sleep(0.1)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        cls.server.send_signal(signal.SIGTERM)
        cls.server.wait(timeout=60)
        cls.server.stdout.close()

    def calls(self):
        return Calls(self.client, self.triton)

    def metric(self, name, labels=""):
        import urllib.request
        with urllib.request.urlopen(f"http://{self.metrics_address}/metrics", timeout=5) as r:
            text = r.read().decode()
        prefix = f"{name}{{{labels}}} " if labels else f"{name} "
        for line in text.splitlines():
            if line.startswith(prefix):
                return float(line[len(prefix):])
        return None

    def queued(self, model, priority):
        return self.metric("model_server_queue_depth", f'model="{model}",priority="{priority}"')

    def dequeued(self, model):
        """Requests of `model` that have left its queue so far."""
        stats = self.client.get_inference_statistics(model, as_json=True)["model_stats"][0]
        return int(stats["inference_stats"]["queue"].get("count", 0))

    def wait_until(self, condition, what, timeout=60):
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                self.fail(f"timed out waiting until {what}")
            time.sleep(0.005)

    def start_long(self, calls, name, model, **kwargs):
        """Sends a long call and waits until it runs (has left the queue)."""
        before = self.dequeued(model)
        calls.send(name, model, LONG, **kwargs)
        self.wait_until(lambda: self.dequeued(model) > before, f"{name} runs")

    def test_priority_1_finishes_first_when_priority_2_saturates_the_queue(self):
        calls = self.calls()
        lows = [f"low{i}" for i in range(30)]
        highs = [f"high{i}" for i in range(10)]
        spin = 15000  # about 20 ms each: 30 of them keep the queue full
        for name in lows:
            calls.send(name, "prio", spin, priority=2)
        calls.wait(2)  # the lows are queued now
        for name in highs:
            calls.send(name, "prio", spin, priority=1)
        calls.wait(len(lows) + len(highs))
        for name, error in calls.finished:
            self.assertIsNone(error, name)

        # Latency counted in calls: how many calls finished from a call's sending to its end.
        def rank(name):
            return calls.position(name) + 1 - calls.started_after[name]

        high_ranks = sorted(rank(name) for name in highs)
        low_ranks = sorted(rank(name) for name in lows)
        high_p99 = high_ranks[min(len(high_ranks) - 1, int(0.99 * len(high_ranks)))]
        low_p50 = statistics.median(low_ranks)
        self.assertLess(high_p99, low_p50, f"high {high_ranks}, low {low_ranks}")
        # Every high-priority call finished before the last 15 low-priority ones.
        last_high = max(calls.position(name) for name in highs)
        lows_after = sum(1 for name in lows if calls.position(name) > last_high)
        self.assertGreaterEqual(lows_after, 15, [n for n, _ in calls.finished])

    def test_a_full_level_refuses_at_once_while_another_accepts(self):
        calls = self.calls()
        self.start_long(calls, "running", "bounded", priority=2)
        calls.send("queued_a", "bounded", SHORT, priority=2)
        calls.send("queued_b", "bounded", SHORT)  # the default level, 2
        self.wait_until(lambda: self.queued("bounded", 2) == 2, "level 2 holds two")
        with self.assertRaises(self.triton.InferenceServerException) as refused:
            self.client.infer("bounded", calls.inputs(SHORT), priority=2)
        calls.note("refused", refused.exception)
        self.assertEqual(refused.exception.status(), "StatusCode.UNAVAILABLE")
        self.assertIn("exceeds maximum queue size: priority level 2 holds 2 of 2 requests",
                      refused.exception.message())
        calls.send("high", "bounded", SHORT, priority=1)  # level 1 still accepts
        calls.wait(5)
        order = [n for n, _ in calls.finished]
        # Refused while the long call still ran: at once, not after the queue moved.
        self.assertLess(order.index("refused"), order.index("running"), order)
        self.assertLess(order.index("high"), order.index("queued_a"), order)
        self.assertLess(order.index("high"), order.index("queued_b"), order)
        for name in ("running", "queued_a", "queued_b", "high"):
            self.assertIsNone(calls.error(name), name)
        self.assertEqual(self.metric("model_server_queue_rejections_total",
                                     'model="bounded",priority="2",policy="max_queue_size"'), 1)

    def test_reject_fails_a_call_whose_timeout_passes_in_the_queue(self):
        calls = self.calls()
        self.start_long(calls, "running", "timeouts", priority=2)
        calls.send("rejected", "timeouts", SHORT, priority=1)  # level 1: 50 ms, REJECT
        calls.wait(2)
        order = [n for n, _ in calls.finished]
        self.assertEqual(order, ["rejected", "running"])  # failed while the long call ran
        error = calls.error("rejected")
        self.assertIsNotNone(error)
        self.assertEqual(error.status(), "StatusCode.UNAVAILABLE")
        self.assertIn("request timeout expired", error.message())
        self.assertIsNone(calls.error("running"))
        self.assertGreaterEqual(self.metric("model_server_queue_timeouts_total",
                                            'model="timeouts",priority="1",action="reject"'), 1)

    def test_delay_moves_a_call_whose_timeout_passes_behind_the_others(self):
        calls = self.calls()
        before = self.metric("model_server_queue_timeouts_total",
                             'model="timeouts",priority="2",action="delay"') or 0
        self.start_long(calls, "running", "timeouts", priority=2)
        calls.send("delayed", "timeouts", SHORT, priority=2, timeout=20000)  # 20 ms, DELAY
        self.wait_until(lambda: self.queued("timeouts", 2) == 1, "the delayed call queues")
        calls.send("second", "timeouts", SHORT, priority=2)
        self.wait_until(lambda: self.queued("timeouts", 2) == 2, "the second call queues")
        calls.send("third", "timeouts", SHORT, priority=2)
        calls.wait(4)
        self.assertEqual([n for n, _ in calls.finished], ["running", "second", "third", "delayed"])
        for name, error in calls.finished:
            self.assertIsNone(error, name)  # delayed, not failed
        self.assertEqual(self.metric("model_server_queue_timeouts_total",
                                     'model="timeouts",priority="2",action="delay"'), before + 1)

    def test_allow_timeout_override_false_ignores_a_calls_timeout(self):
        calls = self.calls()
        self.start_long(calls, "running", "timeouts", priority=2)
        # The same 1 ms timeout on two REJECT levels: level 3 may not take it, level 4 may.
        calls.send("ignored", "timeouts", SHORT, priority=3, timeout=1000)
        calls.send("overridden", "timeouts", SHORT, priority=4, timeout=1000)
        calls.wait(3)
        self.assertIsNone(calls.error("ignored"))
        self.assertLess(calls.position("running"), calls.position("ignored"))
        error = calls.error("overridden")
        self.assertIsNotNone(error)
        self.assertIn("request timeout expired", error.message())
        self.assertLess(calls.position("overridden"), calls.position("running"))

    def test_latency_objective_replaces_the_delay_and_holds_no_lone_request(self):
        # Under the configured hour's delay each call would wait an hour for batch-mates; under
        # the objective a lone call runs at once, so the 60 s client timeout never passes.
        calls = self.calls()
        for i in range(3):
            calls.send(f"lone{i}", "objective", SHORT, client_timeout=60)
            calls.wait(i + 1)
            self.assertIsNone(calls.error(f"lone{i}"))

    def infer_cached(self, value, **kwargs):
        import numpy as np
        x = self.triton.InferInput("x", [1, 4], "FP32")
        data = np.array([[value, 2, 3, 0]], dtype=np.float32)
        if "flip_byte" in kwargs:
            kwargs.pop("flip_byte")
            data.view(np.uint8)[0, 4] ^= 1  # one byte of the second element
        x.set_data_from_numpy(data)
        return self.client.infer("cached", [x], **kwargs).as_numpy("y")

    def cache_stats(self):
        stats = self.client.get_inference_statistics("cached", as_json=True)["model_stats"][0]
        inference = stats["inference_stats"]
        return (int(stats.get("execution_count", 0)),
                int(inference.get("cache_hit", {}).get("count", 0)),
                int(inference.get("cache_miss", {}).get("count", 0)))

    def test_cache_hits_and_misses(self):
        executions, hits, misses = self.cache_stats()
        first = self.infer_cached(7.0)
        self.assertEqual(self.cache_stats(), (executions + 1, hits, misses + 1))
        again = self.infer_cached(7.0)
        self.assertEqual(again.tolist(), first.tolist())
        # A hit: no forward, the execution count does not move.
        self.assertEqual(self.cache_stats(), (executions + 1, hits + 1, misses + 1))
        # One input byte differs: a miss.
        other = self.infer_cached(7.0, flip_byte=True)
        self.assertNotEqual(other.tolist(), first.tolist())
        self.assertEqual(self.cache_stats(), (executions + 2, hits + 1, misses + 2))
        # One request parameter differs: a miss.
        self.infer_cached(7.0, parameters={"tag": "b"})
        self.assertEqual(self.cache_stats(), (executions + 3, hits + 1, misses + 3))
        self.infer_cached(7.0, parameters={"tag": "b"})
        self.assertEqual(self.cache_stats(), (executions + 3, hits + 2, misses + 3))

    def test_cache_stays_within_its_size_and_a_swap_empties_it(self):
        for i in range(200):
            self.infer_cached(1000.0 + i)
            if i % 10 == 9:
                self.assertLessEqual(self.metric("model_server_cache_bytes"), CACHE_BYTES)
        self.assertEqual(self.metric("model_server_cache_capacity_bytes"), CACHE_BYTES)
        self.assertGreater(self.metric("model_server_cache_evictions_total"), 0)
        self.assertGreater(self.metric("model_server_cache_entries"), 0)
        self.infer_cached(1199.0)  # the latest: still cached
        executions, hits, _ = self.cache_stats()
        self.infer_cached(1199.0)
        self.assertEqual(self.cache_stats()[:2], (executions, hits + 1))

        self.client.load_model("cached")  # a new version of the same number replaces it
        self.assertEqual(self.metric("model_server_cache_entries"), 0)
        self.assertEqual(self.cache_stats(), (0, 0, 0))  # the new version's statistics
        self.infer_cached(1199.0)
        self.assertEqual(self.cache_stats(), (1, 0, 1))  # computed again


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
