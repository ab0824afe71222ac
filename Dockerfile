# syntax=docker/dockerfile:1
# threads-exporter: Prometheus exporter for Meta's Threads API.
#   docker build -t threads-exporter .
#   docker run -p 10330:10330 threads-exporter --demo
# Stage 1 builds the wheel and installs it into a venv; the final stage gets only the venv.
# Bump the base tag (both stages) with Renovate/Dependabot; keep the two identical so the
# venv's interpreter symlinks stay valid.

FROM python:3.12.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md requirements.lock ./
COPY exporter ./exporter
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/venv \
 && /opt/venv/bin/python -m pip install -c requirements.lock /wheels/*.whl \
 && /opt/venv/bin/threads-exporter --version

FROM python:3.12.11-slim-bookworm
ARG VERSION=0.2.0
LABEL org.opencontainers.image.title="threads-exporter" \
      org.opencontainers.image.description="Prometheus exporter for Meta's Threads API: publishing quotas and media container states" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/python:3.12.11-slim-bookworm"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /opt/venv /opt/venv
# The container store (containers.state_path) lives in the volume; the config is mounted
# read-only at /etc/threads-exporter. 65532 is not in /etc/passwd: no shell, no home.
RUN install -d -o 65532 -g 65532 -m 0750 /var/lib/threads-exporter \
 && install -d -m 0755 /etc/threads-exporter
WORKDIR /var/lib/threads-exporter
VOLUME ["/var/lib/threads-exporter"]
USER 65532:65532
EXPOSE 10330
# /-/healthy never calls the Threads API. Tries HTTP, then HTTPS (when --web.config.file
# enables TLS; the certificate is not checked, it is our own loopback); a 401 from basic
# auth still proves the process answers.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
  CMD ["python", "-c", "import ssl, sys, urllib.error, urllib.request\nctx = ssl._create_unverified_context()\nfor scheme in ('http', 'https'):\n    try:\n        urllib.request.urlopen(scheme + '://127.0.0.1:10330/-/healthy', timeout=4, context=ctx)\n        sys.exit(0)\n    except urllib.error.HTTPError as e:\n        sys.exit(0 if e.code == 401 else 1)\n    except OSError:\n        pass\nsys.exit(1)"]
ENTRYPOINT ["threads-exporter"]
CMD ["--config.file=/etc/threads-exporter/config.yaml"]
