"""The benchmark's models, each as TorchScript (model.pt, loadable by libtorch 1.13 and 2.x) and as
an AOTInductor package (model.pt2, scripts/export_model.py), written as a model repository for
model_server and model_bench. Run with the wheel's PyTorch:

  build-torch2/venv/bin/python3 bench/aoti/export_models.py --out DIR [--valgrind]

DIR/<format>/<model>/1/model.{pt,pt2} with <format> torchscript or aoti and <model> mlp (the
demo-style (x, params) MLP), cnn ([n, 3, 32, 32] -> [n, 10]) and two_input (FP32 [n, 4] and INT64
[n, 2] -> a dict). Packages take batches of 1 to --max-batch rows (default 1024). --valgrind
compiles the packages for AVX2 (x86-64-v3, 256-bit vectors), which valgrind can run, instead of
this machine's CPU.
"""
import argparse
import os
import sys
import warnings

warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
import torch  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "scripts"))
sys.path.insert(0, os.path.join(REPO, "test", "python"))
import export_model  # noqa: E402
from aoti_models import Cnn, DemoStyle, TwoInput  # noqa: E402  (the tests' models)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--max-batch", type=int, default=1024)
    parser.add_argument("--valgrind", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(23)
    configs = {"cpp.march": "x86-64-v3", "cpp.simdlen": 256} if args.valgrind else {}
    models = {
        "mlp": (DemoStyle(), {"x": torch.randn(4, 3), "params": torch.randn(4, 5)}, ["y"]),
        "cnn": (Cnn(), {"image": torch.randn(4, 3, 32, 32)}, None),
        "two_input": (TwoInput(), {"features": torch.randn(4, 4),
                                   "ids": torch.randint(0, 8, (4, 2))}, None),
    }
    for name, (module, examples, output_names) in models.items():
        module.eval()
        for kind in ("torchscript", "aoti"):
            os.makedirs(os.path.join(args.out, kind, name, "1"), exist_ok=True)
        torch.jit.script(module).save(os.path.join(args.out, "torchscript", name, "1",
                                                   "model.pt"))
        metadata = export_model.export(
            module, examples, os.path.join(args.out, "aoti", name, "1", "model.pt2"),
            max_batch=args.max_batch, output_names=output_names, inductor_configs=configs)
        print(f"{name}: CPU ISA {metadata.get('AOTI_CPU_ISA')}", flush=True)


if __name__ == "__main__":
    main()
