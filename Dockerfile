# identity (the distribution identity-exchange): multi-stage image. The base is a build argument
# so sites with their own Python image (or this project's CI, which has no registry) can
# substitute it.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
# uv (from PyPI, pinned inside the range pyproject.toml allows) turns uv.lock into a hash-pinned
# requirements list; the image's own pip installs exactly that into /opt/identity, hashes checked.
RUN python -m venv /opt/uv && /opt/uv/bin/pip install --no-cache-dir uv==0.13.9
WORKDIR /src
# Dependencies first, in their own layer: a change to the code does not reinstall them.
# The workspace's two members (the server and verifier/, the downstream verifier it depends on)
# are left out of the exported list and installed from the source below.
COPY pyproject.toml uv.lock README.md ./
COPY verifier/pyproject.toml verifier/README.md ./verifier/
RUN /opt/uv/bin/uv export --locked --no-dev --extra otel --no-emit-workspace --no-header \
        --format requirements-txt --output-file /tmp/requirements.txt \
    && python -m venv /opt/identity \
    && /opt/identity/bin/pip install --no-cache-dir --require-hashes --no-deps \
        -r /tmp/requirements.txt
COPY verifier/identity_verifier ./verifier/identity_verifier
COPY identity ./identity
COPY migrations ./migrations
RUN /opt/identity/bin/pip install --no-cache-dir --no-deps ./verifier .

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/identity/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    IDENTITY_HOST=0.0.0.0 \
    IDENTITY_PORT=8001 \
    IDENTITY_KEYS_DIR=/var/lib/identity/keys
COPY --from=build /opt/identity /opt/identity
# A fixed numeric, unprivileged user: Kubernetes' runAsNonRoot can check it without a passwd.
RUN groupadd --gid 10001 identity \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /var/lib/identity --shell /usr/sbin/nologin identity \
    && mkdir -p /var/lib/identity/keys \
    && chown -R 10001:10001 /var/lib/identity \
    && chmod 700 /var/lib/identity/keys
USER 10001:10001
WORKDIR /var/lib/identity
VOLUME ["/var/lib/identity/keys"]
EXPOSE 8001
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('IDENTITY_PORT', '8001'), timeout=2)"]
CMD ["identity", "serve"]
