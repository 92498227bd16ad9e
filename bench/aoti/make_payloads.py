"""Open Inference Protocol requests of one row for the benchmark's models (bench/aoti/
export_models.py), serialized for model_bench --protocol oip --payload FILE. Debian's python3
(numpy, protobuf, grpcio-tools' stubs from protos/):

  /usr/bin/python3 bench/aoti/make_payloads.py --out DIR [--rows 1]

Writes DIR/<model>.oip for mlp (x [rows, 3], params [rows, 5]), cnn (image [rows, 3, 32, 32])
and two_input (features [rows, 4] FP32, ids [rows, 2] INT64).
"""
import argparse
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "test", "python"))
from harness import generate_stubs  # noqa: E402

STUBS = tempfile.TemporaryDirectory()
generate_stubs(STUBS.name)
import grpc_predict_v2_pb2 as oip  # noqa: E402


def request(model, inputs):
    message = oip.ModelInferRequest(model_name=model)
    for name, array in inputs.items():
        wire = {np.dtype("<f4"): "FP32", np.dtype("<i8"): "INT64"}[array.dtype]
        message.inputs.add(name=name, datatype=wire, shape=list(array.shape))
        message.raw_input_contents.append(array.tobytes())
    return message.SerializeToString()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--rows", type=int, default=1)
    args = parser.parse_args()
    rng = np.random.default_rng(23)
    rows = args.rows
    payloads = {
        "mlp": {"x": rng.normal(size=(rows, 3)).astype("<f4"),
                "params": rng.normal(size=(rows, 5)).astype("<f4")},
        "cnn": {"image": rng.normal(size=(rows, 3, 32, 32)).astype("<f4")},
        "two_input": {"features": rng.normal(size=(rows, 4)).astype("<f4"),
                      "ids": rng.integers(0, 8, size=(rows, 2)).astype("<i8")},
    }
    os.makedirs(args.out, exist_ok=True)
    for model, inputs in payloads.items():
        with open(os.path.join(args.out, f"{model}.oip"), "wb") as f:
            f.write(request(model, inputs))


if __name__ == "__main__":
    main()
