"""The HTTP sidecar against a real asyncio model server on 127.0.0.1: capture, pass-through, streaming, failures."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from prometheus_client import CollectorRegistry

from collectors import EventProducer
from collectors.sidecar import ModelRef, Sidecar, SidecarConfig
from collectors.sidecar.http import ChunkedDecoder, HttpError
from monitor.events import InferenceEvent, decode_record
from monitor.transport import MemoryBus
from tests.support import DEADLINE_S, sidecar_thread, wait_until

ERROR_BODY = b'{"error": "overloaded", "retry": true}\n'
PROBS = [0.1, 0.7, 0.2]
TOKENS = ["I", " like", " tea", "."]


class Upstream:
    """A model server: OIP infer, OpenAI completions/chat (streamed or not), an error, a hang and a reset route.

    ``gate`` holds the last event of a streamed answer until the test releases it.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.gate = asyncio.Event()
        self.seen_request_ids: list[str | None] = []
        self.seen_headers: list[dict[str, str]] = []
        self.started = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        if not self.started.wait(DEADLINE_S):
            raise RuntimeError("the upstream did not start")

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = self.server.sockets[0].getsockname()[1]
        self.started.set()
        self.loop.run_forever()

    def release(self) -> None:
        self.loop.call_soon_threadsafe(self.gate.set)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()

    async def _shutdown(self) -> None:
        self.server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                line, *fields = head.decode().split("\r\n")
                method, path, _ = line.split(" ")
                headers = {k.lower(): v.strip() for k, _, v in (f.partition(":") for f in fields if f)}
                if headers.get("transfer-encoding") == "chunked":
                    body = b""
                    while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
                        body += (await reader.readexactly(size + 2))[:-2]
                    await reader.readuntil(b"\r\n")
                else:
                    body = await reader.readexactly(int(headers.get("content-length", 0)))
                self.seen_request_ids.append(headers.get("x-request-id"))
                self.seen_headers.append(headers)
                if not await self._answer(method, path, body, writer):
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _answer(self, method: str, path: str, body: bytes, writer: asyncio.StreamWriter) -> bool:
        if path == "/hang":
            await asyncio.sleep(3600)
        if path == "/reset":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return False
        if path == "/error":
            writer.write(b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nx-upstream: yes\r\n"
                         b"content-length: %d\r\n\r\n%s" % (len(ERROR_BODY), ERROR_BODY))
            return True
        if path.startswith("/v2/models/") and method == "POST":
            try:
                request = json.loads(body)
                batch = request["inputs"][0]["shape"][0]
            except (ValueError, KeyError, IndexError, TypeError):
                if path.split("/")[3] == "strict":
                    self._json(writer, {"error": "bad request"}, 400)
                    return True
                batch = 1  # lenient: the sidecar, not the server, must notice the garbage
            self._json(writer, {"model_name": path.split("/")[3], "model_version": "3", "outputs": [
                {"name": "probs", "shape": [batch, 3], "datatype": "FP32", "data": PROBS * batch}]})
            return True
        if path in ("/v1/completions", "/v1/chat/completions"):
            request = json.loads(body)
            chat = path == "/v1/chat/completions"
            if not request.get("stream"):
                choice = {"index": 0, "finish_reason": "stop"} | (
                    {"message": {"role": "assistant", "content": "".join(TOKENS)}} if chat else
                    {"text": "".join(TOKENS)})
                self._json(writer, {"model": request["model"], "choices": [choice],
                                    "usage": {"prompt_tokens": 9, "completion_tokens": len(TOKENS)}})
                return True
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
            for i, token in enumerate(TOKENS):
                last = i == len(TOKENS) - 1
                if last and request.get("gated"):
                    await self.gate.wait()
                choice = {"index": 0, "finish_reason": "stop" if last else None} | (
                    {"delta": {"content": token}} if chat else {"text": token})
                self._chunk(writer, b"data: " + json.dumps({"model": request["model"], "choices": [choice]}).encode()
                            + b"\n\n")
                await writer.drain()
                await asyncio.sleep(0.05)
            if request.get("stream_options", {}).get("include_usage"):
                usage = {"prompt_tokens": 5, "completion_tokens": len(TOKENS)}
                self._chunk(writer, b"data: " + json.dumps({"choices": [], "usage": usage}).encode() + b"\n\n")
            self._chunk(writer, b"data: [DONE]\n\n")
            self._chunk(writer, b"")
            return True
        self._json(writer, {"path": path, "method": method})
        return True

    @staticmethod
    def _json(writer: asyncio.StreamWriter, obj: object, status: int = 200) -> None:
        data = json.dumps(obj).encode()
        writer.write(b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                     % (status, len(data), data))

    @staticmethod
    def _chunk(writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(b"%x\r\n%s\r\n" % (len(data), data))


@dataclass
class Stack:
    upstream: Upstream
    sidecar: Sidecar
    registry: CollectorRegistry
    producer: EventProducer
    bus: MemoryBus

    @property
    def port(self) -> int:
        return self.sidecar.address[1]

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    def events(self, n: int) -> list[InferenceEvent]:
        """The captured events once ``n`` of them reached the bus (and any others already sent by then)."""
        consumer = self.bus.consumer(["events"], f"reader-{time.monotonic_ns()}")
        out: list[InferenceEvent] = []

        def read(timeout_s: float) -> int:
            out.extend(e for m in consumer.poll(timeout_s) for e in decode_record(m.value)
                       if isinstance(e, InferenceEvent))
            return len(out)

        wait_until(lambda: read(0.05) >= n, f"{n} captured events on the bus")
        assert self.producer.flush(DEADLINE_S)
        while len(out) < read(0):  # anything sent beyond the n (a test then sees too many)
            pass
        consumer.close()
        return out

    def nothing_captured(self) -> bool:
        """True when no event reached the bus: call once the request's skip was counted (a positive condition),
        so that there is nothing left on its way."""
        assert self.producer.flush(DEADLINE_S)
        consumer = self.bus.consumer(["events"], f"reader-{time.monotonic_ns()}")
        try:
            return consumer.poll(0) == []
        finally:
            consumer.close()


def start_stack(server: Upstream | None = None, **overrides: object) -> tuple[Stack, threading.Event, threading.Thread]:
    upstream = server or Upstream()
    config = SidecarConfig(**{"upstream": f"http://127.0.0.1:{upstream.port}", "listen_host": "127.0.0.1",
                              "listen_port": 0, "admin_host": "127.0.0.1", "admin_port": 0,
                              "models": {"resnet": ModelRef("cnn", "7")}, "response_timeout_s": DEADLINE_S,
                              "connect_timeout_s": DEADLINE_S, **overrides})  # type: ignore[arg-type]
    registry, bus = CollectorRegistry(), MemoryBus()
    producer = EventProducer(bus.producer(), "events", registry=registry, linger_s=0.005)
    sidecar, stop, thread = sidecar_thread(config, producer, registry)
    return Stack(upstream, sidecar, registry, producer, bus), stop, thread


@pytest.fixture
def stack() -> Iterator[Stack]:
    s, stop, thread = start_stack()
    yield s
    stop.set()
    thread.join(DEADLINE_S)
    s.producer.close(DEADLINE_S)
    s.upstream.close()


def call(port: int, method: str, path: str, body: object = None, headers: dict[str, str] | None = None,
         conn: http.client.HTTPConnection | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE_S)
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    conn.request(method, path, body=data, headers={"content-type": "application/json", **(headers or {})})
    response = conn.getresponse()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()


def oip(batch: int = 2) -> dict[str, object]:
    pixels = [[float(i + j) for j in range(4)] for i in range(batch)]  # sample i: i, i+1, i+2, i+3
    return {"inputs": [{"name": "pixels", "shape": [batch, 4], "datatype": "FP32", "data": pixels}]}


def test_oip_infer_is_captured_per_sample_and_passed_through_byte_for_byte(stack: Stack) -> None:
    direct = call(stack.upstream.port, "POST", "/v2/models/resnet/infer", oip())
    started = time.monotonic()
    status, headers, body = call(stack.port, "POST", "/v2/models/resnet/infer", oip(), {"x-request-id": "req-1"})
    assert (status, body) == (direct[0], direct[2])
    assert headers["x-request-id"] == "req-1"
    events = sorted(stack.events(2), key=lambda e: e.request_id)
    seen_after = time.monotonic() - started  # the proxy timed the exchange within this span
    assert [e.request_id for e in events] == ["req-1:0", "req-1:1"]
    first = events[0]
    assert (first.model, first.version, first.task, first.batch_size) == ("cnn", "7", "classification", 2)
    assert first.features == pytest.approx({"pixels.mean": 1.5, "pixels.std": 1.118034, "pixels.min": 0.0,
                                            "pixels.max": 3.0})
    assert events[1].features["pixels.mean"] == pytest.approx(2.5)
    assert first.prediction == 1 and first.probabilities == pytest.approx(PROBS)
    # the proxy's own measure of the exchange, in seconds: inside the span the test saw from outside it
    assert first.latency is not None and 0 < first.latency.total_s <= seen_after
    assert stack.metric("inferwatch_sidecar_captured_events_total", route="oip") == 2
    assert stack.metric("inferwatch_sidecar_requests_total", route="oip", status="2xx") == 1


def test_request_id_is_created_when_missing_and_sent_upstream(stack: Stack) -> None:
    status, headers, _ = call(stack.port, "POST", "/v2/models/other/infer", oip(1))
    assert status == 200
    made = headers["x-request-id"]
    assert len(made) == 32 and stack.upstream.seen_request_ids[-1] == made
    (event,) = stack.events(1)
    assert event.request_id == made and (event.model, event.version) == ("other", "3")  # version from response


def test_hop_by_hop_fields_stay_on_the_client_connection(stack: Stack) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=DEADLINE_S)
    status, _, _ = call(stack.port, "POST", "/v2/models/resnet/infer", oip(1), conn=conn, headers={
        "Connection": "close, X-Hop", "X-Hop": "1", "Keep-Alive": "timeout=5", "X-Kept": "2"})
    assert status == 200
    seen = stack.upstream.seen_headers[-1]
    assert seen["x-kept"] == "2" and not {"connection", "x-hop", "keep-alive"} & set(seen)
    # the pooled upstream connection was not closed by the client's wish: the next request reuses it
    assert call(stack.port, "POST", "/v2/models/resnet/infer", oip(1))[0] == 200
    conn.close()


