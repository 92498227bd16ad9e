#!/usr/bin/python3
"""Mirrors the seed's client: builds one demo query and sends it nRuns (1,000) times with a
progress bar, then prints the last prediction and latency percentiles.

    /usr/bin/python3 clients/python/example.py [--address HOST:PORT] [--runs 1000] [--rows 1]

The address defaults to localhost:$PORT_INTERNAL (else 13000). Calls retry like the seed's
(UNAVAILABLE, 5 attempts, 1 s -> 30 s backoff), so the server may still be starting.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model_client  # noqa: E402

try:
    from tqdm import tqdm  # Debian: python3-tqdm
except ImportError:
    def tqdm(iterable, total=None, width=40):
        """A plain text progress bar for when tqdm is not installed."""
        total = total if total is not None else len(iterable)
        for done, item in enumerate(iterable, start=1):
            yield item
            if done == total or done % max(1, total // 100) == 0:
                filled = width * done // total
                sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
                sys.stderr.flush()
        sys.stderr.write("\n")


def main():
    parser = argparse.ArgumentParser(description="Sends the demo query to model_server N times.")
    parser.add_argument("--address", default=model_client.default_address())
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=1, help="rows per request")
    args = parser.parse_args()

    query = model_client.demo_request(rows=args.rows, seed=0)
    latencies_ms = []
    with model_client.ModelClient(args.address) as client:
        for _ in tqdm(range(args.runs), total=args.runs):
            started = time.perf_counter()
            response = client.evaluate(query)
            latencies_ms.append((time.perf_counter() - started) * 1000.0)
    latencies_ms.sort()

    def percentile(p):
        return latencies_ms[min(len(latencies_ms) - 1, int(p / 100.0 * len(latencies_ms)))]

    print(f"last response: {response}")
    print(f"{args.runs} calls: p50 {percentile(50):.2f} ms, p99 {percentile(99):.2f} ms, "
          f"max {latencies_ms[-1]:.2f} ms")


if __name__ == "__main__":
    main()
