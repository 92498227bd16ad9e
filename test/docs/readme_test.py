#!/usr/bin/python3
"""The README's commands, run as a newcomer would run them.

README.md marks each fenced code block with an HTML comment on the line before it:

    <!-- test: SCENARIO[,SCENARIO...] [cwd=repo] [python=debian|triton] [build=torch2] -->
                                                                run by this test
    <!-- covered-by: NAME -->                                   run by the ctest test NAME (or
                                                                by CI itself: NAME = ci)

The blocks of one scenario run in order, as one bash script: sh blocks as written, Python blocks
with Debian's python3 (python=debian) or the venv that has Triton's client (python=triton). A
`print(...)` line of a Python block whose comment gives a value (`print(x.shape)  # (3, 2)`)
asserts it: that text must be a line of what the block printed. A
command that ends in `&` starts a server: the script then waits until it serves (model_probe)
before the next line, and stops it (SIGTERM) at the end. Scenarios run in a fresh folder in which
build/, scripts/, clients/ and protos/ are the repository's (cwd=repo: in the repository itself),
and build-torch2/ too. A scenario marked build=torch2 uses the libtorch 2.x build
(build-torch2/): its ctest test is registered in that build only (--aoti), and it is skipped where
build-torch2/ has no server.

    readme_test.py --build BUILD_DIR --scenario NAME    run one scenario
    readme_test.py --build BUILD_DIR --check [--aoti]   every block is marked, every scenario and
                                                        covering test exists (build=torch2 ones
                                                        with --aoti: a build that serves .pt2),
                                                        and docs/OPERATIONS.md lists every flag
                                                        of --help

Exit 0 when it passed, 1 when it failed, 77 (skipped) when the venv a scenario needs is absent.
"""
import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
README = os.path.join(REPO, "README.md")
TRITON_PYTHON = os.path.join(REPO, "build-oip-peers", "venv", "bin", "python")
TORCH2 = os.path.join(REPO, "build-torch2")
SKIP = 77
MARK = re.compile(r"^<!--\s*(test|covered-by):\s*(\S+)((?:\s+\w+=\S+)*)\s*-->\s*$")
PORTS = (13000, 8002)  # the server's and the metrics' defaults, which the README uses


def blocks():
    """(kind, name, options, language, code, line) of every fenced block, in order; kind is
    None for a block without a mark."""
    lines = open(README, encoding="utf-8").read().splitlines()
    found = []
    i = 0
    while i < len(lines):
        if not lines[i].startswith("```"):
            i += 1
            continue
        language = lines[i][3:].strip()
        start = i
        i += 1
        code = []
        while i < len(lines) and not lines[i].startswith("```"):
            code.append(lines[i])
            i += 1
        i += 1
        mark = MARK.match(lines[start - 1]) if start > 0 else None
        kind, name, options = None, None, {}
        if mark:
            kind, name = mark.group(1), mark.group(2)
            options = dict(pair.split("=", 1) for pair in mark.group(3).split())
        found.append((kind, name, options, language, "\n".join(code), start + 1))
    return found


def script(scenario, build, probe, scripts_dir):
    """The bash script that runs `scenario`'s blocks (its Python blocks written into
    `scripts_dir`); the interpreters it needs."""
    parts = [
        "set -euo pipefail",
        "trap 'kill -TERM $(jobs -p) 2>/dev/null; wait' EXIT",
        "wait_serving() {",
        "  for _ in $(seq 900); do",
        f"    {probe} --address 127.0.0.1:{PORTS[0]} --timeout-ms 500 >/dev/null 2>&1 && return 0",
        "    sleep 0.2",
        "  done",
        "  echo 'the server did not come up' >&2; return 1",
        "}",
    ]
    pythons = set()
    for kind, name, options, language, code, line in blocks():
        if kind != "test" or scenario not in name.split(","):
            continue
        parts.append(f"# README.md:{line}")
        if language == "python":
            python = options.get("python", "debian")
            pythons.add(python)
            interpreter = "/usr/bin/python3" if python == "debian" else TRITON_PYTHON
            # From a file, not stdin: torch.jit.script reads the source of what it compiles.
            path = os.path.join(scripts_dir, f"readme_{line}.py")
            with open(path, "w", encoding="utf-8") as block:
                block.write(code + "\n")
            parts.append(f"{interpreter} {path} | tee {path}.out")
            continue
        for command in code.splitlines():
            parts.append(command)
            if command.rstrip().endswith("&"):
                parts.append("wait_serving")
    return "\n".join(parts) + "\n", pythons


