"""Exports the .pt2 test models with the PyTorch running this script (the pinned wheel's, >= 2.6)
through scripts/export_model.py, and the answers the eager modules give. Run:

  build-torch2/venv/bin/python3 test/python/aoti_models.py --out DIR

Writes into DIR:
  mlp.pt2, mlp_v2.pt2  the README's demo-style (x, params) model, two sets of weights, with the
                       seed attributes (input_var_order, output_var_order, default_params);
                       output "y"
  mlp.pt               the first one as TorchScript, to serve beside its .pt2
  cnn.pt2              a small CNN, image FP32 [n, 3, 32, 32] -> OUTPUT__0 FP32 [n, 10]
  cnn_plain.pt2        the same CNN exported with torch.export and aoti_compile_and_package
                       alone: no model_server metadata
  two_input.pt2        features FP32 [n, 4] and ids INT64 [n, 2] -> scores FP32 [n, 3],
                       total INT64 [n]
  static.pt2           a model exported with a static batch of 1 (no Dim): to be refused
  cases.json           {"torch", "isa", "compile_seconds": {...}, "models": {name: {"inputs":
                       {name: {"type", "shape", "file"}}, "outputs": {...}}}}: 64 rows per
                       input and the eager module's outputs for them, as raw little-endian
                       files in DIR (the test's Python has no torch 2.x)
Each package is compiled once; a test run reuses them for every case.
"""
import argparse
import json
import os
import sys
import time
import warnings
from typing import List

warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
import torch  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "scripts"))
import export_model  # noqa: E402

ROWS = 64  # the largest batch the tests form; also each package's max_batch


class DemoStyle(torch.nn.Module):
    """x_1..x_3 and five tunable parameters (index 0 = bias, 1..4 = weights of the final
    layer) -> y_1, as the README's TorchScript example."""
    input_var_order: List[str]
    output_var_order: List[str]
    default_params: List[float]

    def __init__(self):
        super().__init__()
        self.input_var_order = ["x_1", "x_2", "x_3"]
        self.output_var_order = ["y_1"]
        self.default_params = [0.1, 0.2, 0.3, 0.4, 0.5]
        self.hidden = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(),
                                          torch.nn.Linear(16, 4), torch.nn.Tanh())

    def forward(self, x, params):
        return params[:, 0:1] + (self.hidden(x) * params[:, 1:5]).sum(dim=1, keepdim=True)


class Cnn(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1))
        self.head = torch.nn.Linear(16, 10)

    def forward(self, image):
        return self.head(self.features(image).flatten(1))


class TwoInput(torch.nn.Module):
    """Float features and int64 ids in; float scores and an int64 total out (a dict)."""

    def __init__(self):
        super().__init__()
        self.embedding = torch.nn.Embedding(8, 3)
        self.linear = torch.nn.Linear(4, 3)

    def forward(self, features, ids):
        # Each input goes into a layer first, so that the server reads the TorchScript file's
        # inputs too (bench/aoti/export_models.py saves one).
        scores = self.linear(features) + self.embedding(ids).sum(dim=1)
        return {"scores": scores, "total": ids.sum(dim=1) * 3 + 1}


class StaticBatch(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(3, 1)

    def forward(self, x):
        return self.linear(x)


def wire(tensor):
    return export_model.WIRE_TYPES[tensor.dtype]


def save_tensor(out, name, tensor):
    """Writes `tensor` as raw little-endian bytes (no numpy in this venv)."""
    path = os.path.join(out, name)
    with open(path, "wb") as f:
        f.write(bytes(tensor.contiguous().view(torch.uint8).flatten().tolist()))
    return {"type": wire(tensor), "shape": list(tensor.shape), "file": name}


def record(out, name, module, inputs, output_names=None):
    """The inputs and the eager module's outputs, named as the package names them."""
    with torch.no_grad():
        result = module(*inputs.values())
    outputs = export_model._flat_outputs(result, output_names)
    return {
        "inputs": {k: save_tensor(out, f"{name}.in.{k}", v) for k, v in inputs.items()},
        "outputs": {k: save_tensor(out, f"{name}.out.{k}", v) for k, v in outputs},
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    out = parser.parse_args().out
    torch.manual_seed(23)
    cases = {"torch": torch.__version__, "compile_seconds": {}, "models": {}}

    def export(name, module, examples, **kwargs):
        started = time.monotonic()
        metadata = export_model.export(module, examples, os.path.join(out, f"{name}.pt2"),
                                       max_batch=ROWS, **kwargs)
        cases["compile_seconds"][name] = round(time.monotonic() - started, 1)
        cases["isa"] = metadata.get("AOTI_CPU_ISA", "")

    mlp = DemoStyle().eval()
    mlp_inputs = {"x": torch.randn(ROWS, 3), "params": torch.randn(ROWS, 5)}
    # Output "y", as the TorchScript file's seed signature names it: the two serve alike.
    export("mlp", mlp, mlp_inputs, output_names=["y"])
    cases["models"]["mlp"] = record(out, "mlp", mlp, mlp_inputs, ["y"])
    torch.jit.script(mlp).save(os.path.join(out, "mlp.pt"))

    mlp_v2 = DemoStyle().eval()  # other random weights, same signature
    export("mlp_v2", mlp_v2, mlp_inputs, output_names=["y"])
    cases["models"]["mlp_v2"] = record(out, "mlp_v2", mlp_v2, mlp_inputs, ["y"])

    cnn = Cnn().eval()
    cnn_inputs = {"image": torch.randn(ROWS, 3, 32, 32)}
    export("cnn", cnn, cnn_inputs)
    cases["models"]["cnn"] = record(out, "cnn", cnn, cnn_inputs)

    # The same CNN exported without this project's helper: no model_server metadata, so the
    # server reads the package's compiled input checks (and pads the batches below their
    # minimum).
    started = time.monotonic()
    plain = torch.export.export(cnn, (cnn_inputs["image"],), dynamic_shapes={
        "image": {0: torch.export.Dim("batch", min=1, max=ROWS)}})
    torch._inductor.aoti_compile_and_package(plain,
                                             package_path=os.path.join(out, "cnn_plain.pt2"))
    cases["compile_seconds"]["cnn_plain"] = round(time.monotonic() - started, 1)

    two = TwoInput().eval()
    two_inputs = {"features": torch.randn(ROWS, 4), "ids": torch.randint(0, 8, (ROWS, 2))}
    export("two_input", two, two_inputs)
    cases["models"]["two_input"] = record(out, "two_input", two, two_inputs)

    # No Dim: torch.export specialises the batch dimension to the example's 1 row.
    started = time.monotonic()
    static = torch.export.export(StaticBatch().eval(), (torch.randn(1, 3),))
    torch._inductor.aoti_compile_and_package(static,
                                             package_path=os.path.join(out, "static.pt2"))
    cases["compile_seconds"]["static"] = round(time.monotonic() - started, 1)

    with open(os.path.join(out, "cases.json"), "w") as f:
        json.dump(cases, f)


if __name__ == "__main__":
    main()
