"""The ``openai`` backend: any OpenAI-compatible chat-completions server as a teacher.

vLLM (``vllm serve``), llama.cpp's ``llama-server``, hosted APIs, and this package's own
``python -m distillery_teacher.openai_server`` all speak the protocol. Requests go out
concurrently (at most ``concurrency`` in flight), each one a chat completion with
``logprobs=True`` (and the teacher's ``stop`` sequences); ``json_output`` adds
``response_format={"type": "json_object"}``.

Retries are the official client's own (checked in openai 3.57.0, ``openai/_base_client.py``,
``_should_retry``, ``_calculate_retry_timeout`` and ``_constants.py``): a connection error, a
timeout, or an HTTP 408, 409, 429 or any 5xx answer is retried up to ``max_retries`` times;
the wait is the server's ``Retry-After`` / ``retry-after-ms`` when that is at most 2 minutes,
otherwise exponential backoff 0.5 s * 2**n capped at 8 s, minus up to 25 % jitter. A server
header ``x-should-retry: true|false`` overrides the status rule; other 4xx are not retried.
``timeout_s`` bounds each attempt, not the whole request.

A request that still fails comes back as a :class:`Generation` with ``error`` set, which
``logic.answer`` turns into a failed candidate; the other requests of the batch are unaffected.

A background probe (``GET {base_url}/models`` every few seconds) tells the service's readiness
endpoint whether the server answers. While the probe says it is down, a batch first waits up to
``timeout_s`` for it to come back (a server restart then delays requests instead of failing them),
then goes ahead either way.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
import time
from concurrent.futures import Future

import openai

from distillery.contracts.settings import ConfigError
from distillery.contracts.spec import TeacherSpec
from distillery.domain.generate import Generation

log = logging.getLogger("distillery.teacher.openai")

PROBE_INTERVAL_S = 3.0


def api_key_for(teacher: TeacherSpec, teacher_id: str) -> str:
    """The key from the environment variable the spec names; local servers need none ("none")."""
    if not teacher.api_key_env:
        return "none"
    if teacher.api_key_env not in os.environ:
        raise ConfigError(
            f"teacher '{teacher_id}': field 'api_key_env': environment variable {teacher.api_key_env} is not set"
        )
    return os.environ[teacher.api_key_env] or "none"


def describe_error(exc: Exception, url: str, max_retries: int) -> str:
    """One readable line: what failed, where, and that the retries were spent."""
    attempts = max_retries + 1
    gave_up = f"gave up after {attempts} attempt{'s' if attempts > 1 else ''}"
    if isinstance(exc, openai.APIStatusError):
        retried = exc.status_code in (408, 409, 429) or exc.status_code >= 500
        return f"openai backend: HTTP {exc.status_code} from {url}{'; ' + gave_up if retried else ''}: {exc.message}"
    if isinstance(exc, (openai.APITimeoutError, openai.APIConnectionError)):
        cause = f": {type(exc.__cause__).__name__}: {exc.__cause__}" if exc.__cause__ else ""
        return f"openai backend: {type(exc).__name__} ({exc}{cause}) for {url}; {gave_up}"
    return f"openai backend: {type(exc).__name__}: {exc} ({url})"


def failed_generation(error: str, seconds: float = 0.0) -> Generation:
    return Generation(text="", prompt_tokens=0, completion_tokens=0, finish_reason="error",  # type: ignore[arg-type]
                      mean_token_prob=None, seconds=seconds, error=error)


def generation_from(response, seconds: float) -> Generation:
    """Map a chat completion to a Generation: text, usage, finish reason, mean token probability."""
    choice = response.choices[0]
    tokens = choice.logprobs.content if choice.logprobs is not None and choice.logprobs.content else []
    confidence = sum(math.exp(t.logprob) for t in tokens) / len(tokens) if tokens else None
    usage = response.usage
    return Generation(
        text=choice.message.content or "",
        prompt_tokens=usage.prompt_tokens if usage else 0,
        completion_tokens=usage.completion_tokens if usage else len(tokens),
        finish_reason=choice.finish_reason or "stop",
        mean_token_prob=confidence,
        seconds=seconds,
    )


class OpenAIBackend:
    """Chat completions against an OpenAI-compatible server, on an event loop of its own.

    ``generate`` is called from the teacher's worker thread; it hands the batch to the backend's
    loop thread and waits. One client (one connection pool) and one semaphore serve every batch.
    """

    def __init__(self, teacher: TeacherSpec, teacher_id: str, probe_interval_s: float = PROBE_INTERVAL_S) -> None:
        if not teacher.base_url:
            raise ConfigError(f"teacher '{teacher_id}': field 'base_url': backend 'openai' needs base_url")
        self.teacher = teacher
        self.teacher_id = teacher_id
        self.base_url = teacher.base_url.rstrip("/")
        self.chat_url = f"{self.base_url}/chat/completions"
        self.probe_interval_s = probe_interval_s
        api_key = api_key_for(teacher, teacher_id)
        self._client = openai.AsyncOpenAI(base_url=self.base_url, api_key=api_key, timeout=teacher.timeout_s,
                                          max_retries=teacher.max_retries)
        # The probe asks once per tick and never retries: the next tick is its retry.
        self._probe_client = openai.AsyncOpenAI(base_url=self.base_url, api_key=api_key,
                                                timeout=min(5.0, teacher.timeout_s), max_retries=0)
        self._semaphore = asyncio.Semaphore(teacher.concurrency)
        self._up = asyncio.Event()
        self.ready: bool | None = None  # None until the first probe (or without one): never wait then
        self._probe: Future | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"openai-{teacher_id}", daemon=True)
        self._thread.start()

    # --- generation ------------------------------------------------------------------------------

    def generate(self, requests: list[tuple[str, str, str]], max_new_tokens: int) -> list[Generation]:
        """One Generation per (task_id, system, user), in order; failures carry ``error``."""
        return asyncio.run_coroutine_threadsafe(self._generate_all(requests, max_new_tokens), self._loop).result()

    async def _generate_all(self, requests: list[tuple[str, str, str]], max_new_tokens: int) -> list[Generation]:
        if self.ready is False:
            try:
                await asyncio.wait_for(self._up.wait(), self.teacher.timeout_s)
            except TimeoutError:
                log.warning("%s still unreachable after %.0f s; sending anyway", self.base_url, self.teacher.timeout_s)
        return list(await asyncio.gather(*(self._one(system, user, max_new_tokens) for _, system, user in requests)))

    def _request(self, system: str, user: str, max_new_tokens: int) -> dict:
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
        body = {
            "model": self.teacher.model,
            "messages": messages,
            "max_tokens": max_new_tokens,
            "temperature": self.teacher.temperature,
            "logprobs": True,
        }
        if self.teacher.stop:
            body["stop"] = list(self.teacher.stop)  # OpenAI's own API takes at most 4; vLLM any number
        if self.teacher.json_output:
            body["response_format"] = {"type": "json_object"}
        return body

    async def _one(self, system: str, user: str, max_new_tokens: int) -> Generation:
        body = self._request(system, user, max_new_tokens)
        async with self._semaphore:
            started = time.perf_counter()
            try:
                response = await self._client.chat.completions.create(**body)
                return generation_from(response, time.perf_counter() - started)
            except Exception as exc:  # noqa: BLE001 - after the client's retries, a failure is this request's alone
                error = describe_error(exc, self.chat_url, self.teacher.max_retries)
                log.warning("teacher %s: %s", self.teacher_id, error)
                return failed_generation(error, time.perf_counter() - started)

    # --- readiness -------------------------------------------------------------------------------

    def start_probe(self) -> None:
        """Start probing ``GET {base_url}/models`` every ``probe_interval_s`` (idempotent)."""
        if self._probe is None:
            self._probe = asyncio.run_coroutine_threadsafe(self._probe_forever(), self._loop)

    async def is_ready(self) -> bool:
        """For the readiness endpoint: did the last probe reach the server?"""
        return bool(self.ready)

    async def probe_once(self) -> bool:
        try:
            models = await self._probe_client.models.list()
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            if self.ready is not False:
                log.warning("teacher %s: model server %s not reachable: %s", self.teacher_id, self.base_url,
                            describe_error(exc, f"{self.base_url}/models", 0))
            return False
        served = [m.id for m in models.data]
        if self.ready is not True:
            log.info("teacher %s: model server %s is up, serving %s", self.teacher_id, self.base_url, served)
            if served and self.teacher.model not in served:
                log.warning("teacher %s: model %r is not among the served models %s", self.teacher_id,
                            self.teacher.model, served)
        return True

    async def _probe_forever(self) -> None:
        while True:
            self.ready = await self.probe_once()
            (self._up.set if self.ready else self._up.clear)()
            await asyncio.sleep(self.probe_interval_s)

    def close(self) -> None:
        """Stop the probe, close the connections and the loop thread."""
        if not self._thread.is_alive():
            return
        if self._probe is not None:
            self._probe.cancel()

        async def shutdown() -> None:
            await self._client.close()
            await self._probe_client.close()

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(timeout=5)
        except Exception:  # noqa: BLE001 - closing is best effort
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
