"""The server: backend vs the in-process model: decisions/s on the same model and workload, side by side in one run.

Starts `transformers serve` (with and without its continuous batching) on a free loopback port, serving the same
model folder the in-process policy loads, and times one round of generate-mode decisions through each.

    .venv/bin/python bench/server.py                          # embedded SmolLM2, 16 agents, 64 new tokens
    .venv/bin/python bench/server.py --model tiny --agents 32

CPU numbers measure the overhead of HTTP and of the server's own scheduler, not what a GPU server gains: there the
server (vLLM, SGLang) batches every concurrent request and serves many simulation processes at once.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", str(min(4, os.cpu_count() or 1)))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402

from atp_graph.policies import DecisionRequest, HFPolicy, ServerPolicy, build_tiny_model  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(folder: Path, extra: list[str]) -> tuple[subprocess.Popen, str]:
    exe = shutil.which("transformers", path=str(Path(sys.executable).parent))
    if exe is None:
        sys.exit("the transformers CLI is missing: pip install -e '.[server]'")
    port = free_port()
    cmd = [exe, "serve", str(folder), "--device", "cpu", "--host", "127.0.0.1", "--port", str(port), *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ})
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc, f"http://127.0.0.1:{port}/v1"
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.kill()
    sys.exit("transformers serve did not come up")


def requests(n: int) -> list[DecisionRequest]:
    system = {"role": "system", "content": "You run a shop in a small town. Your supervisor requires Store A."}
    return [
        DecisionRequest(
            messages=(
                system,
                {
                    "role": "user",
                    "content": f'Shop {i}: Store A pays 10, Store B pays {20 + i}. Answer {{"choice": ...}}',
                },
            ),
            options=("Store A", "Store B"),
            target="Store B",
            seed=i,
        )
        for i in range(n)
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2", help="smollm2 | tiny | a model folder")
    ap.add_argument("--agents", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=64)
    args = ap.parse_args()
    if args.model == "smollm2":
        from atp_graph.policies.smollm2 import ensure_smollm2

        folder = ensure_smollm2()
    elif args.model == "tiny":
        folder = build_tiny_model(tempfile.mkdtemp())
    else:
        folder = Path(args.model)
    reqs = requests(args.agents)
    kw = dict(max_new_tokens=args.new_tokens, temperature=0.7)
    rows = []
    local = HFPolicy.from_pretrained(folder, batch_size=args.agents, **kw)
    local.decide_batch(reqs[:2])  # warm-up
    t = time.perf_counter()
    out = local.decide_batch(reqs)
    rows.append(("in-process HFPolicy (batched)", time.perf_counter() - t, sum(d.tokens or 0 for d in out)))
    del local
    for label, extra in (
        ("transformers serve", []),
        ("transformers serve --continuous-batching", ["--continuous-batching"]),
    ):
        proc, url = serve(folder, extra)
        try:
            remote = ServerPolicy(url, str(folder), max_concurrency=args.agents, **kw)
            remote.decide_batch(reqs[:2])  # warm-up (the server loads the model on its first request)
            t = time.perf_counter()
            out = remote.decide_batch(reqs)
            rows.append((f"server: {label}", time.perf_counter() - t, sum(d.tokens or 0 for d in out)))
            remote.close()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    print(f"model {args.model}, {args.agents} decisions, up to {args.new_tokens} new tokens, CPU")
    print(f"{'path':<52} {'seconds':>8} {'decisions/s':>11} {'tokens/s':>9} {'x in-process':>12}")
    base = args.agents / rows[0][1]
    for name, secs, tokens in rows:
        rate = args.agents / secs
        print(f"{name:<52} {secs:>8.2f} {rate:>11.2f} {tokens / secs:>9.1f} {rate / base:>12.2f}")


if __name__ == "__main__":
    main()
