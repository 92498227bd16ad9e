"""Python client for model_server (and the seed's Python server: same wire protocol).

    from model_client import ModelClient, demo_request
    with ModelClient("localhost:13000") as client:
        prediction = client.evaluate(demo_request(rows=4))   # {"prediction": {"y_1": [...]}}

Retries behave like the seed's client: a call that fails with UNAVAILABLE (server not up yet,
restarting, connection refused) is tried again, 5 attempts in all, sleeping 1 s, 2 s, 4 s, 8 s
between them (x2 per attempt, capped at 30 s). Every other status is raised at once as
grpc.RpcError.

Needs Debian's python3-grpcio and python3-protobuf (run with /usr/bin/python3). The gRPC stubs
are generated from protos/ at build time (CMake puts them in the build dir and passes
MODEL_CLIENT_STUBS_DIR); from a plain checkout they are generated on first import into a cache
dir with protoc and grpc_python_plugin (Debian: protobuf-compiler, protobuf-compiler-grpc).
"""

import hashlib
import importlib
import json
import os
import pathlib
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import grpc

_PROTO_DIR = pathlib.Path(__file__).resolve().parent.parent.parent / "protos"
_PROTOS = ("model_interface.proto", "health.proto")
_STUB_MODULES = ("model_interface_pb2", "model_interface_pb2_grpc", "health_pb2", "health_pb2_grpc")


def _stubs_present(directory):
    return all((pathlib.Path(directory) / f"{name}.py").is_file() for name in _STUB_MODULES)


def generate_stubs(out_dir, proto_dir=_PROTO_DIR):
    """Runs protoc with grpc_python_plugin on our protos, writing the *_pb2*.py files to out_dir.

    Raises RuntimeError with protoc's message if a tool is missing or protoc fails.
    """
    protoc = shutil.which("protoc") or "/usr/bin/protoc"
    plugin = shutil.which("grpc_python_plugin") or "/usr/bin/grpc_python_plugin"
    for tool in (protoc, plugin):
        if not os.access(tool, os.X_OK):
            raise RuntimeError(f"{tool} not found: install protobuf-compiler protobuf-compiler-grpc")
    os.makedirs(out_dir, exist_ok=True)
    command = [protoc, f"-I{proto_dir}", f"--python_out={out_dir}", f"--grpc_out={out_dir}",
               f"--plugin=protoc-gen-grpc={plugin}"] + [str(pathlib.Path(proto_dir) / p) for p in _PROTOS]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"protoc failed ({' '.join(command)}): {result.stderr.strip()}")


def _cache_dir():
    """A per-proto-content cache dir, so edited protos get fresh stubs."""
    digest = hashlib.sha256()
    for proto in _PROTOS:
        digest.update((_PROTO_DIR / proto).read_bytes())
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "model_client", digest.hexdigest()[:16])


def _load_stubs():
    """Imports the generated modules: from MODEL_CLIENT_STUBS_DIR, else the cache (generating)."""
    directory = os.environ.get("MODEL_CLIENT_STUBS_DIR")
    if not directory or not _stubs_present(directory):
        directory = _cache_dir()
        if not _stubs_present(directory):
            # Generate into a temporary sibling and rename, so concurrent first imports never
            # see half-written files.
            parent = os.path.dirname(directory)
            os.makedirs(parent, exist_ok=True)
            scratch = tempfile.mkdtemp(dir=parent)
            generate_stubs(scratch)
            try:
                os.rename(scratch, directory)
            except OSError:  # another process won the race
                shutil.rmtree(scratch, ignore_errors=True)
    # The generated *_grpc modules import their *_pb2 peers by top-level name.
    if directory not in sys.path:
        sys.path.insert(0, directory)
    return tuple(importlib.import_module(name) for name in _STUB_MODULES)


model_interface_pb2, model_interface_pb2_grpc, health_pb2, health_pb2_grpc = _load_stubs()


class ExponentialBackoff:
    """Sleep before retry number `attempt` (0-based): init * multiplier**attempt, capped."""

    def __init__(self, init_backoff_ms=1000, max_backoff_ms=30000, multiplier=2):
        self.init_backoff_ms = init_backoff_ms
        self.max_backoff_ms = max_backoff_ms
        self.multiplier = multiplier

    def delay_s(self, attempt):
        return min(self.init_backoff_ms * self.multiplier ** attempt, self.max_backoff_ms) / 1000.0

    def __call__(self, attempt):
        time.sleep(self.delay_s(attempt))


