"""Instructions per request, per thread, from a callgrind run with --separate-threads=yes.

    python3 bench/cost/thread_cost.py PREFIX REQUESTS [--json OUT]

PREFIX is the --callgrind-out-file given to valgrind; callgrind wrote PREFIX-01, PREFIX-02, ...
(one per thread). Each thread gets a role from the functions it ran (ROLES): a batch thread, a
codec-pool thread, one of our completion-queue threads, gRPC's executor, one of gRPC's own
pollers, or other. Prints one row per thread that ran
instrumented code, then the busiest thread and the total.
"""
import argparse
import glob
import json
import re
import sys

# (role, pattern of a function only that kind of thread runs), first match wins.
ROLES = [
    ("batch", re.compile(r"DynamicBatcher<.*>::Loop")),
    ("codec", re.compile(r"WorkPool::Loop")),
    ("cq", re.compile(r"EvaluateCall::Proceed|PollCompletionQueue")),
    ("grpc-executor", re.compile(r"grpc_core::Executor::ThreadMain")),
    # gRPC's own pollers (the sync health service's threads, the backup poller): network work
    # that is not matched to one of our calls.
    ("grpc-poller", re.compile(r"grpc_completion_queue_next|grpc_pollset_work")),
]


def thread_cost(path):
    """(instructions, role) of one per-thread callgrind file."""
    total = 0
    names = []
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("summary:") or line.startswith("totals:"):
                total = max(total, int(line.split()[1]))
            elif line.startswith(("fn=", "cfn=")) and " " in line:
                names.append(line.split(" ", 1)[1].strip())
    text = "\n".join(names)
    role = next((name for name, pattern in ROLES if pattern.search(text)), "other")
    return total, role


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("prefix")
    parser.add_argument("requests", type=int)
    parser.add_argument("--json")
    args = parser.parse_args()
    files = sorted(glob.glob(args.prefix + "-[0-9]*"))
    if not files:
        sys.exit(f"no {args.prefix}-NN files (was valgrind run with --separate-threads=yes?)")
    rows = []
    for path in files:
        total, role = thread_cost(path)
        if total > 0:
            rows.append({"thread": path.rsplit("-", 1)[1], "role": role,
                         "instructions": total, "per_request": total / args.requests})
    grand = sum(r["instructions"] for r in rows)
    busiest = max(rows, key=lambda r: r["instructions"])
    by_role = {}
    for r in rows:
        by_role[r["role"]] = by_role.get(r["role"], 0) + r["per_request"]
    print(f"{'thread':>6}  {'role':<14} {'instr/request':>14}")
    for r in rows:
        print(f"{r['thread']:>6}  {r['role']:<14} {r['per_request']:>14,.0f}")
    print(f"busiest: thread {busiest['thread']} ({busiest['role']}) {busiest['per_request']:,.0f}")
    print(f"total: {grand / args.requests:,.0f} instructions per request over {args.requests}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"requests": args.requests, "threads": rows, "by_role": by_role,
                       "busiest": busiest, "total_per_request": grand / args.requests}, f, indent=1)


if __name__ == "__main__":
    main()