def test_completions_and_chat_give_generation_events(stack: Stack) -> None:
    call(stack.port, "POST", "/v1/completions", {"model": "llama", "prompt": "Say something"}, {"x-request-id": "c"})
    call(stack.port, "POST", "/v1/chat/completions",
         {"model": "llama", "messages": [{"role": "user", "content": "Hi"}]}, {"x-request-id": "h"})
    events = {e.request_id: e for e in stack.events(2)}
    for rid in ("c", "h"):
        g = events[rid].generation
        assert g is not None and events[rid].task == "generation"
        assert (g.prompt_tokens, g.output_tokens, g.output_chars, g.stop_reason, g.refusal) == (
            9, 4, len("".join(TOKENS)), "stop", False)


def read_chunk(sock: socket.socket, buffer: bytearray) -> bytes:
    """Read from ``sock`` until one SSE event (ending in a blank line) is in ``buffer``; return it."""
    while b"\n\n" not in buffer:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("closed")
        buffer += data
    end = buffer.index(b"\n\n") + 2
    event = bytes(buffer[:end])
    del buffer[:end]
    return event


def test_stream_reaches_the_client_chunk_by_chunk(stack: Stack) -> None:
    body = json.dumps({"model": "llama", "prompt": "x", "stream": True, "gated": True}).encode()
    with socket.create_connection(("127.0.0.1", stack.port), timeout=DEADLINE_S) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nhost: t\r\nx-request-id: s1\r\ncontent-length: %d\r\n\r\n%s"
                     % (len(body), body))
        buffer = bytearray()
        first = read_chunk(sock, buffer)  # the upstream is still holding its last token
        assert b"HTTP/1.1 200" in first and b'"text": "I"' in first
        assert not stack.upstream.gate.is_set()
        stack.upstream.release()
        while b"0\r\n\r\n" not in buffer:
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("closed before the end of the stream")
            buffer += data
    assert b"data: [DONE]" in buffer
    (event,) = stack.events(1)
    assert event.generation is not None and event.latency is not None
    assert event.generation.output_tokens == 4 and event.generation.output_chars == len("".join(TOKENS))
    assert event.attributes == {"usage": "estimated"}  # counted from the stream's events
    ttft, tpot = event.latency.time_to_first_token_s, event.latency.time_per_output_token_s
    assert ttft is not None and tpot is not None and 0 < ttft < event.latency.total_s
    assert tpot >= 0.04  # the upstream waits 50 ms between tokens