class RetryOnRpcErrorClientInterceptor(grpc.UnaryUnaryClientInterceptor):
    """The seed's retry interceptor: retries unary calls whose status is in status_for_retry.

    `attempts` counts every attempt made through this interceptor (all threads), for tests and
    metrics.
    """

    def __init__(self, max_attempts=5, sleeping_policy=None,
                 status_for_retry=(grpc.StatusCode.UNAVAILABLE,)):
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.max_attempts = max_attempts
        self.sleeping_policy = sleeping_policy or ExponentialBackoff()
        self.status_for_retry = tuple(status_for_retry)
        self._lock = threading.Lock()
        self.attempts = 0

    def intercept_unary_unary(self, continuation, client_call_details, request):
        for attempt in range(self.max_attempts):
            with self._lock:
                self.attempts += 1
            response = continuation(client_call_details, request)
            # A failed call's outcome is also a grpc.RpcError carrying its code.
            if not isinstance(response, grpc.RpcError) or response.code() not in self.status_for_retry:
                return response
            if attempt + 1 < self.max_attempts:
                self.sleeping_policy(attempt)
        return response


def default_address():
    """localhost:$PORT_INTERNAL (the seed's variable), else localhost:13000."""
    return f"localhost:{os.environ.get('PORT_INTERNAL') or 13000}"


class ModelClient:
    """A channel to one server with the seed's retry policy. Thread-safe; close() when done.

    timeout_s bounds each attempt (None: no deadline). Oversized payloads need max_message_bytes
    raised on both sides (the server's --max-message-bytes). channel_options are extra gRPC
    channel arguments, e.g. [("grpc.lb_policy_name", "round_robin")] with an address such as
    "dns:///model-server-headless.NAMESPACE.svc.cluster.local:13000" to spread calls over pods.
    """

    def __init__(self, address=None, max_attempts=5, init_backoff_ms=1000, max_backoff_ms=30000,
                 multiplier=2, timeout_s=None, max_message_bytes=64 * 1024 * 1024,
                 channel_options=()):
        self.address = address or default_address()
        self.timeout_s = timeout_s
        self.retry = RetryOnRpcErrorClientInterceptor(
            max_attempts=max_attempts,
            sleeping_policy=ExponentialBackoff(init_backoff_ms, max_backoff_ms, multiplier),
            status_for_retry=(grpc.StatusCode.UNAVAILABLE,))
        options = [("grpc.max_send_message_length", max_message_bytes),
                   ("grpc.max_receive_message_length", max_message_bytes)] + list(channel_options)
        self._raw_channel = grpc.insecure_channel(self.address, options=options)
        channel = grpc.intercept_channel(self._raw_channel, self.retry)
        self.stub = model_interface_pb2_grpc.ModelServiceStub(channel)
        self.health_stub = health_pb2_grpc.HealthStub(channel)

    def evaluate(self, payload):
        """Sends payload (a dict, encoded as UTF-8 JSON) to EvaluateModel; returns the decoded
        response dict, e.g. {"prediction": {"y_1": [...]}}. Raises grpc.RpcError (code
        INVALID_ARGUMENT for a malformed request, UNAVAILABLE once the retries are spent)."""
        request = model_interface_pb2.inRequest(inp_dict_bytes=json.dumps(payload).encode("utf-8"))
        response = self.stub.EvaluateModel(request, timeout=self.timeout_s)
        return json.loads(response.response_bytes.decode("utf-8"))

    def health_check(self):
        """ModelService.HealthCheck: "SERVING" or "NOT_SERVING"."""
        from google.protobuf import empty_pb2
        return self.stub.HealthCheck(empty_pb2.Empty(), timeout=self.timeout_s).status

    def is_serving(self, service="", timeout_s=1.0):
        """One grpc.health.v1 Check without retries: True iff the server answers SERVING."""
        stub = health_pb2_grpc.HealthStub(self._raw_channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        except grpc.RpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    def wait_until_serving(self, timeout_s=60.0, service=""):
        """Polls grpc.health.v1 until SERVING; returns False if timeout_s passes first."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.is_serving(service, timeout_s=min(1.0, max(0.05, deadline - time.monotonic()))):
                return True
            time.sleep(0.05)
        return False

    def close(self):
        self._raw_channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def demo_request(rows=1, seed=None):
    """A request for the built-in demo model: inputs x_1..x_3 with `rows` values each, output
    y_1, five tunable parameters."""
    rng = random.Random(seed)
    return {
        "analyticSettings": {
            "modelParams": {"input_var_order": ["x_1", "x_2", "x_3"], "output_var_order": ["y_1"]},
            "tunableParams": {"bias_weight_array": [0.1, 0.2, 0.3, 0.4, 0.5]},
        },
        "inputs": {name: [rng.uniform(-1.0, 1.0) for _ in range(rows)]
                   for name in ("x_1", "x_2", "x_3")},
    }
