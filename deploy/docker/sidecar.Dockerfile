# syntax=docker/dockerfile:1
# inferwatch sidecar: the capturing reverse proxy that sits beside a model server in its pod.
# Core dependencies only (deploy/docker/sidecar-requirements.txt: no scipy, no torch); target size <= 200 MB.
#   docker build -f deploy/docker/sidecar.Dockerfile -t inferwatch/sidecar:0.1.0 .
#   docker run --read-only -v iw-spool:/var/spool/inferwatch -p 8000:8000 -p 9400:9400 inferwatch/sidecar:0.1.0 \
#     --upstream http://model:8080 --kafka kafka:9092 --admin-token-file /run/secrets/admin-token
# Runs as uid 10001 with a read-only root filesystem: the only writable path is the spool volume.

FROM python:3.11-bookworm AS build
# The full image has binutils: strip the debug symbols some wheels ship (uvloop's extension alone is 13 MB with
# them, 1.6 MB without). Never strip numpy's vendored libraries (auditwheel-patched: stripping breaks them).
WORKDIR /src
COPY deploy/docker/sidecar-requirements.txt /tmp/requirements.txt
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
 && find . \( -name '*.pyi' -o -name '*.pyx' -o -name '*.pxd' -o -name '*.c' -o -name '*.h' \) -delete \
 && strip --strip-unneeded uvloop/*.so yaml/*.so \
 && /opt/inferwatch/bin/python -m compileall -q -j 0 --invalidation-mode unchecked-hash . \
 && /opt/inferwatch/bin/python -c "import collectors.sidecar, monitor.cli"

FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="inferwatch-sidecar" \
      org.opencontainers.image.description="inferwatch sidecar: capturing reverse proxy beside a model server" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.inferwatch.component="sidecar"
ENV PATH=/opt/inferwatch/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /opt/inferwatch /opt/inferwatch
RUN install -d -o 10001 -g 10001 -m 0750 /var/spool/inferwatch
USER 10001:10001
VOLUME ["/var/spool/inferwatch"]
# 8000: the proxy clients call instead of the model server; 9400: admin (/healthz, /readyz, /metrics)
EXPOSE 8000 9400
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:9400/healthz', timeout=2).status != 200)"]
ENTRYPOINT ["inferwatch", "sidecar"]
CMD ["--spool", "/var/spool/inferwatch"]
