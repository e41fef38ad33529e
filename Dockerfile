# One image for every process: `serve` (default), `grpc`, `worker`, and the admin commands
# (`infra`, `dlq`, `sweep`). Cloud Run picks the command with `--args`, e.g. `--args=grpc`.
#
#   docker build -t paynow-service .
#   docker run --rm -p 8080:8080 -e PAYNOW_WEBHOOK_SECRETS=... -e EVENT_SIGNING_KEYS=... paynow-service  # serve
#   docker run --rm paynow-service infra plan                                         # any command
#
# Base image: pinned by full version and by digest, so a build never floats to another Python or
# Debian. The digest is the multi-platform index digest published for python:3.11.16-slim-trixie
# (the build of 2026-08-25) in docker-library/repo-info (repos/python/remote/3.11.16-slim-trixie.md,
# commit 33a22f41ac7bf613bc03380b0317536a9a7fb5e8); it was read there, not from the registry (none
# was reachable where it was recorded). To check it, or to move to a newer build or patch release:
#   docker buildx imagetools inspect python:3.11.16-slim-trixie --format '{{json .Manifest.Digest}}'
# and put that tag and digest here (deploy/README.md). Keep the minor version the locks are
# resolved for (LOCK_PYTHON in the Makefile).
ARG PYTHON_IMAGE=python:3.11.16-slim-trixie@sha256:be1575ed968de893bd54f4c56315ff7c4736ce522c1bca08fd521731aafc0d76

# ---- builder: dependencies, then the project's wheel, into a virtualenv -------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /src
# Dependencies first, from the hash-locked requirements.lock alone (`make lock`: the runtime
# dependencies and the build backend), so a code change does not reinstall them. Every file's
# sha256 is checked; a package missing from the lock or without a hash fails the build.
COPY requirements.lock ./
RUN pip install --no-cache-dir --require-hashes -r requirements.lock
COPY pyproject.toml README.md ./
COPY paynow_service/ paynow_service/
COPY plugins/ plugins/
# The project's own wheel (plugins included), built by the locked setuptools: no build isolation,
# so nothing unpinned is downloaded; --no-deps, its dependencies are the lock's. The build
# backend then leaves the virtualenv (nothing at run time imports it).
RUN pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /wheels . \
    && pip install --no-cache-dir --no-deps /wheels/*.whl \
    && pip uninstall --yes setuptools wheel
# Smoke test of the installed wheel (outside /src): the CLI starts, the plugins and the
# packaged Pub/Sub schema source are there.
WORKDIR /
RUN paynow-service --help > /dev/null \
    && python -c "from paynow_service.adapters.gcp_schema import proto_definition; assert 'message PaymentEvent' in proto_definition()" \
    && python -c "from importlib.metadata import entry_points; assert entry_points(group='paynow_service.plugins')"

# ---- runtime: the virtualenv only; no compiler, no build tools, no source tree ------------
FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PORT=8080
RUN groupadd --system --gid 10001 paynow \
    && useradd --system --uid 10001 --gid paynow --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin paynow
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
USER 10001:10001
# The HTTP app listens on $PORT (Cloud Run sets it); `grpc` listens on $GRPC_PORT.
EXPOSE 8080 50051
ENTRYPOINT ["paynow-service"]
CMD ["serve"]
