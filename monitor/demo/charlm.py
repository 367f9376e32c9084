"""The demo LLM: a character-level GPT trained in seconds on a CPU, generating token by token.

The model follows nanoGPT's ``model.py``: one :class:`GPTConfig` handed to every module, pre-LayerNorm
transformer blocks (causal self-attention, then an MLP), a final LayerNorm and a language-model head tied to
the token embedding. Tokens are characters (:class:`CharTokenizer`); id 0 is reserved for characters the
training text did not contain.

:func:`train` fits it on a text, :func:`generate` yields each new token with its log-probability as soon as it
is sampled, and :func:`prompt_embedding` mean-pools the final hidden state for embedding-drift detection.
:func:`load_or_train` keeps the trained weights in a cache directory so the demo retrains only when the
corpus or a hyper-parameter changes.

torch is imported here at module level: importing this module (and so :mod:`monitor.demo`) needs
``inferwatch[torch]``; :mod:`monitor` outside the demo never imports it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

try:
    import torch
    from torch import nn
    from torch.nn import functional as F
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError("the demo LLM needs torch: pip install 'inferwatch[torch]'") from exc

StopReason = Literal["length", "stop"]
UNKNOWN = "\ufffd"  # what the reserved id 0 decodes to

# Training defaults: about 27 s on two CPU cores for the default GPTConfig on the plays (val loss ~1.83 nats/char).
DEFAULT_STEPS = 900
DEFAULT_BATCH_SIZE = 32
DEFAULT_LR = 6e-3


@dataclass(frozen=True)
class GPTConfig:
    """Hyper-parameters of the model, handed to every module.

    ``vocab_size`` 0 means "take it from the tokenizer" (:func:`train` fills it in); any other value must
    match the tokenizer's.
    """

    vocab_size: int = 0
    block_size: int = 64  # longest context the model attends over
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 96
    dropout: float = 0.0


class CharTokenizer:
    """Characters to ids and back. Id 0 is reserved for characters outside the vocabulary.

    Parameters
    ----------
    chars
        The vocabulary, one character per entry, without duplicates; character ``chars[i]`` has id ``i + 1``.

    Examples
    --------
    >>> tok = CharTokenizer.from_text("to be or not")
    >>> tok.vocab_size
    8
    >>> tok.encode("to be!")
    [7, 5, 1, 2, 3, 0]
    >>> tok.decode(tok.encode("not to be"))
    'not to be'
    """

    def __init__(self, chars: Sequence[str]) -> None:
        if any(len(c) != 1 for c in chars) or len(set(chars)) != len(chars):
            raise ValueError("chars must be distinct single characters")
        self.chars: tuple[str, ...] = tuple(chars)
        self._ids = {c: i + 1 for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars) + 1

    def encode(self, text: str) -> list[int]:
        return [self._ids.get(c, 0) for c in text]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.token_text(i) for i in ids)

    def token_text(self, token_id: int) -> str:
        return self.chars[token_id - 1] if 0 < token_id <= len(self.chars) else UNKNOWN


# --------------------------------------------------------------------------------------------- the model


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        if config.n_embd % config.n_head != 0:
            raise ValueError(f"n_embd {config.n_embd} must be a multiple of n_head {config.n_head}")
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)  # query, key, value for all heads at once
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.dropout = config.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.size()  # (B, T, C)
        q, k, v = self.c_attn(x).split(C, dim=2)  # 3 x (B, T, C)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        # softmax(q k^T / sqrt(hs) + causal mask) v
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True
        )  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        out: torch.Tensor = self.resid_dropout(self.c_proj(y))  # (B, T, C)
        return out


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.gelu(self.c_fc(x))  # (B, T, 4C)
        out: torch.Tensor = self.dropout(self.c_proj(x))  # (B, T, C)
        return out


class Block(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))  # (B, T, C)
        x = x + self.mlp(self.ln_2(x))  # (B, T, C)
        return x


class GPT(nn.Module):
    """A character-level GPT: ``model(idx)`` maps token ids (B, T) to next-token logits (B, T, V).

    Examples
    --------
    >>> model = GPT(GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=2, n_embd=8))
    >>> tuple(model(torch.zeros(3, 5, dtype=torch.long)).shape)
    (3, 5, 10)
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        if config.vocab_size < 2:
            raise ValueError(f"vocab_size must be at least 2, got {config.vocab_size}")
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying (Press & Wolf 2017)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: residual projections scaled by 1/sqrt(2 n_layer)
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def hidden(self, idx: torch.Tensor) -> torch.Tensor:
        """Final hidden states (after the last LayerNorm) of token ids ``idx`` (B, T), T <= block_size."""
        T = idx.size(1)  # idx is (B, T)
        if self.config.block_size < T:
            raise ValueError(f"sequence of length {T} exceeds block_size {self.config.block_size}")
        pos = torch.arange(T, dtype=torch.long, device=idx.device)  # (T,)
        x = self.drop(self.wte(idx) + self.wpe(pos))  # (B, T, C)
        for block in self.h:
            x = block(x)  # (B, T, C)
        out: torch.Tensor = self.ln_f(x)  # (B, T, C)
        return out

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.lm_head(self.hidden(idx))  # (B, T, V)
        return logits


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood in nats per token of targets (B, T) under logits (B, T, V)."""
    return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


# ------------------------------------------------------------------------------------------------ training


@dataclass(frozen=True)
class TrainStats:
    steps: int
    batch_size: int
    lr: float
    seed: int
    seconds: float
    tokens_per_second: float  # training throughput
    losses: tuple[float, ...]  # one per step, nats per character
    train_loss: float  # mean of the last 20 steps
    val_loss: float | None  # on the held-out last 10% of the text; None when that is shorter than a block


def _batch(data: torch.Tensor, block_size: int, batch_size: int, gen: torch.Generator) -> tuple[
    torch.Tensor, torch.Tensor
]:
    ix = torch.randint(len(data) - block_size, (batch_size,), generator=gen)  # (B,)
    offsets = torch.arange(block_size)  # (T,)
    x = data[ix[:, None] + offsets]  # (B, T)
    y = data[ix[:, None] + offsets + 1]  # (B, T) the next character of each position
    return x, y


def train(
    text: str,
    config: GPTConfig,
    steps: int = DEFAULT_STEPS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    lr: float = DEFAULT_LR,
    seed: int = 0,
    progress: Callable[[int, float], None] | None = None,
) -> tuple[GPT, CharTokenizer, TrainStats]:
    """Train a :class:`GPT` on ``text`` with AdamW, warm-up then cosine decay to ``lr / 10``.

    The first 90% of the text is trained on and the last 10% held out for ``val_loss``. ``progress`` is
    called after every step with ``(step, loss)``. Deterministic for a given seed on the same machine.
    """
    if steps < 1 or batch_size < 1 or lr <= 0:
        raise ValueError(f"steps, batch_size and lr must be positive, got {steps}, {batch_size}, {lr}")
    tokenizer = CharTokenizer.from_text(text)
    if config.vocab_size == 0:
        config = GPTConfig(**{**asdict(config), "vocab_size": tokenizer.vocab_size})
    elif config.vocab_size != tokenizer.vocab_size:
        raise ValueError(f"config.vocab_size {config.vocab_size} != the text's {tokenizer.vocab_size} (use 0)")
    data = torch.tensor(tokenizer.encode(text), dtype=torch.long)  # (N,)
    n_train = int(0.9 * len(data))
    train_data, val_data = data[:n_train], data[n_train:]  # (0.9 N,) (0.1 N,)
    if len(train_data) <= config.block_size + 1:
        raise ValueError(f"text of {len(text)} characters is too short for block_size {config.block_size}")

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = GPT(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.1)
    warmup = max(1, min(50, steps // 10))
    losses: list[float] = []
    model.train()
    start = time.perf_counter()
    for step in range(steps):
        # linear warm-up, then cosine decay from lr to lr / 10
        decay = 0.5 * (1 + math.cos(math.pi * max(0, step - warmup) / max(1, steps - warmup)))
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * decay)
        x, y = _batch(train_data, config.block_size, batch_size, gen)  # (B, T) (B, T)
        loss = cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        if progress is not None:
            progress(step, losses[-1])
    seconds = time.perf_counter() - start
    model.eval()

    val_loss = None
    if len(val_data) > config.block_size + 1:
        with torch.no_grad():
            x, y = _batch(val_data, config.block_size, 8 * batch_size, gen)  # (8B, T) (8B, T)
            val_loss = cross_entropy(model(x), y).item()
    tail = losses[-20:]
    stats = TrainStats(steps=steps, batch_size=batch_size, lr=lr, seed=seed, seconds=seconds,
                       tokens_per_second=steps * batch_size * config.block_size / seconds,
                       losses=tuple(losses), train_loss=sum(tail) / len(tail), val_loss=val_loss)
    return model, tokenizer, stats


# --------------------------------------------------------------------------------------------- persistence


def save(path: Path, model: GPT, tokenizer: CharTokenizer, stats: TrainStats) -> None:
    """Write the weights, vocabulary, config and stats to ``path`` atomically (loadable with weights_only)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save({"config": asdict(model.config), "chars": list(tokenizer.chars),
                "state_dict": model.state_dict(), "stats": {**asdict(stats), "losses": list(stats.losses)}}, tmp)
    os.replace(tmp, path)


