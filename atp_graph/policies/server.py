"""A :class:`~atp_graph.policies.base.Policy` over an OpenAI-compatible server: vLLM, SGLang, TGI, the llama.cpp
server, ``transformers serve``.

The spec ``server:<base url>#<model>`` (e.g. ``server:http://gpu-box:8000/v1#Qwen/Qwen3-8B``) names the server's
OpenAI base URL (up to ``/v1``) and the model it serves; without ``#<model>`` the server's only model is used. All
decisions of a round go out as concurrent HTTP requests (at most ``max_concurrency`` in flight): the server batches
them, which is how one vLLM/SGLang deployment (tensor/pipeline parallel, or replicas behind a load balancer) serves
many simulation processes.

Generate mode uses ``/chat/completions`` with the request's seed; each decision records the server's
``finish_reason`` (``length``: the answer was cut off) and its completion token count. Thinking models served with a
reasoning parser return their thought apart; it is put back in front of the answer as ``<think>...</think>``, as a
local model writes it.

Score mode needs the log-probability of every prompt token, which only some servers return: vLLM's
``prompt_logprobs`` on chat completions, with the assistant's answer ``{"choice": "<option>"}`` given as the message
to continue (``continue_final_message``). The first score call checks for it and refuses with one clear line on
servers that lack it (``transformers serve``, TGI, the llama.cpp server).

Connection errors, timeouts, 429 and 5xx answers are retried with exponential backoff; what still fails becomes one
:class:`~atp_graph.policies.base.ModelError` line (server down, unknown model, an answer that is not an OpenAI one).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import httpx

from ..parsing import parse_choice
from .base import Decision, DecisionMode, DecisionRequest, Message, ModelError
from .scoring import ANSWER_PREFIX, score_decision

__all__ = ["ServerPolicy", "parse_server_spec"]

PREFIX = "server:"
_RETRY_STATUS = {408, 429, 500, 502, 503, 504}
_LENGTH = {"length", "max_tokens", "model_length"}


def parse_server_spec(spec: str) -> tuple[str, str | None]:
    """``server:<base url>[#<model>]`` as ``(base url without a trailing slash, model or None)``.

    Raises:
        ModelError: When the URL is not an http(s) URL with a host.
    """
    target = spec[len(PREFIX) :] if spec.startswith(PREFIX) else spec
    url, _, model = target.partition("#")
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ModelError(
            f"bad server spec {spec!r}: expected server:http://<host>:<port>/v1#<model>, e.g. "
            "server:http://localhost:8000/v1#Qwen/Qwen3-8B"
        )
    return url, model.strip() or None


class ServerPolicy:
    """Decide batches of requests with a model behind an OpenAI-compatible HTTP server.

    Args:
        base_url: The server's OpenAI base URL, e.g. ``http://localhost:8000/v1``.
        model: The served model's name; ``None`` asks the server (``/models``) and takes its only model.
        name: The spec written into run configs; defaults to ``server:<base_url>#<model>``.
        max_new_tokens: Answer budget (``max_tokens``) in generate mode.
        temperature: Sampling temperature; ``None`` keeps the server's default for the model.
        top_p: Nucleus sampling mass; ``None`` keeps the server's default.
        top_k: Top-k cut (vLLM, SGLang and llama.cpp accept it; OpenAI's schema does not); ``None`` sends nothing.
        do_sample: ``False`` asks for greedy answers (temperature 0) unless a temperature is given.
        max_concurrency: Most requests in flight at once.
        timeout: Seconds to wait for one answer (a thinking model's long answer can take many minutes).
        retries: Tries per request on connection errors, timeouts, 429 and 5xx answers.
        backoff: Seconds before the first retry; doubled on each further one.
        api_key: Sent as a bearer token (vLLM's ``--api-key``).
        check: Ask the server for its models now, so that a wrong URL or model name fails at once.

    Raises:
        ModelError: With ``check``, when the server cannot be reached or does not serve ``model``.
    """

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        *,
        name: str | None = None,
        max_new_tokens: int = 256,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        do_sample: bool | None = None,
        max_concurrency: int = 64,
        timeout: float = 3600.0,
        retries: int = 4,
        backoff: float = 0.5,
        api_key: str | None = None,
        check: bool = True,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}")
        self.base_url, self.model = base_url.rstrip("/"), model
        self.max_new_tokens, self.max_concurrency = max_new_tokens, max_concurrency
        self.retries, self.backoff = max(1, retries), backoff
        if do_sample is False and temperature is None:
            temperature = 0.0
        self.sampling = {
            k: v for k, v in {"temperature": temperature, "top_p": top_p, "top_k": top_k}.items() if v is not None
        }
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        limits = httpx.Limits(max_connections=max_concurrency, max_keepalive_connections=max_concurrency)
        self._client = httpx.Client(timeout=httpx.Timeout(timeout, connect=10.0), limits=limits, headers=headers)
        self._scores: bool | None = None
        self.name = name or f"server:{self.base_url}#{model or '?'}"
        if check or model is None:
            self._check()
            if name is None:
                self.name = f"server:{self.base_url}#{self.model}"

    @classmethod
    def from_spec(
        cls,
        spec: str,
        *,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        do_sample: bool | None = None,
        batch_size: int | None = None,
        compile: bool = False,
        **options: Any,
    ) -> ServerPolicy:
        """Build the policy from ``server:<base url>[#<model>]``; ``batch_size`` is the concurrency.

        Raises:
            ModelError: For a bad spec, local-model knobs (``compile``, ``kv_budget``...), or a server that is down
                or lacks the model.
        """
        local = [k for k in ("kv_budget", "continuous", "prefix_cache") if options.pop(k, None) is not None]
        if compile or local:
            knob = "compile" if compile else local[0]
            raise ModelError(f"{spec}: {knob} is a local-model option; the server decides how it runs the model")
        url, model = parse_server_spec(spec)
        kw = {k: v for k, v in {"max_new_tokens": max_new_tokens, "max_concurrency": batch_size}.items() if v}
        return cls(url, model, temperature=temperature, top_p=top_p, top_k=top_k, do_sample=do_sample, **kw, **options)

    def close(self) -> None:
        """Close the HTTP connections."""
        self._client.close()

    # -- the Policy protocol -------------------------------------------------------------------------------------

    def decide_batch(self, requests: Sequence[DecisionRequest], *, mode: DecisionMode = "generate") -> list[Decision]:
        """Decide every request with concurrent calls: chat completions (generate) or prompt log-probabilities
        (score, where the server offers them)."""
        if mode == "score":
            return self._score(requests)
        if mode != "generate":
            raise ValueError(f"unknown decision mode {mode!r}; use 'generate' or 'score'")
        bodies = [self._chat(r.messages, self.max_new_tokens, r.seed) for r in requests]
        answers = self._post_all("/chat/completions", bodies)
        out = []
        for r, answer in zip(requests, answers, strict=True):
            text, finish, tokens = self._reply(answer)
            out.append(Decision(text=text, choice=parse_choice(text, r.options), finish=finish, tokens=tokens))
        return out

    def complete_batch(
        self,
        conversations: Sequence[Sequence[Message]],
        *,
        max_new_tokens: int = 96,
        seeds: Sequence[int] | None = None,
    ) -> list[str]:
        """Free-text completions, concurrently; ``seeds`` default to 0 for every conversation."""
        seeds = list(seeds) if seeds is not None else [0] * len(conversations)
        bodies = [self._chat(c, max_new_tokens, s) for c, s in zip(conversations, seeds, strict=True)]
        return [self._reply(a)[0] for a in self._post_all("/chat/completions", bodies)]

    # -- requests ------------------------------------------------------------------------------------------------

    def _chat(self, messages: Sequence[Message], max_tokens: int, seed: int) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": [dict(m) for m in messages], "max_tokens": max_tokens}
        return {**body, "seed": int(seed), **self.sampling}

    def _reply(self, answer: Any) -> tuple[str, str | None, int | None]:
        """``(text, finish, completion tokens)`` of a chat completion."""
        try:
            choice = answer["choices"][0]
            message = choice["message"]
            content = message.get("content") or ""
            if not isinstance(content, str):
                raise TypeError(f"content is {type(content).__name__}")
            thought = message.get("reasoning_content") or message.get("reasoning")
            text = f"<think>{thought}</think>{content}" if isinstance(thought, str) and thought else content
            reason = choice.get("finish_reason")
            usage = answer.get("usage") or {}
        except (KeyError, IndexError, TypeError, AttributeError) as err:
            raise ModelError(
                f"{self.name}: the server's answer is not an OpenAI chat completion ({err}): {_snippet(answer)}"
            ) from err
        finish = None if reason is None else "length" if str(reason).lower() in _LENGTH else "stop"
        tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
        return text, finish, tokens if isinstance(tokens, int) else None

    def _post_all(self, path: str, bodies: Sequence[dict[str, Any]]) -> list[Any]:
        """POST every body (at most ``max_concurrency`` at once); answers in order. The first failure is raised."""
        if not bodies:
            return []
        if len(bodies) == 1 or self.max_concurrency == 1:
            return [self._post(path, b) for b in bodies]
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(bodies))) as pool:
            return list(pool.map(lambda b: self._post(path, b), bodies))

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        try:
            return self._send("POST", path, body)
        except ModelError as err:
            # vLLM refuses a max_tokens that does not fit the context after the prompt; without it, the answer may
            # use the rest of the context (and is still reported as cut off when it fills it)
            if "HTTP 400" in str(err) and "context length" in str(err).lower() and "max_tokens" in body:
                return self._send("POST", path, {k: v for k, v in body.items() if k != "max_tokens"})
            raise

    def _send(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """One call with retries; its JSON answer.

        Raises:
            ModelError: Server unreachable or failing after every retry, a 4xx answer, or an answer that is not JSON.
        """
        url = self.base_url + path
        for attempt in range(self.retries):
            last = attempt == self.retries - 1
            try:
                response = self._client.request(method, url, json=body)
            except httpx.TransportError as err:
                if last:
                    raise ModelError(
                        f"{self.name}: cannot reach the server at {self.base_url} after {self.retries} tries "
                        f"({type(err).__name__}: {err or 'no answer'}); is it running? e.g. `vllm serve <model> "
                        "--port 8000`, then server:http://localhost:8000/v1#<model>"
                    ) from err
            else:
                if response.status_code < 400:
                    try:
                        return response.json()
                    except ValueError as err:
                        raise ModelError(
                            f"{self.name}: {path} answered with something that is not JSON: {_snippet(response.text)}"
                        ) from err
                if response.status_code not in _RETRY_STATUS or last:
                    raise self._http_error(path, response)
            time.sleep(self.backoff * 2**attempt)
        raise AssertionError("unreachable")

    def _http_error(self, path: str, response: httpx.Response) -> ModelError:
        detail = _detail(response)
        hint = ""
        if response.status_code in (400, 404) and "model" in detail.lower():
            served = self._served()
            hint = f"; it serves: {', '.join(served)}" if served else ""
        return ModelError(f"{self.name}: the server refused {path} with HTTP {response.status_code}: {detail}{hint}")

    def _served(self) -> list[str]:
        """The model ids the server lists (empty if it lists none)."""
        try:
            data = self._client.get(self.base_url + "/models").json().get("data", [])
            return [str(m["id"]) for m in data if isinstance(m, dict) and "id" in m]
        except (httpx.HTTPError, ValueError, AttributeError, TypeError):
            return []

    def _check(self) -> None:
        """Ask ``/models``: the server is up and serves ``self.model`` (or exactly one model, then taken)."""
        try:
            listing = self._send("GET", "/models")
        except ModelError as err:
            if "HTTP 404" in str(err) and self.model is not None:  # a server without /models: the first call will tell
                return
            raise
        data = listing.get("data") if isinstance(listing, dict) else None
        if not isinstance(data, list):
            raise ModelError(f"{self.name}: {self.base_url}/models is not an OpenAI model list: {_snippet(listing)}")
        served = [str(m.get("id")) for m in data if isinstance(m, dict)]
        if self.model is None:
            if len(served) != 1:
                raise ModelError(
                    f"server {self.base_url} serves {len(served)} models ({', '.join(served) or 'none'}); name one: "
                    f"server:{self.base_url}#<model>"
                )
            self.model = served[0]
        elif served and self.model not in served:
            raise ModelError(
                f"{self.name}: the server does not serve model {self.model!r}; it serves: {', '.join(served)}"
            )

    # -- score mode ----------------------------------------------------------------------------------------------

    def _score_body(self, messages: Sequence[Message], option: str) -> dict[str, Any]:
        answer = {"role": "assistant", "content": f'{ANSWER_PREFIX}{option}"}}'}
        return {
            "model": self.model,
            "messages": [*(dict(m) for m in messages), answer],
            "add_generation_prompt": False,
            "continue_final_message": True,
            "chat_template_kwargs": {"enable_thinking": False},
            "prompt_logprobs": 0,
            "max_tokens": 1,
            "temperature": 0.0,
        }

    def _score(self, requests: Sequence[DecisionRequest]) -> list[Decision]:
        """p(target) per request from the prompt log-probabilities of ``{"choice": "<option>"}`` after each order."""
        if not requests:
            return []
        plan = [
            (i, conv, o) for i, r in enumerate(requests) for conv in (r.messages, r.swapped) if conv for o in r.options
        ]
        bodies = [self._score_body(conv, option) for _, conv, option in plan]
        if self._scores is None:  # one call first: does this server give prompt log-probabilities at all?
            answers = [self._probe(bodies[0])]
            answers += self._post_all("/chat/completions", bodies[1:])
        else:
            answers = self._post_all("/chat/completions", bodies)
        logps: list[list[float]] = [[] for _ in requests]
        for (i, _, option), answer in zip(plan, answers, strict=True):
            logps[i].append(self._option_logprob(answer, f'{option}"}}'))
        return [
            score_decision(r, [(lp[k], lp[k + 1]) for k in range(0, len(lp), 2)])
            for r, lp in zip(requests, logps, strict=True)
        ]

    def _probe(self, body: dict[str, Any]) -> Any:
        refusal = ModelError(
            f"{self.name}: score mode needs the log-probability of every prompt token (vLLM's prompt_logprobs on "
            "chat completions, with continue_final_message), which this server does not return; use "
            "--decision generate, or serve the model with vLLM"
        )
        try:
            answer = self._post("/chat/completions", body)
        except ModelError as err:
            if "HTTP 4" in str(err):  # the server refused the score fields
                raise ModelError(f"{refusal} ({err})") from err
            raise
        if not isinstance(answer, dict) or not isinstance(answer.get("prompt_logprobs"), list):
            raise refusal
        self._scores = True
        return answer

    def _option_logprob(self, answer: Any, suffix: str) -> float:
        """Sum of the log-probabilities of the prompt's last tokens that spell ``suffix`` (the option and ``"}``)."""
        try:
            entries = answer["prompt_logprobs"]
            total, covered = 0.0, 0
            for entry in reversed(entries):
                if covered >= len(suffix):
                    break
                info = next(iter(entry.values()))  # the prompt token's own record comes first (vLLM)
                total += float(info["logprob"])
                covered += len(info.get("decoded_token") or "")
            if covered < len(suffix):
                raise ValueError(f"the prompt's last tokens spell fewer than {len(suffix)} characters")
            return total
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ModelError(
                f"{self.name}: cannot read prompt log-probabilities from the server's answer ({err}): "
                f"{_snippet(answer)}"
            ) from err


def _detail(response: httpx.Response) -> str:
    """The error message of a failed call, on one line."""
    try:
        body = response.json()
    except ValueError:
        return _snippet(response.text)
    if isinstance(body, dict):
        inner = body.get("error", body.get("detail", body.get("message", body)))
        if isinstance(inner, dict):
            inner = inner.get("message", inner)
        return _snippet(inner)
    return _snippet(body)


def _snippet(value: Any, limit: int = 200) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[:limit] + "..."