def scenario_options(scenario):
    for kind, name, options, _, _, _ in blocks():
        if kind == "test" and scenario in name.split(",") and ("cwd" in options or
                                                                "build" in options):
            return options
    return {}


def run(scenario, build):
    probe = os.path.join(build, "docker", "probe", "model_probe")
    for port in PORTS:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                print(f"FAILED: port {port}, which the README's commands use, is taken")
                return 1
    with tempfile.TemporaryDirectory() as work, tempfile.TemporaryDirectory() as scripts_dir:
        text, pythons = script(scenario, build, probe, scripts_dir)
        if "triton" in pythons and not os.path.exists(TRITON_PYTHON):
            print(f"SKIPPED: {TRITON_PYTHON} is absent (scripts/setup_oip_peers.sh makes it)")
            return SKIP
        torch2_server = os.path.join(TORCH2, "build", "server", "model_server")
        if scenario_options(scenario).get("build") == "torch2" and not os.path.exists(torch2_server):
            print(f"SKIPPED: {torch2_server} is absent (scripts/build_torch2.sh makes it)")
            return SKIP
        cwd = REPO
        if scenario_options(scenario).get("cwd") != "repo":
            cwd = work
            os.symlink(build, os.path.join(work, "build"))
            for folder in ("scripts", "clients", "protos", "build-torch2"):
                os.symlink(os.path.join(REPO, folder), os.path.join(work, folder))
        print(text)
        result = subprocess.run(["bash", "-c", text], cwd=cwd, timeout=1800)
        print(f"scenario {scenario}: exit {result.returncode}")
        if result.returncode != 0:
            return 1
        return check_printed(scenario, scripts_dir)


PRINTED = re.compile(r"^\s*print\(.*\)\s+#\s*(.+?)\s*$")


def check_printed(scenario, scripts_dir):
    """The values the README's comments promise, against what each block printed."""
    failures = 0
    for kind, name, options, language, code, line in blocks():
        if kind != "test" or scenario not in name.split(",") or language != "python":
            continue
        with open(os.path.join(scripts_dir, f"readme_{line}.py.out"), encoding="utf-8") as out:
            printed = [text.strip() for text in out.read().splitlines()]
        for expected in (m.group(1) for m in map(PRINTED.match, code.splitlines()) if m):
            if expected not in printed:
                print(f"FAILED: README.md:{line}: the block printed no line \"{expected}\"")
                failures += 1
    return 1 if failures else 0


def check(build, aoti):
    """Every block is marked; every covering test is a ctest test; every scenario runs here."""
    problems = []
    tests = subprocess.run(["ctest", "--test-dir", build, "-N"], capture_output=True,
                           text=True, check=True).stdout
    registered = set(re.findall(r"Test\s+#\d+: (\S+)", tests))
    for kind, name, options, language, code, line in blocks():
        if language in ("text", "proto", "json", ""):
            continue  # output, definitions and payloads, not commands
        if kind is None:
            problems.append(f"README.md:{line}: a {language} block is neither run by this test "
                            f"(<!-- test: NAME -->) nor by a named one (<!-- covered-by: NAME -->)")
        elif kind == "covered-by" and name != "ci" and name not in registered:
            problems.append(f"README.md:{line}: covered by {name}, which is no ctest test")
        elif kind == "test" and (aoti or options.get("build") != "torch2"):
            for scenario in name.split(","):
                if f"readme_{scenario.replace('-', '_')}" not in registered:
                    problems.append(f"README.md:{line}: scenario {scenario} has no ctest test "
                                    f"readme_{scenario.replace('-', '_')}")
    help_text = subprocess.run([os.path.join(build, "server", "model_server"), "--help"],
                               capture_output=True, text=True, check=True).stdout
    operations = open(os.path.join(REPO, "docs", "OPERATIONS.md"), encoding="utf-8").read()
    for flag in re.findall(r"^\s+--([a-z0-9-]+)", help_text, re.MULTILINE):
        if flag != "help" and f"`--{flag}" not in operations:
            problems.append(f"docs/OPERATIONS.md does not describe --{flag}")
    for problem in problems:
        print(problem)
    print(f"README blocks and documented flags checked: {len(problems)} problem(s)")
    return 1 if problems else 0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--build", required=True)
    parser.add_argument("--scenario")
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--aoti", action="store_true", help="BUILD_DIR serves .pt2 packages")
    args = parser.parse_args()
    build = os.path.abspath(args.build)
    if args.check:
        return check(build, args.aoti)
    return run(args.scenario, build)


if __name__ == "__main__":
    sys.exit(main())