def test_stream_with_usage_and_chat_deltas(stack: Stack) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=DEADLINE_S)
    status, headers, body = call(stack.port, "POST", "/v1/chat/completions",
                                 {"model": "llama", "stream": True, "stream_options": {"include_usage": True},
                                  "messages": [{"role": "user", "content": "Hi"}]}, {"x-request-id": "u"}, conn)
    direct = call(stack.upstream.port, "POST", "/v1/chat/completions",
                  {"model": "llama", "stream": True, "stream_options": {"include_usage": True},
                   "messages": [{"role": "user", "content": "Hi"}]})
    assert status == 200 and headers["content-type"] == "text/event-stream" and body == direct[2]
    assert call(stack.port, "GET", "/anything", conn=conn)[0] == 200  # the same connection is kept alive
    (event,) = [e for e in stack.events(1) if e.request_id == "u"]
    assert event.generation is not None and (event.generation.prompt_tokens, event.generation.output_tokens) == (5, 4)
    assert event.attributes == {}


def test_upstream_errors_reach_the_client_unchanged_and_are_not_captured(stack: Stack) -> None:
    status, headers, body = call(stack.port, "POST", "/error", {"a": 1})
    assert (status, body, headers["x-upstream"]) == (503, ERROR_BODY, "yes")
    status, _, body = call(stack.port, "POST", "/v2/models/strict/infer", b"{not json")
    assert status == 400 and json.loads(body) == {"error": "bad request"}
    wait_until(lambda: stack.metric("inferwatch_sidecar_capture_skipped_total", route="oip",
                                    reason="upstream_status") == 1, "the 400 counted as not captured")
    assert stack.nothing_captured()
    assert stack.metric("inferwatch_sidecar_requests_total", route="other", status="5xx") == 1


