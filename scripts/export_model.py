#!/usr/bin/env python3
"""Exports a PyTorch model for model_server the way current PyTorch deploys to C++: torch.export
with a dynamic batch dimension, compiled by AOTInductor into a .pt2 package that carries what the
server needs to serve it with no config file (metadata read by the server at load time):

  model_server.inputs / model_server.outputs   "x FP32 [3]; params FP32 [5]" (per row, without
                                                the batch dimension)
  model_server.min_batch_size / max_batch_size  the batch sizes the package accepts
  model_server.input_var_order, output_var_order, default_params, seed_columns, seed_params,
  seed_output                                   the seed protocol's mapping (as the config
                                                parameters of the same names say it)

From Python (run with a PyTorch >= 2.6; this project's is build-torch2/venv/bin/python):

  import torch, export_model
  export_model.export(model, {"x": torch.randn(4, 3), "params": torch.randn(4, 5)},
                      "model.pt2", max_batch=256)

or from the shell, with a function that makes the model and one example row per input:

  build-torch2/venv/bin/python scripts/export_model.py --model my_models.py:make_mlp \\
      --input x:FP32:3 --input params:FP32:5 --max-batch 256 --out model.pt2

The example inputs carry a batch dimension first; every other dimension stays as the example has
it. The package is compiled for this machine's CPU (-march=native; AVX-512 where it has it;
--march x86-64-v3 --simdlen 256 for any AVX2 machine) or, with --device cuda, its GPU; serve it on
the same kind of machine (the server refuses a package whose instruction sets its CPU lacks). It is checked against the
module's own forward at batch sizes 1, 7 and max_batch before this script returns.
"""
import argparse
import ctypes
import importlib.util
import inspect
import os
import sys
import warnings

warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
import torch  # noqa: E402

# The wire names of the tensor types the server carries (handlers/tensor.h).
WIRE_TYPES = {
    torch.bool: "BOOL", torch.uint8: "UINT8", torch.int8: "INT8", torch.int16: "INT16",
    torch.int32: "INT32", torch.int64: "INT64", torch.float16: "FP16", torch.bfloat16: "BF16",
    torch.float32: "FP32", torch.float64: "FP64",
}
TORCH_TYPES = {name: dtype for dtype, name in WIRE_TYPES.items()}
SEED_ATTRIBUTES = ("input_var_order", "output_var_order", "default_params")


def _promote_libtorch():
    """Makes libtorch's symbols global. Python loads libtorch without RTLD_GLOBAL, so
    Inductor's probe for the CPU's vector instructions (a test library needing the Sleef
    functions libtorch_cpu carries) fails and the package would be compiled without SIMD
    (metadata AOTI_CPU_ISA=INVALID_VEC_ISA), and a package loaded back into this process for
    the check below would not find libtorch's aoti_torch_* functions."""
    library = os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so")
    if os.path.exists(library):
        ctypes.CDLL(library, mode=ctypes.RTLD_GLOBAL | os.RTLD_NOLOAD)


def _spec_text(specs):
    """ "x FP32 [3]; params FP32 [5]" for [(name, dtype, per-row shape)]."""
    return "; ".join(f"{name} {WIRE_TYPES[dtype]} [{', '.join(str(d) for d in dims)}]"
                     for name, dtype, dims in specs)


def _check_name(name, what):
    if not name or any(not (c.isalnum() or c in "_-.") for c in name):
        raise ValueError(f"{what} name {name!r}: use letters, digits, '_', '-' and '.'")


def _flat_outputs(result, output_names):
    """The forward's outputs in the order AOTInductor returns them, with their names: a tensor
    (OUTPUT__0), a tuple or list (OUTPUT__<i>) or a dict (its keys); output_names, when given,
    names them instead."""
    if isinstance(result, torch.Tensor):
        pairs = [("OUTPUT__0", result)]
    elif isinstance(result, (tuple, list)):
        pairs = [(f"OUTPUT__{i}", t) for i, t in enumerate(result)]
    elif isinstance(result, dict):
        pairs = list(result.items())
    else:
        raise TypeError(f"forward returned {type(result).__name__}; return a tensor, a tuple or "
                        "list of tensors, or a dict of tensors")
    for name, tensor in pairs:
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"output {name} is a {type(tensor).__name__}, not a tensor")
    if output_names is not None:
        if len(output_names) != len(pairs):
            raise ValueError(f"{len(output_names)} output names for {len(pairs)} outputs")
        pairs = [(name, tensor) for name, (_, tensor) in zip(output_names, pairs)]
    return pairs


