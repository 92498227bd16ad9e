#!/usr/bin/python3
"""The TorchScript models of the repository tests, and PyTorch's own answers for them.

Runs with Debian's python3 (torch 1.13); the tests that drive the server through tritonclient run
in a venv without torch and call this as a subprocess:

  torch_models.py make KIND=PATH ...      write each model KIND (see MODELS) as TorchScript to
                                          PATH (random weights, seeded by KIND)
  torch_models.py run JOBS.json           for each [MODEL, IN.npz, OUT.npz] of the list in
                                          JOBS.json: run MODEL's forward on the arrays of IN.npz
                                          (arguments in the order of its "__order__" entry) and
                                          write each output to OUT.npz as OUTPUT__<i>, or under
                                          its key for a dict

BF16 arrays travel as their bit patterns in uint16 arrays named "<name>.bf16" (numpy has no
bfloat16); outputs of that type come back the same way.
"""
import json
import sys
from typing import Dict, List, Tuple

import numpy as np
import torch
from torch import Tensor, nn


class Cnn(nn.Module):
    """A small image classifier: [n, 3, 32, 32] -> [n, 10] logits."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16 * 8 * 8, 10)

    def forward(self, image: Tensor) -> Tensor:
        x = torch.max_pool2d(torch.relu(self.conv1(image)), 2)
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        # 8 x 8 already for 32 x 32 images; other sizes still give the linear layer its width.
        x = nn.functional.adaptive_avg_pool2d(x, [8, 8])
        return self.fc(torch.flatten(x, 1))


class Mixed(nn.Module):
    """FP32 features [n, 4] and INT64 ids [n, 3] -> (FP32 [n, 8], INT64 [n, 3])."""

    def __init__(self):
        super().__init__()
        self.dense = nn.Linear(4, 8)
        self.embedding = nn.Embedding(50, 8)

    def forward(self, features: Tensor, ids: Tensor) -> Tuple[Tensor, Tensor]:
        scores = self.dense(features) + self.embedding(ids).sum(1)
        return scores, ids * 7 + 1


class Dtypes(nn.Module):
    """One input of every wire type but FP32 (ranks 1 to 3 after the batch dimension, and a
    per-row scalar), each answered in its own type."""

    def forward(self, a: Tensor, b: Tensor, c: Tensor, d: Tensor, e: Tensor, f: Tensor, g: Tensor,
                h: Tensor, s: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor,
                                               Tensor, Tensor, Tensor]:
        return (a * 2.5 + 1.0, b * 3 - 1, c + 1, d - 1, e + 1, torch.logical_not(f), g * 2.0,
                h * 2.0, s * 10 + 1)


class Scale(nn.Module):
    """x [n, 2] FP32 -> x * factor: a model whose answers tell its version apart."""

    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x: Tensor) -> Tensor:
        return x * self.factor


class Slow(nn.Module):
    """x [n, 4] FP32 -> x + 1 after about `rounds` matrix products of 256 x 256: a model whose
    batches take a while, to have calls in flight."""

    def __init__(self, rounds: int):
        super().__init__()
        self.rounds = rounds
        self.weight = nn.Parameter(torch.eye(256) * 0.5, requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        m = torch.ones(256, 256)
        for _ in range(self.rounds):
            m = torch.tanh(torch.matmul(m, self.weight))
        return x + 1.0 + m[0, 0] * 0.0


class Unbatched(nn.Module):
    """No batch dimension: matrix [4, k] FP32 and a scalar INT64 -> (matrix * scalar, scalar + 1)
    (Triton's max_batch_size: 0; the scalar arrives as [1] reshaped to [])."""

    def forward(self, input0: Tensor, input1: Tensor) -> Tuple[Tensor, Tensor]:
        return input0 * input1.to(torch.float32), input1 + 1


class Dict_(nn.Module):
    """x [n, 3] FP32 -> {"sum": [n, 1], "doubled": [n, 3]}."""

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        return {"sum": x.sum(1, keepdim=True), "doubled": x * 2.0}


class ListOut(nn.Module):
    """INPUT__0 [n, 2] FP32, INPUT__1 [n, 2] FP32 -> [INPUT__0 - INPUT__1, INPUT__0 * INPUT__1]."""

    def forward(self, a: Tensor, b: Tensor) -> List[Tensor]:
        return [a - b, a * b]


class TinyResnet(nn.Module):
    """A stand-in for the tutorial's ResNet-50: [1, 3, 224, 224] -> [1, 1000] logits."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 7, stride=4, padding=3)
        self.fc = nn.Linear(8, 1000)

    def forward(self, x: Tensor) -> Tensor:
        x = nn.functional.adaptive_avg_pool2d(torch.relu(self.stem(x)), [1, 1])
        return self.fc(torch.flatten(x, 1))


class Pair(nn.Module):
    """forward(input0, input1) -> input0 + sign * input1 (sign tells the versions apart)."""

    def __init__(self, sign: float):
        super().__init__()
        self.sign = sign

    def forward(self, input0: Tensor, input1: Tensor) -> Tensor:
        return input0 + self.sign * input1


class DictModel(nn.Module):
    """INPUT__0 [n, 10] -> {"logits": [n, 20], "embeddings": [n, 5]}."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(10, 20)
        self.embed = nn.Linear(10, 5)

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        return {"logits": self.head(x), "embeddings": torch.tanh(self.embed(x))}


class Scalar(nn.Module):
    """[n] -> [n]: x * 2 + 1."""

    def forward(self, x: Tensor) -> Tensor:
        return x * 2.0 + 1.0


MODELS = {
    "cnn": Cnn,
    "mixed": Mixed,
    "dtypes": Dtypes,
    "scale1": lambda: Scale(1.0),
    "scale2": lambda: Scale(2.0),
    "scale3": lambda: Scale(3.0),
    "slow": lambda: Slow(150),
    "unbatched": Unbatched,
    "dict": Dict_,
    "list": ListOut,
    "tiny_resnet": TinyResnet,
    "pair_add": lambda: Pair(1.0),
    "pair_sub": lambda: Pair(-1.0),
    "dict_model": DictModel,
    "scalar": Scalar,
}


def make(kind, path):
    torch.manual_seed(sum(map(ord, kind)))
    module = MODELS[kind]()
    module.eval()
    torch.jit.save(torch.jit.script(module), path)


def to_torch(name, array):
    if name.endswith(".bf16"):
        return torch.from_numpy(array.astype(np.uint16).view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(array)


def to_numpy(name, tensor):
    if tensor.dtype == torch.bfloat16:
        return name + ".bf16", tensor.view(torch.int16).numpy().view(np.uint16)
    return name, tensor.numpy()


def run(path, inputs_path, outputs_path, modules):
    if path not in modules:
        modules[path] = torch.jit.load(path)
    module = modules[path]
    with np.load(inputs_path) as arrays:
        order = [str(name) for name in arrays["__order__"]]
        args = [to_torch(name, arrays[name]) for name in order]
    with torch.no_grad():
        result = module(*args)
    if isinstance(result, torch.Tensor):
        named = {"OUTPUT__0": result}
    elif isinstance(result, dict):
        named = result
    else:
        named = {f"OUTPUT__{i}": tensor for i, tensor in enumerate(result)}
    np.savez(outputs_path, **dict(to_numpy(name, tensor) for name, tensor in named.items()))


if __name__ == "__main__":
    torch.set_num_threads(1)
    if sys.argv[1] == "make":
        for job in sys.argv[2:]:
            make(*job.split("=", 1))
    elif sys.argv[1] == "run":
        with open(sys.argv[2]) as jobs:
            modules = {}
            for model, inputs, outputs in json.load(jobs):
                run(model, inputs, outputs, modules)
    else:
        sys.exit(f"unknown command {sys.argv[1]}")