@pytest.mark.parametrize(("body", "reason"), [
    (b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, 2]}], "bad": ', "invalid_json"),
    (json.dumps({"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [1, 2]}]}).encode(),
     "malformed"),
    (json.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": ["a"]}]}).encode(),
     "malformed"),
])
def test_malformed_oip_is_proxied_but_not_captured(stack: Stack, body: bytes, reason: str) -> None:
    status, _, _ = call(stack.port, "POST", "/v2/models/resnet/infer", body)
    assert status == 200
    wait_until(lambda: stack.metric("inferwatch_sidecar_capture_skipped_total", route="oip", reason=reason) == 1,
               f"the request counted as not captured ({reason})")
    assert stack.nothing_captured()


def test_bodies_over_the_capture_cap_are_proxied_not_captured() -> None:
    s, stop, thread = start_stack(capture_max_bytes=1000)
    try:
        big = oip(64)
        status, _, body = call(s.port, "POST", "/v2/models/resnet/infer", big)
        assert status == 200 and len(json.loads(body)["outputs"][0]["data"]) == 64 * 3
        wait_until(lambda: s.metric("inferwatch_sidecar_capture_skipped_total", route="oip", reason="too_large") == 1,
                   "the request counted as too large to capture")
        assert s.nothing_captured()
    finally:
        stop.set()
        thread.join(DEADLINE_S)
        s.upstream.close()


@pytest.mark.parametrize("timeout_s", [1.0, 1.6])  # a timer per request; a timer armed by the sweep near the end
def test_hanging_upstream_gives_504_after_the_response_timeout(timeout_s: float) -> None:
    s, stop, thread = start_stack(response_timeout_s=timeout_s)
    try:
        started = time.monotonic()
        status, headers, body = call(s.port, "POST", "/hang", {}, {"x-request-id": "h1"})
        waited = time.monotonic() - started
        assert status == 504 and b"timed out" in body and headers["x-request-id"] == "h1"
        assert waited > timeout_s - 0.1  # it waited for the timeout (the client's own timeout bounds the other side)
        wait_until(lambda: s.metric("inferwatch_sidecar_upstream_errors_total", reason="response_timeout") == 1,
                   "the response timeout counted")
    finally:
        stop.set()
        thread.join(DEADLINE_S)
        s.upstream.close()


