# One image for every process: `serve` (default), `grpc`, `worker`, and the admin commands
# (`infra`, `dlq`, `sweep`). Cloud Run picks the command with `--args`, e.g. `--args=grpc`.
#
#   docker build -t paynow-service .
#   docker run --rm -p 8080:8080 -e PAYNOW_WEBHOOK_SECRETS=... -e EVENT_SIGNING_KEYS=... paynow-service  # serve
#   docker run --rm paynow-service infra plan                                         # any command
ARG PYTHON_IMAGE=python:3.11-slim

# ---- builder: dependencies, then the project's wheel, into a virtualenv -------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /src
# Dependencies first, from pyproject.toml alone, so a code change does not reinstall them.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > requirements.txt \
    && pip install --no-cache-dir -r requirements.txt
COPY README.md ./
COPY paynow_service/ paynow_service/
COPY plugins/ plugins/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && pip install --no-cache-dir --no-deps /wheels/*.whl
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
