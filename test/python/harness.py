"""Shared pieces of the Python tests: stubs, ports, starting and waiting for model_server."""
import os
import socket
import subprocess
import sys
import time

import grpc

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def generate_stubs(out_dir):
    """Generates model_interface, health and Open Inference Protocol (grpc_predict_v2) stubs into
    out_dir and makes them importable."""
    subprocess.run(
        ["protoc", f"--python_out={out_dir}", f"--grpc_out={out_dir}",
         "--plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin",
         "-I", os.path.join(REPO, "protos"), "model_interface.proto", "health.proto",
         "grpc_predict_v2.proto", "triton_extensions.proto", "model_config.proto"],
        check=True)
    sys.path.insert(0, out_dir)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(binary, *args, metrics_address="127.0.0.1:0"):
    """Starts model_server with its log captured; returns the process. The metrics endpoint
    takes a free port unless told otherwise, so tests never collide on the default one."""
    return subprocess.Popen([binary, "--metrics-address", metrics_address, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_until_serving(channel, process=None, timeout_s=60):
    """Polls HealthCheck until SERVING; fails at once, with its log, if `process` exits, and
    after `timeout_s` whatever the server answers (unreachable, NOT_SERVING, ...)."""
    import model_interface_pb2_grpc
    from google.protobuf import empty_pb2
    stub = model_interface_pb2_grpc.ModelServiceStub(channel)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            status = stub.HealthCheck(empty_pb2.Empty(), timeout=1).status
            if status == "SERVING":
                return
            last = f"health says {status}"
        except grpc.RpcError as error:
            last = f"{error.code()}: {error.details()}"
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"model_server exited with {process.returncode}:\n"
                               f"{process.stdout.read()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"model_server not SERVING within {timeout_s} s; last: {last}")
        time.sleep(0.1)


def seed_payload(rows, params, names=("x_1", "x_2", "x_3")):
    """The seed's request dict for rows (lists of len(names) numbers) and a parameter vector."""
    return {
        "analyticSettings": {
            "modelParams": {"input_var_order": list(names), "output_var_order": ["y_1"],
                            "bias_weight_map": {"final": {"weights": [1, 2, 3, 4], "bias": [0]}}},
            "tunableParams": {"bias_weight_array": params}},
        "inputs": {name: [row[i] for row in rows] for i, name in enumerate(names)},
    }


def scrape(metrics_address):
    """The server's GET /metrics text."""
    import urllib.request
    with urllib.request.urlopen(f"http://{metrics_address}/metrics", timeout=5) as response:
        return response.read().decode()


def sample(text, name, labels=""):
    """The value of the sample `name{labels}` in Prometheus text (labels as rendered, without
    braces; "" for none), or None."""
    prefix = f"{name}{{{labels}}} " if labels else f"{name} "
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix):])
    return None
