# Safekeep's container image: the API, the workers, the scheduler and the migration Job of the
# Helm chart all run it (the chart sets each one's command).
#
#   make image                      # daemonless build with buildah (see helm/README.md)
#   buildah bud --isolation chroot -t safekeep:0.1.0 .   # the same by hand
#   docker build -t safekeep:0.1.0 .                     # where a Docker engine runs
#
# Two stages: the first installs the locked dependencies with uv (uv.lock, --frozen: the image
# gets exactly what the tests ran against), the second is a clean slim Python with only the
# result copied in, so neither uv nor pip caches nor any build tool reach the final image.
# Pin the base by digest for reproducible builds: --build-arg PYTHON_IMAGE=python:3.11-slim@sha256:…
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# uv comes from PyPI at the version the Makefile pins, so the image and `make venv` agree.
ARG UV_VERSION=0.13.8
RUN pip install --no-cache-dir "uv==${UV_VERSION}"
# Bytecode compiled now (the runtime filesystem is read-only); copies, not hard links, so the
# environment survives the COPY into the next stage; the base image's interpreter, never one uv
# would download.
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /app
# Dependencies first, in a layer of their own that only a change of the lock file rebuilds.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
# Then the project itself. It stays installed in place (editable): `safekeep migrate` reads
# alembic.ini and migrations/ next to the package, as it does in a checkout.
COPY alembic.ini ./
COPY migrations ./migrations
COPY graphsim ./graphsim
COPY safekeep ./safekeep
RUN uv sync --frozen --no-dev

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="safekeep" \
      org.opencontainers.image.description="API-first Microsoft 365 backup for managed service providers" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="LicenseRef-Proprietary" \
      org.opencontainers.image.vendor="Safekeep" \
      org.opencontainers.image.documentation="helm/README.md"
# The user the chart's pods run as (runAsUser/runAsGroup 10001), with no home and no shell.
RUN groupadd --gid 10001 safekeep \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin safekeep
COPY --from=build --chown=0:0 /app /app
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
# Nothing is written at run time outside /tmp (the chart mounts an emptyDir there and makes the
# root filesystem read-only); the embedded SQLite/local-disk defaults of `safekeep serve` need
# SAFEKEEP_DATA_DIR pointed at a volume.
WORKDIR /tmp
EXPOSE 8000
ENTRYPOINT ["safekeep"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
