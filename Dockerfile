# The operator image: the sgmesh package and its dependencies in a virtual environment, run as
# an unprivileged uid with `sgmesh run` as the entrypoint (settings: SGMESH_* variables).
#
#   docker build -t sgmesh:dev .
#   buildah bud -t sgmesh:dev .                        # or: make image (localhost/sgmesh:dev)
#
# PYTHON_BASE is the base of both stages: by default the official image pinned to an exact
# Python release, the one the tests run on (3.11); pin its digest too where your registry
# tooling keeps digests up to date. Where no registry is reachable, any Debian-style image with
# `python` 3.11 and its `venv` module will do (`make image` builds one with debootstrap).
#
# Behind a TLS-intercepting proxy or a private package index, hand the build your pip settings
# and CA bundle as build secrets; they are mounted for the install step only, never stored:
#
#   docker build --secret id=pip.conf,src=$HOME/.config/pip/pip.conf \
#                --secret id=ca-bundle,src=/etc/ssl/certs/ca-certificates.crt -t sgmesh:dev .
ARG PYTHON_BASE=python:3.11.11-slim-bookworm

FROM ${PYTHON_BASE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
# Every package comes from a lock in requirements/ (`make lock`), with its hashes: pip refuses a
# file whose hash the lock does not name. Three environments, of which the final stage copies
# one: /opt/build, the locked pip and what builds sgmesh's wheel (build.txt); /opt/sbom, the
# SBOM's generator (sbom.txt); /opt/sgmesh, the operator's dependencies (operator.txt). The
# last two are made without pip and filled by the locked one from outside (`pip --python`):
# the operator's environment never holds pip or setuptools. They are a layer of their own,
# before the sources: a change to the package alone installs nothing from the index.
COPY requirements ./requirements
RUN --mount=type=secret,id=pip.conf,target=/run/secrets/pip.conf \
    --mount=type=secret,id=ca-bundle,target=/run/secrets/ca-bundle \
    if [ -s /run/secrets/pip.conf ]; then export PIP_CONFIG_FILE=/run/secrets/pip.conf; fi \
 && if [ -s /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi \
 && python -m venv /opt/build \
 && /opt/build/bin/python -m pip install --require-hashes -r requirements/build.txt \
 && python -m venv --without-pip /opt/sbom \
 && /opt/build/bin/python -m pip --python /opt/sbom/bin/python install --require-hashes \
      -r requirements/sbom.txt \
 && python -m venv --without-pip /opt/sgmesh \
 && /opt/build/bin/python -m pip --python /opt/sgmesh/bin/python install --require-hashes \
      -r requirements/operator.txt
# sgmesh's wheel, built offline with the locked setuptools, goes in without dependencies: the
# lock has them all. The build then fails where the operator would fail at start: the command
# line parses, the handlers import (kopf registers them on import; `sgmesh run --help` loads
# neither), and the installed kopf and botocore still have the private names their fences in
# the package rely on. Last, the SBOM: what the environment holds, as CycloneDX JSON at
# /opt/sgmesh/sbom.cdx.json, with no timestamp or random serial so that the layer is the same
# for the same environment.
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN /opt/build/bin/python -m pip wheel --no-deps --no-build-isolation --wheel-dir /dist . \
 && /opt/build/bin/python -m pip --python /opt/sgmesh/bin/python install --no-deps \
      /dist/sgmesh-*.whl \
 && /opt/sgmesh/bin/sgmesh run --help > /dev/null \
 && /opt/sgmesh/bin/python -c "import sgmesh.controller.lifecycle" \
 && /opt/sgmesh/bin/python -m sgmesh.controller.kopf_compat \
 && /opt/sgmesh/bin/python -c "import sys; from sgmesh.aws import botocore_compat; \
      sys.exit(', '.join(botocore_compat.missing()) or None)" \
 && /opt/sbom/bin/cyclonedx-py environment --pyproject pyproject.toml --mc-type application \
      --output-reproducible --output-format JSON --output-file /opt/sgmesh/sbom.cdx.json \
      /opt/sgmesh/bin/python

FROM ${PYTHON_BASE}
LABEL org.opencontainers.image.title="sgmesh" \
      org.opencontainers.image.description="Keeps the node groups (ASGs) of an EKS cluster able to reach each other" \
      org.opencontainers.image.licenses="Apache-2.0"
# Nothing installs anything at run time: the base's own pip, setuptools and wheel (the official
# image has them) are removed, so that the image holds no package installer.
RUN if python -c "import pip" 2> /dev/null; then \
      PIP_ROOT_USER_ACTION=ignore python -m pip uninstall --yes --quiet pip setuptools wheel; \
    fi
COPY --from=build /opt/sgmesh /opt/sgmesh
ENV PATH=/opt/sgmesh/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# The uid and gid that deploy/ runs the pod as (runAsUser, runAsGroup), numeric so that
# Kubernetes can check runAsNonRoot; no passwd entry is needed for them.
USER 65532:65532
# The metrics port (/metrics, /healthz, /readyz): the operator's default, deploy/'s containerPort.
EXPOSE 8080
ENTRYPOINT ["sgmesh", "run"]