def test_upstream_reset_gives_502_and_the_proxy_goes_on(stack: Stack) -> None:
    status, _, body = call(stack.port, "GET", "/reset")
    assert status == 502 and b"upstream" in body
    wait_until(lambda: stack.metric("inferwatch_sidecar_upstream_errors_total", reason="reset") == 1,
               "the reset counted")
    assert call(stack.port, "GET", "/still-fine")[0] == 200


def test_unreachable_upstream_gives_502_and_not_ready() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    upstream = Upstream()
    s, stop, thread = start_stack(upstream, upstream=f"http://127.0.0.1:{free}")
    try:
        status, _, body = call(s.port, "POST", "/v1/completions", {"model": "m", "prompt": "p"})
        assert status == 502 and b"unreachable" in body
        assert s.metric("inferwatch_sidecar_upstream_errors_total", reason="connect_refused") == 1
        admin = s.sidecar.admin_address[1]
        assert call(admin, "GET", "/readyz")[0] == 503
        assert call(admin, "GET", "/healthz")[0] == 200
    finally:
        stop.set()
        thread.join(DEADLINE_S)
        upstream.close()


def test_admin_port_serves_readiness_and_metrics(stack: Stack) -> None:
    admin = stack.sidecar.admin_address[1]
    assert call(admin, "GET", "/readyz")[0] == 200
    call(stack.port, "POST", "/v2/models/resnet/infer", oip(1))

    def scraped() -> tuple[int, dict[str, str], bytes] | None:
        answer = call(admin, "GET", "/metrics")
        return answer if b'inferwatch_sidecar_requests_total{route="oip",status="2xx"} 1.0' in answer[2] else None

    status, headers, _ = wait_until(scraped, "the proxied request counted on the admin /metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert call(stack.port, "GET", "/metrics")[2] == b'{"path": "/metrics", "method": "GET"}'  # the model's own


def test_client_disconnect_mid_stream_is_counted_and_the_proxy_goes_on(stack: Stack) -> None:
    body = json.dumps({"model": "llama", "prompt": "x", "stream": True, "gated": True}).encode()
    with socket.create_connection(("127.0.0.1", stack.port), timeout=DEADLINE_S) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nhost: t\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
        read_chunk(sock, bytearray())
    wait_until(lambda: stack.metric("inferwatch_sidecar_client_errors_total", reason="disconnect") == 1,
               "the disconnect counted")
    stack.upstream.release()
    wait_until(lambda: stack.metric("inferwatch_sidecar_capture_skipped_total", route="completions",
                                    reason="incomplete") == 1, "the cut stream counted as not captured")
    assert call(stack.port, "POST", "/v1/completions", {"model": "m", "prompt": "p"})[0] == 200


@pytest.mark.parametrize(("raw", "status"), [
    (b"NONSENSE\r\n\r\n", 400),
    (b"POST /x HTTP/1.1\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n\r\n", 400),
    (b"GET /x HTTP/1.1\r\n" + b"x-long: " + b"a" * 70_000 + b"\r\n\r\n", 431),
])
def test_bad_requests_are_refused_and_counted(stack: Stack, raw: bytes, status: int) -> None:
    with socket.create_connection(("127.0.0.1", stack.port), timeout=DEADLINE_S) as sock:
        sock.sendall(raw)
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 %d" % status)
    reason = "head_too_large" if status == 431 else "bad_request"
    assert stack.metric("inferwatch_sidecar_client_errors_total", reason=reason) == 1


def test_chunked_request_body_and_pipelining_pass_through(stack: Stack) -> None:
    payload = json.dumps(oip(1)).encode()
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(payload), payload)
    one = b"POST /v2/models/resnet/infer HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n" + chunked
    two = b"GET /second HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", stack.port), timeout=DEADLINE_S) as sock:
        sock.sendall(one + two)
        answer = b""
        while data := sock.recv(65536):
            answer += data
    assert answer.count(b"HTTP/1.1 200") == 2 and answer.endswith(b'{"path": "/second", "method": "GET"}')
    assert len(stack.events(1)) == 1  # the chunked OIP request was decoded and captured


def test_chunked_decoder_rejects_garbage() -> None:
    with pytest.raises(HttpError):
        ChunkedDecoder().feed(b"zz\r\n", None)