def load(path: Path) -> tuple[GPT, CharTokenizer, TrainStats]:
    """Read what :func:`save` wrote; ``weights_only=True`` so the file cannot run code."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    model = GPT(GPTConfig(**blob["config"]))
    model.load_state_dict(blob["state_dict"])
    model.eval()
    stats = TrainStats(**{**blob["stats"], "losses": tuple(blob["stats"]["losses"])})
    return model, CharTokenizer(blob["chars"]), stats


def cache_path(cache_dir: Path, text: str, config: GPTConfig, steps: int, batch_size: int, lr: float,
               seed: int) -> Path:
    """Where :func:`load_or_train` keeps a model: keyed by the text, config and every training argument."""
    key = json.dumps({"text": hashlib.sha256(text.encode()).hexdigest(), "config": asdict(config),
                      "steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed}, sort_keys=True)
    return cache_dir / f"charlm-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"


def load_or_train(
    text: str,
    config: GPTConfig,
    cache_dir: Path,
    steps: int = DEFAULT_STEPS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    lr: float = DEFAULT_LR,
    seed: int = 0,
    progress: Callable[[int, float], None] | None = None,
) -> tuple[GPT, CharTokenizer, TrainStats]:
    """The cached model for these arguments if there is one, else :func:`train` and cache it."""
    path = cache_path(cache_dir, text, config, steps, batch_size, lr, seed)
    if path.exists():
        return load(path)
    model, tokenizer, stats = train(text, config, steps, batch_size, lr, seed, progress)
    save(path, model, tokenizer, stats)
    return model, tokenizer, stats


# ------------------------------------------------------------------------------------------------ inference


@dataclass(frozen=True)
class Step:
    token_id: int
    text: str
    logprob: float  # natural log of the token's probability under the model (before temperature and top-k)


class Generation:
    """An iterator over the :class:`Step` s of one generation; made by :func:`generate`.

    Once it is exhausted, ``stop_reason`` says why: ``"length"`` (``max_new_tokens`` reached) or ``"stop"``
    (a stop string was produced; its characters are not yielded). ``prompt_tokens`` is the prompt's length
    in tokens before it is cropped to the model's context.
    """

    def __init__(self, model: GPT, tokenizer: CharTokenizer, prompt: str, max_new_tokens: int,
                 temperature: float, top_k: int | None, seed: int, stops: tuple[str, ...]) -> None:
        self.prompt_tokens = len(tokenizer.encode(prompt))
        self.stop_reason: StopReason | None = None
        self._steps = self._sample(model, tokenizer, _context(tokenizer, prompt), max_new_tokens, temperature,
                                   top_k, seed, stops)

    def __iter__(self) -> Generation:
        return self

    def __next__(self) -> Step:
        return next(self._steps)

    def _sample(self, model: GPT, tokenizer: CharTokenizer, ids: list[int], max_new_tokens: int,
                temperature: float, top_k: int | None, seed: int, stops: tuple[str, ...]) -> Iterator[Step]:
        gen = torch.Generator().manual_seed(seed)
        block = model.config.block_size
        idx = torch.tensor([ids[-block:]], dtype=torch.long)  # (1, T)
        held: list[Step] = []  # sampled, but possibly the start of a stop string
        for _ in range(max_new_tokens):
            with torch.no_grad():
                logits = model(idx)[0, -1].float()  # (V,) next-token logits
            logp = F.log_softmax(logits, dim=-1)  # (V,)
            logits[0] = -math.inf  # never sample the unknown-character id
            if temperature == 0:
                token = int(logits.argmax())
            else:
                scaled = logits / temperature  # (V,)
                if top_k is not None and top_k < scaled.numel():
                    kth = torch.topk(scaled, top_k).values[-1]
                    scaled = scaled.masked_fill(scaled < kth, -math.inf)  # (V,)
                token = int(torch.multinomial(F.softmax(scaled, dim=-1), 1, generator=gen))
            idx = torch.cat([idx, torch.tensor([[token]])], dim=1)[:, -block:]  # (1, T + 1), cropped to block
            held.append(Step(token, tokenizer.token_text(token), float(logp[token])))
            if not stops:
                yield held.pop()
                continue
            pending = "".join(s.text for s in held)
            hits = [i for i in (pending.find(s) for s in stops) if i >= 0]
            if hits:
                cut = min(hits)
                while held and len(held[0].text) <= cut:  # the steps wholly before the stop string
                    cut -= len(held[0].text)
                    yield held.pop(0)
                self.stop_reason = "stop"
                return
            # hold back the longest tail of the pending text that begins some stop string
            keep = max((n for s in stops for n in range(1, min(len(s), len(pending)) + 1)
                        if pending.endswith(s[:n])), default=0)
            while held and sum(len(s.text) for s in held) > keep:
                yield held.pop(0)
        yield from held
        self.stop_reason = "length"


def _context(tokenizer: CharTokenizer, prompt: str) -> list[int]:
    # An empty prompt starts, like a new speech in the plays, after a line break.
    return tokenizer.encode(prompt) if prompt else tokenizer.encode("\n")


def generate(
    model: GPT,
    tokenizer: CharTokenizer,
    prompt: str,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int = 0,
    stop: str | Sequence[str] | None = None,
) -> Generation:
    """Sample up to ``max_new_tokens`` characters after ``prompt``, yielding each as soon as it is sampled.

    ``temperature`` 0 is greedy decoding; ``top_k`` samples among the k likeliest tokens. The reserved
    unknown id is never sampled. With ``stop``, generation ends when any stop string has been produced; a
    token that might begin a stop string is held back until the string either completes (it is then
    dropped, as in the OpenAI API) or turns out not to (it is then yielded).

    Examples
    --------
    >>> model, tok, _ = train("to be or not to be " * 20, GPTConfig(block_size=8, n_layer=1, n_head=2, n_embd=8),
    ...                       steps=5, batch_size=4)
    >>> gen = generate(model, tok, "to be", max_new_tokens=3, seed=1)
    >>> steps = list(gen)
    >>> len(steps), gen.stop_reason, all(s.logprob <= 0 for s in steps)
    (3, 'length', True)
    """
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if temperature < 0 or not math.isfinite(temperature):
        raise ValueError(f"temperature must be finite and >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    stops = tuple(s for s in ([stop] if isinstance(stop, str) else stop or ()) if s)
    return Generation(model, tokenizer, prompt, max_new_tokens, temperature, top_k, seed, stops)


def prompt_embedding(model: GPT, tokenizer: CharTokenizer, prompt: str) -> np.ndarray:
    """Mean-pooled final hidden state of the prompt's last ``block_size`` characters, (n_embd,) float32."""
    ids = _context(tokenizer, prompt)[-model.config.block_size:]
    with torch.no_grad():
        h = model.hidden(torch.tensor([ids], dtype=torch.long))  # (1, T, C)
    pooled: np.ndarray = h[0].mean(dim=0).numpy().astype(np.float32)  # (C,)
    return pooled
