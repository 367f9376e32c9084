# syntax=docker/dockerfile:1
# inferwatch detector: the detection daemon (`inferwatch run`) with the core dependencies (scipy included).
#   docker build -f deploy/docker/detector.Dockerfile -t inferwatch/detector:0.1.0 .
#   docker run --read-only --tmpfs /tmp -v ./inferwatch.yaml:/etc/inferwatch/inferwatch.yaml:ro \
#     -p 9464:9464 inferwatch/detector:0.1.0
# Runs as uid 10001 with a read-only root filesystem: the config and profiles are mounted read-only, the only
# writable path is the state volume (alerts.state.path, reports.dir when used) and a tmpfs on /tmp.
# server.host must be 0.0.0.0 in a container, so server.token_file (or allow_unauthenticated) is required.

FROM python:3.11-bookworm AS build
WORKDIR /src
COPY deploy/docker/detector-requirements.txt /tmp/requirements.txt
RUN python -m venv --without-pip /opt/inferwatch \
 && pip --python /opt/inferwatch/bin/python install --no-cache-dir --no-compile -r /tmp/requirements.txt
COPY pyproject.toml README.md LICENSE ./
COPY monitor ./monitor
COPY collectors ./collectors
COPY detectors ./detectors
COPY dashboards ./dashboards
RUN pip --python /opt/inferwatch/bin/python install --no-cache-dir --no-compile --no-deps .
WORKDIR /opt/inferwatch/lib/python3.11/site-packages
RUN find . -depth -type d -name tests -exec rm -rf {} + \
 && strip --strip-unneeded uvloop/*.so yaml/*.so \
 && /opt/inferwatch/bin/python -m compileall -q -j 0 --invalidation-mode unchecked-hash . \
 && /opt/inferwatch/bin/python -c "import monitor.cli, monitor.pipeline, scipy.stats"

FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="inferwatch-detector" \
      org.opencontainers.image.description="inferwatch detection daemon (inferwatch run)" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.inferwatch.component="detector"
ENV PATH=/opt/inferwatch/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /opt/inferwatch /opt/inferwatch
# profiles/: where a volume of reference profiles goes (a new named volume takes this owner)
RUN install -d -o 10001 -g 10001 -m 0750 /var/lib/inferwatch /var/lib/inferwatch/profiles \
 && install -d -m 0755 /etc/inferwatch
USER 10001:10001
VOLUME ["/var/lib/inferwatch", "/tmp"]
# 9464: /metrics, /healthz, /readyz, the status page, /reports/ and, on the embedded bus, POST /v1/events
EXPOSE 9464
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=2).status != 200)"]
ENTRYPOINT ["inferwatch", "run"]
CMD ["--config", "/etc/inferwatch/inferwatch.yaml"]
