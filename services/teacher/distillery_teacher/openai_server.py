"""An OpenAI-compatible server for the teacher's local transformers models.

    python -m distillery_teacher.openai_server --model smollm2-135m-instruct --port 8000

serves ``GET /v1/models`` and ``POST /v1/chat/completions`` (non-streaming) with real generation
through :class:`distillery.domain.generate.Generator`: chat messages rendered with the tokenizer's
chat template, ``max_tokens`` / ``max_completion_tokens``, ``temperature`` (0 is greedy; the API
default is 1), ``stop``, ``logprobs`` (the chosen token's log probability, before temperature
scaling, in ``choices[0].logprobs.content[i].logprob``), ``usage`` and ``finish_reason``.
Concurrent requests are batched (up to ``--max-batch``, collected for ``--batch-wait-ms``), the
way vLLM batches, so a client with concurrency 8 gets batch-8 throughput.

Not supported: streaming, ``n`` > 1, ``top_logprobs`` > 0 and tools (each a 400 answer).
``response_format`` is accepted and counted but not enforced: use vLLM's structured outputs when
the JSON must be guaranteed.

It exists so the ``openai`` teacher backend is tested against a real server process, and so a
model can be shared by several teacher processes. ``GET /stats`` counts requests, injected
failures, batches and ``response_format`` types. ``--fail-first N`` is a test and chaos knob: the
first N chat requests are answered with HTTP 500, as an overloaded or restarting server would.

The app is plain ASGI (no web framework) run by uvicorn.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import sys
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field, fields
from typing import Any

log = logging.getLogger("distillery.teacher.openai_server")

MIN_LOGPROB = -9999.0  # what vLLM reports for a probability that underflows to 0


class BadRequest(Exception):
    """A request the server answers with 400 and an OpenAI-style error body."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def _scored_generator_class():
    """Generator whose records keep each completion token and its log probability.

    Built lazily so that importing this module (for its helpers) does not import torch.
    """
    import torch

    from distillery.domain.generate import Generation, Generator

    @dataclass
    class ScoredGeneration(Generation):
        token_ids: list[int] = field(default_factory=list)
        token_logprobs: list[float] = field(default_factory=list)

    class ScoredGenerator(Generator):
        def _record(self, tokens, probs, prompt_tokens, stopped_at, stop, seconds):
            gen = super()._record(tokens, probs, prompt_tokens, stopped_at, stop, seconds)
            n = gen.completion_tokens
            logprobs = torch.log(probs[:n].double()).clamp(min=MIN_LOGPROB).tolist()
            kept = {f.name: getattr(gen, f.name) for f in fields(gen) if f.name != "token_ids"}
            return ScoredGeneration(**kept, token_ids=list(tokens[:n]), token_logprobs=logprobs)

    return ScoredGenerator


def render_messages(tokenizer, messages: list[dict[str, str]]) -> str:
    """Messages to prompt text with the tokenizer's chat template (plain fallback without one)."""
    if tokenizer.chat_template:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n".join([*lines, "Assistant:"])


def _text(content: Any, index: int) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: only text parts are supported
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise BadRequest("only text content parts are supported", f"messages[{index}].content")
            parts.append(part["text"])
        return "".join(parts)
    raise BadRequest("content must be a string or a list of text parts", f"messages[{index}].content")


@dataclass(frozen=True)
class ChatRequest:
    messages: list[dict[str, str]]
    max_tokens: int
    temperature: float
    stop: tuple[str, ...]
    logprobs: bool
    response_format: str | None


