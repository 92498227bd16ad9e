"""Writes a TorchScript model with the demo model's signature (x_1..x_3, 5 tunable parameters,
y_1) whose forward is next to free: y = p0 + p1 * x_1. Serving it shows the server's own cost
per request, not the model's.

    /usr/bin/python3 bench/cost/make_free_model.py OUT.pt
"""
import sys
from typing import List

import torch


class FreeModel(torch.nn.Module):
    input_var_order: List[str]
    output_var_order: List[str]
    default_params: List[float]

    def __init__(self):
        super().__init__()
        self.input_var_order = ["x_1", "x_2", "x_3"]
        self.output_var_order = ["y_1"]
        self.default_params = [0.1, 0.2, 0.3, 0.4, 0.5]

    def forward(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        return params[:, 0:1] + params[:, 1:2] * x[:, 0:1]


if __name__ == "__main__":
    torch.jit.script(FreeModel()).save(sys.argv[1])
