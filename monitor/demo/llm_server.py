"""An OpenAI-compatible HTTP server for the demo LLM (:mod:`monitor.demo.charlm`), standard library only.

Routes: ``POST /v1/completions``, ``POST /v1/chat/completions`` (the messages' contents joined by line breaks
make the prompt), ``GET /v1/models`` and ``GET /healthz``. Requests take ``max_tokens``, ``temperature``,
``top_k`` (an extension), ``stop``, ``seed`` and ``stream``; streamed responses are server-sent events, one
``data: {chunk}`` per generated token written as soon as it is sampled, then a chunk carrying
``finish_reason``, an optional usage chunk (``stream_options.include_usage``), and ``data: [DONE]``.
``logprobs`` gives per-token log-probabilities in the completions format (``logprobs.tokens``,
``token_logprobs``, ``text_offset``; ``top_logprobs`` is null) or the chat format (``logprobs.content``).

Malformed requests get a 400 with an OpenAI error object; bodies over :data:`MAX_BODY_BYTES` a 413; more than
``max_concurrent`` generations at once a 429. Tokens are characters, so ``usage`` counts characters:
``completion_tokens`` is the number of tokens in the returned text (a stop string is not counted).

>>> from monitor.demo.charlm import GPTConfig, train
>>> model, tok, _ = train("to be or not to be " * 20, GPTConfig(block_size=8, n_layer=1, n_head=2, n_embd=8),
...                       steps=5, batch_size=4)
>>> server = serve(model, tok, port=0).start()
>>> import json, urllib.request
>>> json.load(urllib.request.urlopen(f"{server.url}/v1/models"))["data"][0]["id"]
'charlm'
>>> server.stop()
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import msgspec

from monitor.demo.charlm import GPT, CharTokenizer, Generation, Step, generate

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_BODY_BYTES = 1 << 20
MAX_TOKENS_LIMIT = 4096
DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions
DEFAULT_CHAT_MAX_TOKENS = 256


class StreamOptions(msgspec.Struct, frozen=True):
    include_usage: bool = False


class CompletionRequest(msgspec.Struct, frozen=True):
    prompt: str | list[str]
    model: str | None = None
    max_tokens: int | None = None
    temperature: float = 1.0
    top_k: int | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    logprobs: int | None = None  # how many alternatives per token OpenAI would list; any value turns logprobs on


class ChatMessage(msgspec.Struct, frozen=True):
    role: str
    content: str | None = None


class ChatRequest(msgspec.Struct, frozen=True):
    messages: list[ChatMessage]
    model: str | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float = 1.0
    top_k: int | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    logprobs: bool = False


class RequestError(Exception):
    """A request the server refuses; becomes an OpenAI error object with ``status``."""

    def __init__(self, status: HTTPStatus, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param


def _decode(body: bytes, kind: type[T]) -> T:
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError too
        where = re.search(r"at `\$\.(\w+)", str(exc))
        raise RequestError(HTTPStatus.BAD_REQUEST, f"invalid request body: {exc}",
                           where.group(1) if where else None) from exc


def _check(max_tokens: int, temperature: float, top_k: int | None, n: int, stop: str | list[str] | None) -> None:
    if not 0 <= max_tokens <= MAX_TOKENS_LIMIT:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"max_tokens must be in [0, {MAX_TOKENS_LIMIT}]", "max_tokens")
    if not 0 <= temperature <= 2:
        raise RequestError(HTTPStatus.BAD_REQUEST, "temperature must be in [0, 2]", "temperature")
    if top_k is not None and top_k < 1:
        raise RequestError(HTTPStatus.BAD_REQUEST, "top_k must be >= 1", "top_k")
    if n != 1:
        raise RequestError(HTTPStatus.BAD_REQUEST, "only n=1 is supported", "n")
    if isinstance(stop, list) and len(stop) > 4:
        raise RequestError(HTTPStatus.BAD_REQUEST, "at most 4 stop sequences", "stop")


class LLMServer:
    """A running :class:`ThreadingHTTPServer` for one model; :meth:`start` serves it from a daemon thread."""

    def __init__(self, model: GPT, tokenizer: CharTokenizer, host: str, port: int, model_name: str,
                 max_concurrent: int) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.host = host
        self.slots = threading.BoundedSemaphore(max_concurrent)
        self.httpd = ThreadingHTTPServer((host, port), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.llm = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> LLMServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="llm-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting requests and close the socket; streams in progress end when their client reads."""
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join()
            self._thread = None
        self.httpd.server_close()

    def __enter__(self) -> LLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(model: GPT, tokenizer: CharTokenizer, host: str = "127.0.0.1", port: int = 0,
          model_name: str = "charlm", max_concurrent: int = 4) -> LLMServer:
    """Bind the server (port 0 picks a free one: read :attr:`LLMServer.port`); call ``start()`` to serve."""
    return LLMServer(model, tokenizer, host, port, model_name, max_concurrent)