@pytest.mark.parametrize("body", [
    b"5\r\nhelloXX0\r\n\r\n",  # chunk data not followed by CRLF (the smuggling shape of defect 15)
    b"5\r\nhello\n0\r\n\r\n",  # LF alone after the data
    b"5\nhello\r\n0\r\n\r\n",  # bare LF after the size
    b"-5\r\nhello\r\n0\r\n\r\n",  # not hex
    b"1" * 16 + b"\r\n",  # more hex digits than any body
    b"5;" + b"e" * 9000 + b"\r\n",  # size line over MAX_LINE_BYTES
    b"0\r\nGET /x HTTP/1.1\r\n\r\n",  # a request where the final CRLF should be
])
def test_chunked_decoder_rejects_broken_framing_however_it_is_split(body: bytes) -> None:
    with pytest.raises(HttpError, match="bad_chunk"):
        ChunkedDecoder().feed(body, None)
    decoder = ChunkedDecoder()
    with pytest.raises(HttpError, match="bad_chunk"):
        for i in range(len(body)):
            decoder.feed(body[i:i + 1], None)


def test_chunked_decoder_splits_at_every_byte_give_the_same_body() -> None:
    body = b"5\r\nhello\r\n6;name=value\r\n world\r\n0\r\nx-trailer: 1\r\n\r\nNEXT"
    for cut in range(len(body) + 1):
        decoder, out = ChunkedDecoder(), list[bytes]()
        used = decoder.feed(body[:cut], out)
        used += decoder.feed(body[used:], out) if used == cut else 0
        assert decoder.done and b"".join(out) == b"hello world" and body[used:] == b"NEXT"


def test_a_stream_that_finishes_without_text_is_an_empty_completion_event() -> None:
    from prometheus_client import CollectorRegistry

    from collectors.sidecar import Capturer, Exchange, SidecarConfig, sidecar_metrics

    body = (b'data: {"id":"c","object":"text_completion","model":"m","choices":[{"index":0,"text":"",'
            b'"finish_reason":"stop"}]}\n\n'
            b'data: {"id":"c","object":"text_completion","model":"m","choices":[],'
            b'"usage":{"prompt_tokens":4,"completion_tokens":0,"total_tokens":4}}\n\ndata: [DONE]\n\n')
    exchange = Exchange(route="completions", path="/v1/completions", request_id="r-empty", time=1.0,
                        request_body=b'{"model":"m","prompt":"Hi","stream":true}', status=200, response_body=body,
                        event_stream=True, pieces=[(0.01, len(body))], started=0.0, finished=0.02)
    (event,) = Capturer(SidecarConfig(), sidecar_metrics(CollectorRegistry())).capture(exchange)
    assert event.generation is not None
    assert (event.generation.output_tokens, event.generation.output_chars) == (0, 0)
    assert event.generation.stop_reason == "stop" and event.latency is not None
    assert event.latency.time_to_first_token_s is None


def test_the_sidecar_runs_on_uvloop_and_on_asyncio_without_it(monkeypatch: pytest.MonkeyPatch,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """Issue 12 item 1: uvloop when it is installed (a core dependency), asyncio's loop (and a line) when not."""
    import sys

    from collectors.sidecar.server import event_loop_factory

    uvloop = pytest.importorskip("uvloop")
    loop = event_loop_factory()()
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as on a platform without it
    with caplog.at_level("INFO", logger="collectors.sidecar.server"):
        loop = event_loop_factory()()
    try:
        assert type(loop).__module__.startswith("asyncio") and "uvloop is not installed" in caplog.text
    finally:
        loop.close()


def test_request_ids_made_by_the_proxy_are_unique_hex() -> None:
    """32 hex digits (as a uuid4's), made from a per-process random prefix and a counter: two proxies differ."""
    from collectors.sidecar.capture import Capturer
    from collectors.sidecar.metrics import sidecar_metrics
    from collectors.sidecar.proxy import Shared

    config = SidecarConfig()
    loop = asyncio.new_event_loop()
    try:
        proxies = []
        for _ in range(2):
            metrics = sidecar_metrics(CollectorRegistry())
            proxies.append(Shared(config, metrics, Capturer(config, metrics), None, loop))
        ids = [shared.new_request_id() for shared in proxies for _ in range(1000)]
    finally:
        loop.close()
    assert len(set(ids)) == len(ids) and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
