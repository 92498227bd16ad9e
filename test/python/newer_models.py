"""Saves two TorchScript models with the PyTorch running this script, and the answers its own
forward gives for a set of requests. Run with the pinned wheel's interpreter (libtorch 2.x):

  build-torch2/venv/bin/python3 test/python/newer_models.py --out DIR

Writes DIR/demo_style.pt, DIR/attention.pt and DIR/cases.json:
  {"torch": version, "models": {name: {"file", "inputs", "outputs",
   "requests": [{"rows": [[...]], "params": [...] or null, "expected": [[...]]}]}}}
"""
import argparse
import json
import os
import random
import warnings
from typing import List

# torch 2.x deprecates TorchScript (torch.jit.script/load: FutureWarning) and warns without numpy.
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
import torch  # noqa: E402


class DemoStyle(torch.nn.Module):
    """The README's model shape: x_1..x_3, five tunable parameters (index 0 = bias, 1..4 =
    weights of the final layer), y_1."""
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


class Attention(torch.nn.Module):
    """Self-attention over eight inputs read as four tokens of width two, through
    scaled_dot_product_attention: an operator libtorch 1.13 does not have (PyTorch >= 2.0)."""
    input_var_order: List[str]
    output_var_order: List[str]

    def __init__(self):
        super().__init__()
        self.input_var_order = [f"x_{i}" for i in range(1, 9)]
        self.output_var_order = ["y_1", "y_2"]
        self.qkv = torch.nn.Linear(2, 6)
        self.out = torch.nn.Linear(2, 2)

    def forward(self, x):
        tokens = x.reshape(x.shape[0], 4, 2)
        q, k, v = self.qkv(tokens).chunk(3, dim=-1)
        attended = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return self.out(attended.mean(dim=1))


def cases(path, module, num_params, rng):
    """Requests of 1..4 rows (each with its own parameters) and the saved file's answers."""
    loaded = torch.jit.load(path)
    requests = []
    for index in range(16):
        rows = [[rng.uniform(-2, 2) for _ in module.input_var_order]
                for _ in range(1 + index % 4)]
        params = [rng.uniform(-1, 1) for _ in range(num_params)] if num_params else None
        x = torch.tensor(rows, dtype=torch.float32)
        with torch.no_grad():
            y = (loaded(x, torch.tensor([params] * len(rows), dtype=torch.float32)) if params
                 else loaded(x))
        requests.append({"rows": rows, "params": params, "expected": y.tolist()})
    return {"file": path, "inputs": module.input_var_order, "outputs": module.output_var_order,
            "requests": requests}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    out = parser.parse_args().out
    torch.manual_seed(14)
    rng = random.Random(14)
    models = {}
    for name, module, num_params in [("demo_style", DemoStyle(), 5),
                                     ("attention", Attention(), 0)]:
        scripted = torch.jit.script(module.eval())
        path = os.path.join(out, f"{name}.pt")
        scripted.save(path)
        models[name] = cases(path, module, num_params, rng)
    # The attention model must really call the operator 1.13 lacks, or the test proves nothing.
    if "scaled_dot_product_attention" not in torch.jit.load(models["attention"]["file"]).code:
        raise SystemExit("attention.pt does not call scaled_dot_product_attention")
    with open(os.path.join(out, "cases.json"), "w") as f:
        json.dump({"torch": torch.__version__, "models": models}, f)


if __name__ == "__main__":
    main()