class _Handler(BaseHTTPRequestHandler):
    server_version = "inferwatch-charlm/0.1"
    disable_nagle_algorithm = True  # each streamed token goes out in its own packet, at once

    @property
    def llm(self) -> LLMServer:
        llm: LLMServer = self.server.llm  # type: ignore[attr-defined]
        return llm

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    # ------------------------------------------------------------------------------------------- routing

    def do_GET(self) -> None:
        if self.path == "/healthz":
            self._json(HTTPStatus.OK, {"status": "ok"})
        elif self.path == "/v1/models":
            self._json(HTTPStatus.OK, {"object": "list", "data": [
                {"id": self.llm.model_name, "object": "model", "created": 0, "owned_by": "inferwatch"}]})
        else:
            self._error(RequestError(HTTPStatus.NOT_FOUND, f"Invalid URL (GET {self.path})"))

    def do_POST(self) -> None:
        try:
            if self.path not in ("/v1/completions", "/v1/chat/completions"):
                raise RequestError(HTTPStatus.NOT_FOUND, f"Invalid URL (POST {self.path})")
            body = self._body()
            if not self.llm.slots.acquire(blocking=False):
                raise RequestError(HTTPStatus.TOO_MANY_REQUESTS, "the server is busy; retry shortly")
            try:
                if self.path == "/v1/completions":
                    self._completion(_decode(body, CompletionRequest))
                else:
                    self._chat(_decode(body, ChatRequest))
            finally:
                self.llm.slots.release()
        except RequestError as exc:
            self._error(exc)
        except (BrokenPipeError, ConnectionResetError):
            log.debug("client went away during %s", self.path)

    def _body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "a Content-Length header is required")
        if int(length) > MAX_BODY_BYTES:
            raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                               f"request body of {length} bytes exceeds {MAX_BODY_BYTES}")
        return self.rfile.read(int(length))

    # ------------------------------------------------------------------------------------------- endpoints

    def _completion(self, req: CompletionRequest) -> None:
        if isinstance(req.prompt, list) and len(req.prompt) != 1:
            raise RequestError(HTTPStatus.BAD_REQUEST, "prompt must be a string or a list of one string", "prompt")
        prompt = req.prompt if isinstance(req.prompt, str) else req.prompt[0]
        max_tokens = DEFAULT_MAX_TOKENS if req.max_tokens is None else req.max_tokens
        _check(max_tokens, req.temperature, req.top_k, req.n, req.stop)
        gen = generate(self.llm.model, self.llm.tokenizer, prompt, max_tokens, req.temperature, req.top_k,
                       _seed(req.seed), req.stop)
        head = {"id": f"cmpl-{secrets.token_hex(12)}", "object": "text_completion", "created": int(time.time()),
                "model": self.llm.model_name}
        want_logprobs = req.logprobs is not None
        if req.stream:
            self._start_stream()
            offset = len(prompt)
            for step in gen:
                lp = _completion_logprobs([step], offset) if want_logprobs else None
                self._event({**head, "choices": [{"index": 0, "text": step.text, "logprobs": lp,
                                                  "finish_reason": None}]})
                offset += len(step.text)
            self._event({**head, "choices": [{"index": 0, "text": "", "logprobs": None,
                                              "finish_reason": gen.stop_reason}]})
            self._end_stream(head, gen, offset - len(prompt), req.stream_options)
            return
        steps = list(gen)
        text = "".join(s.text for s in steps)
        self._json(HTTPStatus.OK, {**head, "choices": [{
            "index": 0, "text": text, "finish_reason": gen.stop_reason,
            "logprobs": _completion_logprobs(steps, len(prompt)) if want_logprobs else None}],
            "usage": _usage(gen, len(steps))})

    def _chat(self, req: ChatRequest) -> None:
        if not req.messages:
            raise RequestError(HTTPStatus.BAD_REQUEST, "messages must not be empty", "messages")
        prompt = "\n".join(m.content for m in req.messages if m.content)
        limit = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
        max_tokens = DEFAULT_CHAT_MAX_TOKENS if limit is None else limit
        _check(max_tokens, req.temperature, req.top_k, req.n, req.stop)
        gen = generate(self.llm.model, self.llm.tokenizer, prompt, max_tokens, req.temperature, req.top_k,
                       _seed(req.seed), req.stop)
        head = {"id": f"chatcmpl-{secrets.token_hex(12)}", "created": int(time.time()), "model": self.llm.model_name}
        if req.stream:
            chunk = {**head, "object": "chat.completion.chunk"}
            self._start_stream()
            self._event({**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                               "logprobs": None, "finish_reason": None}]})
            n = 0
            for step in gen:
                lp = {"content": _chat_logprobs([step])} if req.logprobs else None
                self._event({**chunk, "choices": [{"index": 0, "delta": {"content": step.text}, "logprobs": lp,
                                                   "finish_reason": None}]})
                n += 1
            self._event({**chunk, "choices": [{"index": 0, "delta": {}, "logprobs": None,
                                               "finish_reason": gen.stop_reason}]})
            self._end_stream(chunk, gen, n, req.stream_options)
            return
        steps = list(gen)
        self._json(HTTPStatus.OK, {**head, "object": "chat.completion", "choices": [{
            "index": 0, "message": {"role": "assistant", "content": "".join(s.text for s in steps)},
            "finish_reason": gen.stop_reason,
            "logprobs": {"content": _chat_logprobs(steps)} if req.logprobs else None}],
            "usage": _usage(gen, len(steps))})

    # ------------------------------------------------------------------------------------------- writing

    def _json(self, status: HTTPStatus, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, exc: RequestError) -> None:
        kind = "invalid_request_error" if exc.status < 500 else "server_error"
        try:
            self._json(exc.status, {"error": {"message": exc.message, "type": kind, "param": exc.param,
                                              "code": None}})
        except (BrokenPipeError, ConnectionResetError):
            log.debug("client went away before the %d error", exc.status)

    def _start_stream(self) -> None:
        # HTTP/1.0 without Content-Length: the stream ends when the connection closes.
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        self.wfile.flush()

    def _event(self, payload: dict[str, Any] | str) -> None:
        data = payload if isinstance(payload, str) else json.dumps(payload)
        self.wfile.write(f"data: {data}\n\n".encode())
        self.wfile.flush()

    def _end_stream(self, head: dict[str, Any], gen: Generation, completion_tokens: int,
                    options: StreamOptions | None) -> None:
        if options is not None and options.include_usage:
            self._event({**head, "choices": [], "usage": _usage(gen, completion_tokens)})
        self._event("[DONE]")


def _seed(seed: int | None) -> int:
    return secrets.randbits(63) if seed is None else seed


def _usage(gen: Generation, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": gen.prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": gen.prompt_tokens + completion_tokens}


def _completion_logprobs(steps: list[Step], offset: int) -> dict[str, Any]:
    offsets = []
    for s in steps:
        offsets.append(offset)
        offset += len(s.text)
    return {"tokens": [s.text for s in steps], "token_logprobs": [s.logprob for s in steps],
            "top_logprobs": None, "text_offset": offsets}


def _chat_logprobs(steps: list[Step]) -> list[dict[str, Any]]:
    return [{"token": s.text, "logprob": s.logprob, "bytes": list(s.text.encode()), "top_logprobs": []}
            for s in steps]