def parse_chat_request(body: Any, served_model: str, default_max_tokens: int, max_tokens_limit: int) -> ChatRequest:
    """Validate a chat-completions body; raises BadRequest (400) or LookupError (404, unknown model)."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    if body.get("model") not in (None, served_model):
        raise LookupError(f"The model `{body['model']}` does not exist.")
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise BadRequest("messages must be a non-empty list", "messages")
    messages = []
    for i, msg in enumerate(raw):
        if not isinstance(msg, dict) or msg.get("role") not in ("system", "user", "assistant", "developer"):
            raise BadRequest("each message needs a role of system, developer, user or assistant", f"messages[{i}]")
        role = "system" if msg["role"] == "developer" else msg["role"]
        messages.append({"role": role, "content": _text(msg.get("content", ""), i)})
    if body.get("stream"):
        raise BadRequest("streaming is not supported by this server", "stream")
    if body.get("n", 1) != 1:
        raise BadRequest("only n=1 is supported", "n")
    if body.get("tools"):
        raise BadRequest("tools are not supported by this server; declare them in the prompt", "tools")
    if body.get("top_logprobs"):
        raise BadRequest("top_logprobs is not supported (only the chosen token's logprob)", "top_logprobs")
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or default_max_tokens
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or not 1 <= max_tokens <= max_tokens_limit:
        raise BadRequest(f"max_tokens must be an integer from 1 to {max_tokens_limit}", "max_tokens")
    temperature = body.get("temperature")
    temperature = 1.0 if temperature is None else temperature
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 <= temperature <= 2:
        raise BadRequest("temperature must be a number from 0 to 2", "temperature")
    stop = body.get("stop") or []
    stop = [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop) or len(stop) > 16:
        raise BadRequest("stop must be a string or a list of up to 16 non-empty strings", "stop")
    response_format = body.get("response_format")
    if response_format is not None and not (isinstance(response_format, dict) and "type" in response_format):
        raise BadRequest("response_format must be an object with a type", "response_format")
    return ChatRequest(messages, max_tokens, float(temperature), tuple(stop), bool(body.get("logprobs")),
                       response_format["type"] if response_format else None)


@dataclass
class _Job:
    prompt: str
    request: ChatRequest
    future: asyncio.Future


class Batcher:
    """Collects concurrent requests into batches for one model; runs one batch at a time."""

    def __init__(self, generator, max_batch: int, wait_s: float, stats: Counter) -> None:
        self.generator = generator
        self.max_batch = max_batch
        self.wait_s = wait_s
        self.stats = stats
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()
        self.largest_batch = 0

    async def submit(self, prompt: str, request: ChatRequest):
        future = asyncio.get_running_loop().create_future()
        await self.queue.put(_Job(prompt, request, future))
        return await future

    async def _collect(self) -> list[_Job]:
        jobs = [await self.queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_s
        while len(jobs) < self.max_batch:
            try:
                jobs.append(self.queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                jobs.append(await asyncio.wait_for(self.queue.get(), left))
            except TimeoutError:
                break
        return [job for job in jobs if not job.future.done()]  # a client that went away is skipped

    async def run(self) -> None:
        while True:
            jobs = await self._collect()
            # One generate call per sampling setting: budget, temperature and stop strings are per batch.
            groups: dict[tuple, list[_Job]] = defaultdict(list)
            for job in jobs:
                groups[(job.request.max_tokens, job.request.temperature, job.request.stop)].append(job)
            for (max_tokens, temperature, stop), group in groups.items():
                self.stats["batches"] += 1
                self.largest_batch = max(self.largest_batch, len(group))
                try:
                    gens = await asyncio.to_thread(self.generator.generate, [j.prompt for j in group], max_tokens,
                                                   list(stop) or None, temperature, len(group))
                except Exception as exc:
                    log.exception("generation failed")
                    for job in group:
                        if not job.future.done():
                            job.future.set_exception(exc)
                    continue
                for job, gen in zip(group, gens, strict=True):
                    if not job.future.done():
                        job.future.set_result(gen)


def _error(status: int, message: str, kind: str, param: str | None = None, code: str | None = None) -> tuple[int, dict]:
    return status, {"error": {"message": message, "type": kind, "param": param, "code": code}}


class OpenAIServer:
    """The ASGI application."""

    def __init__(self, generator, served_model: str, fail_first: int = 0, max_batch: int = 8,
                 batch_wait_s: float = 0.01, default_max_tokens: int = 256, max_tokens_limit: int = 2048) -> None:
        self.generator = generator
        self.tokenizer = generator.tokenizer
        self.served_model = served_model
        self.fail_first = fail_first
        self.default_max_tokens = default_max_tokens
        self.max_tokens_limit = max_tokens_limit
        self.created = int(time.time())
        self.stats: Counter = Counter()
        self.response_formats: Counter = Counter()
        self.batcher = Batcher(generator, max_batch, batch_wait_s, self.stats)
        self._batch_task: asyncio.Task | None = None

    # --- ASGI plumbing ---------------------------------------------------------------------------

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        self._ensure_batcher()
        status, payload = await self._route(scope["method"], scope["path"], receive)
        body = json.dumps(payload).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._ensure_batcher()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._batch_task is not None:
                    self._batch_task.cancel()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _ensure_batcher(self) -> None:
        if self._batch_task is None or self._batch_task.done():
            self._batch_task = asyncio.get_running_loop().create_task(self.batcher.run())

    @staticmethod
    async def _body(receive) -> bytes:
        chunks = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        return b"".join(chunks)

    async def _route(self, method: str, path: str, receive) -> tuple[int, dict]:
        path = path.rstrip("/") or "/"
        routes = {"/v1/models": "GET", "/v1/chat/completions": "POST", "/stats": "GET", "/health": "GET"}
        if path not in routes:
            return _error(404, f"no route {path}", "not_found_error")
        if method != routes[path]:
            return _error(405, f"{path} takes {routes[path]}", "invalid_request_error")
        if path == "/v1/models":
            return 200, {"object": "list", "data": [{"id": self.served_model, "object": "model",
                                                      "created": self.created, "owned_by": "distillery"}]}
        if path == "/stats":
            return 200, {**self.stats, "largest_batch": self.batcher.largest_batch,
                         "response_formats": dict(self.response_formats)}
        if path == "/health":
            return 200, {"status": "ok"}
        return await self._chat(await self._body(receive))

    # --- chat completions ------------------------------------------------------------------------

    async def _chat(self, raw: bytes) -> tuple[int, dict]:
        self.stats["chat_requests"] += 1
        if self.stats["chat_requests"] <= self.fail_first:
            self.stats["injected_failures"] += 1
            return _error(500, "injected failure (--fail-first)", "server_error")
        try:
            request = parse_chat_request(json.loads(raw or b"null"), self.served_model, self.default_max_tokens,
                                         self.max_tokens_limit)
        except json.JSONDecodeError as exc:
            self.stats["bad_requests"] += 1
            return _error(400, f"invalid JSON: {exc}", "invalid_request_error")
        except BadRequest as exc:
            self.stats["bad_requests"] += 1
            return _error(400, str(exc), "invalid_request_error", exc.param)
        except LookupError as exc:
            self.stats["bad_requests"] += 1
            return _error(404, str(exc.args[0]), "invalid_request_error", "model", "model_not_found")
        if request.response_format:
            self.response_formats[request.response_format] += 1
        prompt = render_messages(self.tokenizer, request.messages)
        try:
            gen = await self.batcher.submit(prompt, request)
        except Exception as exc:  # noqa: BLE001
            self.stats["errors"] += 1
            return _error(500, f"generation failed: {type(exc).__name__}: {exc}", "server_error")
        self.stats["completed"] += 1
        return 200, self._completion(gen, request)

    def _completion(self, gen, request: ChatRequest) -> dict:
        logprobs = None
        if request.logprobs:
            content = []
            for token_id, logprob in zip(gen.token_ids, gen.token_logprobs, strict=True):
                token = self.tokenizer.decode([token_id])
                content.append({"token": token, "logprob": logprob if math.isfinite(logprob) else MIN_LOGPROB,
                                "bytes": list(token.encode("utf-8")), "top_logprobs": []})
            logprobs = {"content": content}
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.served_model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": gen.text},
                         "logprobs": logprobs, "finish_reason": gen.finish_reason}],
            "usage": {"prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.completion_tokens,
                      "total_tokens": gen.prompt_tokens + gen.completion_tokens},
        }


def build_server(model: str, served_model: str | None = None, device: str = "cpu", **kwargs) -> OpenAIServer:
    """Load ``model`` (a registry name or a saved-model folder) and wrap it in the ASGI app."""
    from distillery.domain.models import load_model

    lm, tokenizer = load_model(model, device=device)
    generator = _scored_generator_class()(lm, tokenizer)
    return OpenAIServer(generator, served_model or model, **kwargs)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m distillery_teacher.openai_server",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True,
                        help="registry name (e.g. smollm2-135m-instruct) or saved-model folder")
    parser.add_argument("--served-model-name", help="the name clients send as 'model' (default: --model)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--max-batch", type=int, default=8, help="most requests generated together")
    parser.add_argument("--batch-wait-ms", type=float, default=10.0, help="how long a batch waits for company")
    parser.add_argument("--max-tokens", type=int, default=256, help="max_tokens when a request gives none")
    parser.add_argument("--max-tokens-limit", type=int, default=2048, help="largest max_tokens accepted")
    parser.add_argument("--fail-first", type=int, default=0, metavar="N",
                        help="test/chaos knob: answer the first N chat requests with HTTP 500")
    args = parser.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s openai_server %(levelname)s %(message)s")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    import uvicorn

    app = build_server(args.model, args.served_model_name, args.device, fail_first=args.fail_first,
                       max_batch=args.max_batch, batch_wait_s=args.batch_wait_ms / 1000,
                       default_max_tokens=args.max_tokens, max_tokens_limit=args.max_tokens_limit)
    print(f"serving {app.served_model} on http://{args.host}:{args.port}/v1", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", lifespan="on")


if __name__ == "__main__":
    main()