def _example_batch(example, rows):
    """`example` with `rows` rows: its rows repeated (integer ids stay valid ids)."""
    repeat = (rows + example.shape[0] - 1) // example.shape[0]
    return example.repeat(repeat, *([1] * (example.dim() - 1)))[:rows].contiguous()


def _assert_close(name, rows, served, expected):
    if served.dtype != expected.dtype or served.shape != expected.shape:
        raise RuntimeError(f"the package's output {name} at batch {rows} is {served.dtype} "
                           f"{list(served.shape)}; the module's {expected.dtype} "
                           f"{list(expected.shape)}")
    if expected.is_floating_point():
        close = torch.allclose(served.float(), expected.float(), rtol=1e-4, atol=1e-5)
    else:
        close = torch.equal(served, expected)
    if not close:
        raise RuntimeError(f"the package's output {name} at batch {rows} differs from the "
                           "module's forward")


def export(module, example_inputs, path, max_batch=4096, output_names=None, seed=None,
           device="cpu", check=True, inductor_configs=None):
    """Exports `module` (an nn.Module in eval mode) to the AOTInductor package `path` for
    model_server and returns the metadata written into it.

    example_inputs: {argument name of forward: example tensor [rows >= 2, ...]}, one entry per
      argument of forward (its names; any order).
    max_batch: the largest batch the package accepts (>= 2); the server never builds a larger one.
    output_names: names of the outputs in order (default: OUTPUT__<i>, or a dict's keys).
    seed: the seed protocol's mapping ({"input_var_order": [...], "output_var_order": [...],
      "default_params": [...], "seed_columns": "x", "seed_params": "params",
      "seed_output": "OUTPUT__0"}); by default the module's own attributes of the first three
      names, where it has them.
    check: loads the package back and compares it with the module at batch 1, 7 and max_batch.
    inductor_configs: more AOTInductor settings, e.g. {"cpp.march": "x86-64-v3"} for a package
      that runs on any AVX2 machine rather than this machine's CPU (-march=native).
    """
    _promote_libtorch()
    module = module.eval()
    if max_batch < 2:
        raise ValueError("max_batch must be at least 2: a package of one batch size does not batch")
    parameters = [name for name, p in inspect.signature(module.forward).parameters.items()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if sorted(parameters) != sorted(example_inputs):
        raise ValueError(f"forward takes {parameters}; example inputs given for "
                         f"{sorted(example_inputs)}")
    examples = []
    for name in parameters:
        _check_name(name, "input")
        tensor = example_inputs[name]
        if tensor.dtype not in WIRE_TYPES:
            raise TypeError(f"input {name} has type {tensor.dtype}, which no protocol carries")
        if tensor.dim() < 1 or tensor.shape[0] < 2:
            raise ValueError(f"example input {name} needs a batch dimension of at least 2 rows "
                             f"(PyTorch specialises sizes 0 and 1); it is {list(tensor.shape)}")
        examples.append(tensor.to(device))
    rows = examples[0].shape[0]
    if any(t.shape[0] != rows for t in examples):
        raise ValueError("the example inputs differ in their number of rows")

    batch = torch.export.Dim("batch", min=1, max=max_batch)
    dynamic_shapes = {name: {0: batch} for name in parameters}
    with torch.no_grad():
        program = torch.export.export(module, tuple(examples), dynamic_shapes=dynamic_shapes)
        outputs = _flat_outputs(module(*examples), output_names)
    for name, tensor in outputs:
        _check_name(name, "output")
        if tensor.dim() < 1 or tensor.shape[0] != rows:
            raise ValueError(f"output {name} has shape {list(tensor.shape)}: no batch dimension "
                             f"of {rows} rows first")
        if tensor.dtype not in WIRE_TYPES:
            raise TypeError(f"output {name} has type {tensor.dtype}, which no protocol carries")

    metadata = {
        "model_server.inputs": _spec_text(
            [(n, t.dtype, list(t.shape[1:])) for n, t in zip(parameters, examples)]),
        "model_server.outputs": _spec_text(
            [(n, t.dtype, list(t.shape[1:])) for n, t in outputs]),
        "model_server.min_batch_size": "1",
        "model_server.max_batch_size": str(max_batch),
    }
    if seed is None:
        seed = {key: getattr(module, key) for key in SEED_ATTRIBUTES
                if isinstance(getattr(module, key, None), (list, tuple))}
    for key, value in seed.items():
        if key not in SEED_ATTRIBUTES + ("seed_columns", "seed_params", "seed_output"):
            raise ValueError(f"unknown seed key {key}")
        metadata[f"model_server.{key}"] = (
            ",".join(repr(float(v)) if key == "default_params" else str(v) for v in value)
            if isinstance(value, (list, tuple)) else str(value))

    path = os.path.abspath(path)
    configs = dict(inductor_configs or {})
    configs["aot_inductor.metadata"] = metadata
    written = torch._inductor.aoti_compile_and_package(program, package_path=path,
                                                       inductor_configs=configs)
    if check:
        loaded = torch._inductor.aoti_load_package(written)
        for check_rows in sorted({r for r in (1, 7, max_batch) if r <= max_batch}):
            inputs = [_example_batch(t, check_rows) for t in examples]
            with torch.no_grad():
                expected = _flat_outputs(module(*inputs), output_names)
                served = loaded(*inputs)
            served = [served] if isinstance(served, torch.Tensor) else list(
                served.values() if isinstance(served, dict) else served)
            for (name, want), got in zip(expected, served):
                _assert_close(name, check_rows, got, want)
        metadata = dict(loaded.get_metadata())
    return metadata


def _load_factory(spec):
    """The callable `name` in the Python file of "FILE.py:name"."""
    file, _, name = spec.rpartition(":")
    if not file or not name:
        raise SystemExit(f"--model {spec}: give FILE.py:FUNCTION")
    loader = importlib.util.spec_from_file_location("exported_model_source", file)
    if loader is None:
        raise SystemExit(f"--model {spec}: cannot import {file}")
    source = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(source)
    return getattr(source, name)


def _example(spec, rows):
    """An example input from NAME:TYPE:D1xD2 (random values; integers in [0, 8))."""
    try:
        name, wire, dims = spec.split(":")
        dtype = TORCH_TYPES[wire]
        shape = [rows] + [int(d) for d in dims.split("x") if d]
    except (ValueError, KeyError):
        raise SystemExit(f"--input {spec}: give NAME:TYPE:DIMS, e.g. x:FP32:3 or img:FP32:3x32x32 "
                         f"(types {', '.join(TORCH_TYPES)})")
    if dtype.is_floating_point:
        return name, torch.randn(shape).to(dtype)
    if dtype == torch.bool:
        return name, torch.randint(0, 2, shape).bool()
    return name, torch.randint(0, 8, shape).to(dtype)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="FILE.py:FUNCTION returning the module")
    parser.add_argument("--input", action="append", required=True,
                        help="NAME:TYPE:DIMS per argument of forward, DIMS without the batch "
                             "dimension (x:FP32:3, image:FP32:3x32x32, ids:INT64:8)")
    parser.add_argument("--max-batch", type=int, default=4096)
    parser.add_argument("--output-name", action="append", help="names of the outputs, in order")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--march", help="the CPU to compile for (gcc's -march), e.g. x86-64-v3 "
                                        "for any AVX2 machine; default: this machine's (native)")
    parser.add_argument("--simdlen", type=int, help="vector width in bits for the kernels "
                                                    "(256: AVX2 even on an AVX-512 machine)")
    parser.add_argument("--out", required=True, help="the .pt2 file to write")
    args = parser.parse_args()
    module = _load_factory(args.model)()
    examples = dict(_example(spec, 4) for spec in args.input)
    configs = {}
    if args.march:
        configs["cpp.march"] = args.march
    if args.simdlen:
        configs["cpp.simdlen"] = args.simdlen
    metadata = export(module, examples, args.out, max_batch=args.max_batch,
                      output_names=args.output_name, device=args.device,
                      inductor_configs=configs)
    for key in sorted(metadata):
        print(f"{key}: {metadata[key]}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())
