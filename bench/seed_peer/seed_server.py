#!/usr/bin/python3
"""The seed-built peer: a Python gRPC ModelService server built the way the seed's server is
(grpc's thread-pool server with 4 workers, JSON in and out, one forward pass per request), over
the same TorchScript model model_server serves. Run with Debian's /usr/bin/python3
(python3-grpcio, python3-torch).

Usage: seed_server.py --model demo.pt [--address 127.0.0.1:0] [--workers 4] [--torch-threads 1]
Prints "listening on port N" once it serves; stops on SIGTERM/SIGINT.
"""
import argparse
import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from concurrent import futures

import grpc
import torch

PROTO_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "protos")


def load_stubs():
    """Generates the Python stubs of the repo's protos into a temporary directory."""
    out = tempfile.mkdtemp(prefix="seed_peer_stubs_")
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    subprocess.run(["protoc", "-I", PROTO_DIR, "-I", "/usr/include", "--python_out=" + out,
                    "--grpc_out=" + out, "--plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin",
                    "model_interface.proto", "health.proto"], check=True)
    sys.path.insert(0, out)
    import health_pb2, health_pb2_grpc, model_interface_pb2, model_interface_pb2_grpc
    return health_pb2, health_pb2_grpc, model_interface_pb2, model_interface_pb2_grpc


health_pb2, health_pb2_grpc, model_pb2, model_pb2_grpc = load_stubs()


class ModelService(model_pb2_grpc.ModelServiceServicer):
    def __init__(self, model):
        self.model = model
        self.default_inputs = list(getattr(model, "input_var_order", []))
        self.default_outputs = list(getattr(model, "output_var_order", []))

    def EvaluateModel(self, request, context):
        try:
            payload = json.loads(request.inp_dict_bytes)
            settings = payload.get("analyticSettings", {})
            model_params = settings.get("modelParams", {})
            input_names = model_params.get("input_var_order", self.default_inputs)
            output_names = model_params.get("output_var_order", self.default_outputs)
            params = settings["tunableParams"]["bias_weight_array"]
            inputs = payload["inputs"]
            x = torch.tensor([inputs[name] for name in input_names], dtype=torch.float32).t()
            p = torch.tensor(params, dtype=torch.float32).expand(x.shape[0], len(params))
        except (ValueError, KeyError, TypeError) as error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad request: %r" % (error,))
        with torch.no_grad():
            y = self.model(x, p)
        if y.dim() == 1:
            y = y.unsqueeze(1)
        columns = y.t().tolist()
        prediction = {name: columns[i] for i, name in enumerate(output_names)}
        return model_pb2.outCalc(response_bytes=json.dumps({"prediction": prediction}).encode())

    def HealthCheck(self, request, context):
        return model_pb2.HCReply(status="SERVING")


class Health(health_pb2_grpc.HealthServicer):
    def Check(self, request, context):
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="TorchScript file")
    parser.add_argument("--address", default="0.0.0.0:13000")
    parser.add_argument("--workers", type=int, default=4, help="thread-pool size (the seed's: 4)")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()

    torch.set_num_threads(args.torch_threads)
    model = torch.jit.load(args.model).eval()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=args.workers))
    model_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(model), server)
    health_pb2_grpc.add_HealthServicer_to_server(Health(), server)
    port = server.add_insecure_port(args.address)
    server.start()
    print("listening on port %d" % port, flush=True)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop(5).wait()


if __name__ == "__main__":
    main()
