#!/usr/bin/env python3
"""The layer rule of docs/ARCHITECTURE.md, checked: each folder's sources include only the
folders it may depend on, and only handlers/torch/ includes torch.

Every CMake target sees the repository root (includes are written from it), so the compiler
would accept an include that crosses the layers the wrong way; this script is what refuses it.

    scripts/check_layers.py            # exit 0, or 1 listing each include that breaks the rule

An include of the project's own headers names the folder it comes from ("batching/...",
"handlers/tensor.h"); a source file belongs to the deepest folder below that has a rule. Tests
(test/) may include anything.
"""
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The project's folders whose headers are included, as include prefixes.
PROJECT = ("base/", "platform/", "batching/", "handlers/", "repository/", "protocol/", "server/",
           "clients/", "bench/", "protos/", "docker/", "test/")

# What each folder's sources may include from the project, besides their own folder: a folder
# (and what is below it) or a single header. The arrows of docs/ARCHITECTURE.md.
ALLOWED = {
    "base": [],
    "platform": ["base"],
    "batching": ["base"],
    "handlers": ["batching", "base"],
    "handlers/torch": ["handlers", "batching", "base"],
    # The tensor vocabulary only (the header-only model_types target), not the handler library.
    "repository": ["handlers/tensor.h", "handlers/model_types.h", "protos"],
    "protocol": ["handlers/tensor.h", "handlers/model_types.h", "protos"],
    "server/metrics": ["base"],
    # The transport: everything below it, and the torch handler's torch-free options header
    # (for the flags and the loader that build handlers), never torch code itself.
    "server": ["server/metrics", "batching", "handlers", "protocol", "repository", "platform",
               "base", "protos", "handlers/torch/torch_handler.h"],
    "clients/cpp": ["protocol", "protos", "handlers/tensor.h", "handlers/model_types.h"],
    "bench": ["clients/cpp", "protocol", "protos", "platform", "handlers",
              "handlers/torch/torch_handler.h", "server/completion_queue.h",
              "server/unary_call.h", "repository", "server/torch_loader.h"],
    "docker/probe": ["protos"],
}

# Folders whose sources may include torch (<torch/...>, <ATen/...>, <c10/...>); tests are built
# as targets of their own, and a test that includes torch is built only with it.
TORCH_FOLDERS = ("handlers/torch/", "test/")

INCLUDE = re.compile(r'^\s*#\s*include\s+([<"])([^>"]+)[>"]')
SOURCES = (".cc", ".h", ".cu", ".cpp")


def layer_of(path):
    """The deepest folder with a rule that holds `path` (relative), or None."""
    best = None
    for folder in ALLOWED:
        if path.startswith(folder + "/") and (best is None or len(folder) > len(best)):
            best = folder
    return best


def allowed(layer, header):
    if header.startswith(layer + "/"):
        return True
    for entry in ALLOWED[layer]:
        if header == entry or (not entry.endswith(".h") and header.startswith(entry + "/")):
            return True
    return False


def main():
    problems = []
    for folder, _, files in os.walk(ROOT):
        rel_folder = os.path.relpath(folder, ROOT)
        if rel_folder.startswith(("build", ".git", "shared")):
            continue
        for name in files:
            if not name.endswith(SOURCES):
                continue
            path = os.path.normpath(os.path.join(rel_folder, name))
            layer = layer_of(path)
            torch_ok = path.startswith(TORCH_FOLDERS)
            with open(os.path.join(ROOT, path), encoding="utf-8", errors="replace") as source:
                for number, line in enumerate(source, 1):
                    match = INCLUDE.match(line)
                    if not match:
                        continue
                    bracket, header = match.groups()
                    closing = ">" if bracket == "<" else '"'
                    where = f"{path}:{number}: #include {bracket}{header}{closing}"
                    if bracket == "<" and header.split("/")[0] in ("torch", "ATen", "c10"):
                        if not torch_ok:
                            problems.append(f"{where}: only handlers/torch/ includes torch")
                        continue
                    if bracket == '"' and header.startswith("../"):
                        problems.append(f"{where}: write includes from the repository root")
                        continue
                    if bracket != '"' or layer is None or not header.startswith(PROJECT):
                        continue
                    if not allowed(layer, header):
                        problems.append(f"{where}: {layer}/ may not include this "
                                        f"(allowed: {', '.join(ALLOWED[layer]) or 'nothing'})")
    for problem in problems:
        print(problem)
    if problems:
        print(f"check_layers: {len(problems)} include(s) break the layer rule", file=sys.stderr)
        return 1
    print("check_layers: every include follows the layer rule")
    return 0


if __name__ == "__main__":
    sys.exit(main())
