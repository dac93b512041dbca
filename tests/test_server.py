"""The ``server:`` backend against real servers on the loopback interface.

Generate mode, explore and diffuse run against ``transformers serve`` (transformers' own OpenAI-compatible server)
serving the tiny model. ``transformers serve`` returns no prompt log-probabilities, so score mode is checked twice:
its refusal there, and its p values against a minimal vLLM-style server written below (the same tiny model behind
``/v1/chat/completions`` with ``prompt_logprobs`` and ``continue_final_message``, as vLLM answers them), compared
with the in-process model. That server also plays a flaky and a broken server for the retry and error tests.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from atp_graph.policies import DecisionRequest, HFPolicy, ModelError, ServerPolicy, load_policy

OPTIONS = ("Store A", "Store B")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def requests(n: int) -> list[DecisionRequest]:
    def conv(a: int, order: tuple[str, str]) -> tuple:
        ask = f'Round 1, shop {a}. Answer {{"choice": "{order[0]}"}} or {{"choice": "{order[1]}"}}'
        return ({"role": "system", "content": "You run a shop."}, {"role": "user", "content": ask})

    return [
        DecisionRequest(messages=conv(a, OPTIONS), swapped=conv(a, OPTIONS[::-1]), options=OPTIONS, target="Store B")
        for a in range(n)
    ]


# -- transformers serve --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``transformers serve`` on a free loopback port serving the tiny model; yields its ``server:`` spec."""
    exe = shutil.which("transformers", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("the transformers CLI is not installed")
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        pytest.skip("transformers serve needs the server extra: pip install -e '.[server]'")
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    cmd = [exe, "serve", str(tiny_model_dir), "--device", "cpu", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"transformers serve exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"transformers serve did not come up in 180 s:\n{log.read_text()[-2000:]}")
            time.sleep(0.5)
        yield f"server:http://127.0.0.1:{port}/v1#{tiny_model_dir}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_generate_over_transformers_serve(served: str) -> None:
    policy = load_policy(served, max_new_tokens=6, batch_size=3)
    assert isinstance(policy, ServerPolicy) and policy.name == served
    decisions = policy.decide_batch(requests(4))
    assert len(decisions) == 4
    for d in decisions:
        assert isinstance(d.text, str) and d.p_target is None
        assert d.finish in ("stop", "length") and isinstance(d.tokens, int) and 0 < d.tokens <= 6
        assert (d.finish == "length") == (d.tokens == 6)
    assert len(policy.complete_batch([r.messages for r in requests(2)], max_new_tokens=3)) == 2


def test_explore_and_diffuse_over_transformers_serve(served: str, tmp_path: Path) -> None:
    from atp_graph import DiffuseConfig, ExploreConfig, run_diffuse, run_explore

    def loader() -> Any:  # what the CLI does with --model server:... --max-new-tokens 24
        return load_policy(served, max_new_tokens=24)

    explore = run_explore(
        ExploreConfig(model=served, decision="generate", rounds=2, limit=2),
        policy=loader,
        out=tmp_path / "e",
        progress=False,
    )
    diffuse = run_diffuse(
        DiffuseConfig(model=served, decision="generate", agents=4, topology="complete", rounds=2),
        policy=loader,
        out=tmp_path / "d",
        progress=False,
    )
    for result, n in ((explore, 4), (diffuse, 8)):
        assert len(result.events) == n and {e.round for e in result.events} == {1, 2}
        assert all(e.finish in ("stop", "length") and e.tokens for e in result.events)
        assert json.loads((result.path / "config.json").read_text())  # a complete run folder
    assert (tmp_path / "e" / "table.md").exists() and (tmp_path / "d" / "table.md").exists()


def test_transformers_serve_refuses_score_mode_clearly(served: str) -> None:
    policy = load_policy(served)
    with pytest.raises(ModelError, match="prompt_logprobs") as err:
        policy.decide_batch(requests(2), mode="score")
    assert "\n" not in str(err.value) and "--decision generate" in str(err.value)


def test_unknown_model_is_one_line(served: str) -> None:
    url = served.split("#")[0]
    with pytest.raises(ModelError, match="does not serve model 'nope'; it serves: ") as err:
        load_policy(f"{url}#nope")
    assert "\n" not in str(err.value)


def test_unreachable_server_is_one_line() -> None:
    spec = f"server:http://127.0.0.1:{free_port()}/v1#m"
    t = time.monotonic()
    with pytest.raises(ModelError, match="cannot reach the server at http://127.0.0.1:.* after 3 tries") as err:
        load_policy(spec, retries=3, backoff=0.01)
    assert "\n" not in str(err.value) and time.monotonic() - t < 30


@pytest.mark.parametrize("spec", ["server:", "server:localhost:8000", "server:ftp://x/v1#m"])
def test_bad_server_specs(spec: str) -> None:
    with pytest.raises(ModelError):
        load_policy(spec)


# -- a minimal vLLM-style server (score mode, flaky and broken servers) ---------------------------------------------


class VLLMStyle(BaseHTTPRequestHandler):
    """``/v1/models`` and ``/v1/chat/completions`` with vLLM's ``prompt_logprobs``/``continue_final_message``
    computed by the real tiny model; ``/flaky/v1`` fails with 503 twice first; ``/broken/v1`` answers nonsense;
    ``/short/v1`` refuses a ``max_tokens`` beyond its context, as vLLM does."""

    policy: HFPolicy
    lock = threading.Lock()
    calls: dict[str, int] = {}
    inflight = 0
    most = 0

    def log_message(self, *args: Any) -> None:
        pass

    def reply(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        self.reply(200, {"object": "list", "data": [{"id": "tiny", "object": "model"}]})

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        cls = type(self)
        with cls.lock:
            cls.calls[self.path] = cls.calls.get(self.path, 0) + 1
            count = cls.calls[self.path]
            cls.inflight += 1
            cls.most = max(cls.most, cls.inflight)
        try:
            time.sleep(0.01)
            if self.path.startswith("/broken/"):
                return self.reply(200, {"text": "hello"})
            if self.path.startswith("/flaky/") and count <= 2:
                return self.reply(503, {"error": {"message": "warming up"}})
            if self.path.startswith("/short/") and body.get("max_tokens", 0) > 2000:
                message = "This model's maximum context length is 2048 tokens. However, you requested 32800 tokens."
                return self.reply(400, {"error": {"message": message}})
            if "prompt_logprobs" in body:
                return self.reply(200, self.score(body))
            message = {"role": "assistant", "content": 'I pick {"choice": "Store B"}'}
            usage = {"prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16}
            return self.reply(200, {"choices": [{"message": message, "finish_reason": "stop"}], "usage": usage})
        finally:
            with cls.lock:
                cls.inflight -= 1

    def score(self, body: dict[str, Any]) -> dict[str, Any]:
        tok, model = self.policy.tokenizer, self.policy.model
        assert body["continue_final_message"] and not body["add_generation_prompt"]
        text = tok.apply_chat_template(body["messages"], continue_final_message=True, tokenize=False)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        with self.lock, torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].double(), -1)
        entries: list[Any] = [None]
        for k in range(1, len(ids)):
            entries.append(
                {str(ids[k]): {"logprob": float(logp[k - 1, ids[k]]), "decoded_token": tok.decode([ids[k]])}}
            )
        return {"choices": [{"message": {"content": "x"}, "finish_reason": "length"}], "prompt_logprobs": entries}


@pytest.fixture(scope="module")
def vllm_style(tiny_model_dir: Path) -> Iterator[str]:
    VLLMStyle.policy = HFPolicy.from_pretrained(tiny_model_dir)
    server = ThreadingHTTPServer(("127.0.0.1", 0), VLLMStyle)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_score_mode_matches_the_local_model(vllm_style: str) -> None:
    policy = load_policy(f"server:{vllm_style}/v1", batch_size=4)
    assert policy.name == f"server:{vllm_style}/v1#tiny"  # the server's only model
    reqs = requests(3)
    remote = policy.decide_batch(reqs, mode="score")
    local = VLLMStyle.policy.decide_batch(reqs, mode="score")
    for r, loc in zip(remote, local, strict=True):
        assert r.p_target == pytest.approx(loc.p_target, abs=1e-4)
        assert r.extra == pytest.approx(loc.extra, abs=1e-4) and r.choice == loc.choice


def test_retries_then_bounded_concurrency(vllm_style: str) -> None:
    VLLMStyle.most = 0
    policy = ServerPolicy(f"{vllm_style}/flaky/v1", "tiny", max_concurrency=2, backoff=0.01, check=False)
    decisions = policy.decide_batch(requests(6))
    assert VLLMStyle.calls["/flaky/v1/chat/completions"] == 8  # two 503 answers retried
    assert all(d.choice == "Store B" and d.finish == "stop" and d.tokens == 7 for d in decisions)
    assert VLLMStyle.most <= 2


def test_a_budget_beyond_the_context_is_left_to_the_server(vllm_style: str) -> None:
    policy = ServerPolicy(f"{vllm_style}/short/v1", "tiny", max_new_tokens=32_768, check=False)
    assert policy.decide_batch(requests(1))[0].choice == "Store B"
    assert VLLMStyle.calls["/short/v1/chat/completions"] == 2  # refused, then sent without max_tokens


def test_garbage_answer_is_one_line(vllm_style: str) -> None:
    policy = ServerPolicy(f"{vllm_style}/broken/v1", "tiny", check=False)
    with pytest.raises(ModelError, match="not an OpenAI chat completion") as err:
        policy.decide_batch(requests(1))
    assert "\n" not in str(err.value)
