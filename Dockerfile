# The operator image: the sgmesh wheel and its dependencies in a virtual environment, run as
# an unprivileged user with `sgmesh run` as the entrypoint (settings: SGMESH_* variables).
#
#   docker build -t sgmesh:dev .
#
# The base is pinned to an exact Python release, the one the tests run on (3.11); pin its
# digest too where your registry tooling keeps digests up to date.

FROM python:3.11.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
# Build the wheel, then install that wheel alone (with its dependencies) into a fresh virtual
# environment that holds no pip: the final stage copies only this environment.
RUN python -m pip wheel --no-deps --wheel-dir /dist . \
 && python -m venv --without-pip /opt/sgmesh \
 && python -m pip --python /opt/sgmesh/bin/python install /dist/sgmesh-*.whl \
 && /opt/sgmesh/bin/sgmesh --help > /dev/null

FROM python:3.11.11-slim-bookworm
LABEL org.opencontainers.image.title="sgmesh" \
      org.opencontainers.image.description="Keeps the node groups (ASGs) of an EKS cluster able to reach each other" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/sgmesh /opt/sgmesh
ENV PATH=/opt/sgmesh/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# The uid and gid that deploy/ runs the pod as (runAsUser, runAsGroup): no user of the base.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["sgmesh", "run"]
