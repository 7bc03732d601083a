# One command per gate: `make test`, `make lint`, `make demo`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: help venv lock test check unit integration lint fmt crd k8s helm promtool crds-external image image-tools sandbox sandbox-down demo bench bench-operator clean

help:
	@echo "make test          install what is missing, build the local control plane, run every test"
	@echo "make check         the inner loop: lint, then every test that needs neither the control plane nor the image"
	@echo "make lint          ruff format --check, ruff check, mypy --strict, import contracts"
	@echo "make demo          sandbox (kube-apiserver + moto) + operator converging an example mesh"
	@echo "make sandbox       start the local kube-apiserver/etcd and a moto server in the background"
	@echo "make sandbox-down  stop what 'make sandbox' started"
	@echo "make lock          re-lock requirements/ (every dependency, with hashes) after pyproject.toml changes"
	@echo "make crd           regenerate crds/ (and the chart's copy) from the pydantic models"
	@echo "make helm          build helm from Go modules into the user cache (tests of deploy/)"
	@echo "make promtool      build Prometheus's promtool from Go modules into the user cache (alert tests)"
	@echo "make crds-external fetch other projects' CRDs (Karpenter, VPC CNI, SecurityGroupPolicy, PrometheusRule) from the Go module proxy"
	@echo "make image         build the operator image localhost/sgmesh:dev with buildah"
	@echo "make bench         AWS call budget on a moto server; reaction to Nodes, EC2NodeClasses"
	@echo "                   and SecurityGroupPolicies"
	@echo "make bench-operator  the operator at 1, 20 and 50 meshes (memory, CPU, AWS calls, resync),"
	@echo "                   then 100 meshes created at once and restarted"

# Every package comes from a lock in requirements/, with its hashes: pip refuses a file whose
# hash the lock does not name, and a requirement the lock does not pin. pip, setuptools and
# wheel first (build.txt), then the operator's, test and lint dependencies (dev.txt), then
# sgmesh itself, editable, built with that setuptools and installing nothing more.
$(STAMP): pyproject.toml requirements/build.txt requirements/dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes -r requirements/build.txt
	$(PY) -m pip install --quiet --require-hashes -r requirements/dev.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

venv: $(STAMP)

# The locks, for the Python and platform of the image and CI (3.11, Linux x86_64), whatever
# machine writes them: uv resolves for a target named by --python-version/--python-platform,
# where pip-compile resolves for the interpreter it runs on, and it needs no dependency of its
# own. operator.txt (what the image installs) is held to dev.txt's versions, so the image runs
# what the tests ran; a pin keeps the extras asked of it (boto3-stubs[ec2, ...]), which
# tests/unit/test_lock.py compares with pyproject.toml. Run by hand after a change to
# pyproject.toml's dependencies or to requirements/*.in, never by `make test`. A lock keeps the
# versions it has where the ranges still allow them: LOCK_OPTIONS=--upgrade (or
# --upgrade-package NAME) moves them on.
LOCK_TOOL := $(VENV)/bin/uv
LOCK := $(LOCK_TOOL) pip compile --quiet --generate-hashes --python-version 3.11 \
  --python-platform x86_64-unknown-linux-gnu --no-strip-extras \
  --custom-compile-command "make lock" $(LOCK_OPTIONS)

$(LOCK_TOOL): requirements/lock.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes -r requirements/lock.txt
	touch $@

lock: $(LOCK_TOOL)
	$(LOCK) pyproject.toml --extra test --extra lint -o requirements/dev.txt
	$(LOCK) pyproject.toml -c requirements/dev.txt -o requirements/operator.txt
	$(LOCK) requirements/build.in -c requirements/dev.txt -o requirements/build.txt
	$(LOCK) requirements/sbom.in -o requirements/sbom.txt
	$(LOCK) requirements/lock.in -o requirements/lock.txt

k8s: $(STAMP)
	$(PY) -m devtools.k8s.build

helm: $(STAMP)
	$(PY) -m devtools.helm.build

# promtool checks and unit-tests the alerting rules of deploy/prometheus/alerts.
promtool: $(STAMP)
	$(PY) -m devtools.promtool.build

# The CRDs of the objects sgmesh reads besides its own (EC2NodeClass, ENIConfig), as their
# projects publish them, into the user cache: the tests install them into the API server.
crds-external: $(STAMP)
	$(PY) -m devtools.external_crds

# buildah builds the image (as root, with chroot isolation); debootstrap builds the local base
# it is built on where no container registry is reachable. Both are Debian packages.
IMAGE_TOOLS := buildah debootstrap
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

image-tools:
	@missing=""; \
	for tool in $(IMAGE_TOOLS); do \
	  PATH="$$PATH:/usr/sbin:/sbin" command -v $$tool > /dev/null || missing="$$missing $$tool"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing"; \
	  $(SUDO) apt-get update && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y $$missing; \
	fi

image: $(STAMP) image-tools
	PATH="$$PATH:/usr/sbin:/sbin" $(PY) -m devtools.image

# Parallel workers (pytest-xdist), each with its own control plane and moto server. Most of an
# end-to-end test is waiting on the operator, so more workers than cores pay: on 2 cores the
# end-to-end tests took 239 s with 2 workers, 156 s with 4, 140 s with 6. TEST_WORKERS=0 runs
# the suite in one process. The tests of the image share one worker (xdist_group "image").
TEST_WORKERS ?= 4
test: $(STAMP) k8s helm promtool crds-external image
	@start=$$(date +%s); \
	$(PY) -m pytest tests -n $(TEST_WORKERS) --dist loadgroup --hypothesis-profile full \
	  --durations=15; status=$$?; \
	echo "make test: the suite took $$(( $$(date +%s) - start )) s"; exit $$status

# The inner loop: lint, then the unit tests and every test that needs neither the local control
# plane (marker kube) nor the operator image (marker image): moto servers, the deploy/ files,
# helm. Its time is printed at the end.
CHECK_WORKERS ?= 2
check: $(STAMP)
	@start=$$(date +%s); \
	$(MAKE) --no-print-directory lint && \
	$(PY) -m pytest tests -m "not kube and not image" -n $(CHECK_WORKERS) --dist loadgroup \
	  --hypothesis-profile quick -q; status=$$?; \
	echo "make check: $$(( $$(date +%s) - start )) s"; exit $$status

# The fast part: the property tests on the quick Hypothesis profile (tests/conftest.py).
unit: $(STAMP)
	$(PY) -m pytest tests/unit --hypothesis-profile quick

lint: $(STAMP)
	$(VENV)/bin/ruff format --check operator devtools tests bench examples
	$(VENV)/bin/ruff check operator devtools tests bench examples
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports pyproject.toml

fmt: $(STAMP)
	$(VENV)/bin/ruff format operator devtools tests bench examples
	$(VENV)/bin/ruff check --fix operator devtools tests bench examples

crd: $(STAMP)
	$(VENV)/bin/sgmesh crd > crds/nodegroupmesh.yaml
	cp crds/nodegroupmesh.yaml deploy/helm/sgmesh/crds/nodegroupmesh.yaml

sandbox: $(STAMP) k8s
	$(PY) -m devtools.sandbox up

sandbox-down: $(STAMP)
	$(PY) -m devtools.sandbox down

demo: $(STAMP) k8s
	$(PY) -m examples.demo

# The AWS call budget, then the operator's reaction to Nodes and EC2NodeClasses
# (REACTION_OPTIONS=--check fails when a reaction goal is missed; --runs 5).
bench: $(STAMP) k8s crds-external
	$(PY) -m bench.call_budget
	$(PY) bench/reaction.py $(REACTION_OPTIONS)

# BENCH_OPTIONS=--check fails when a scale goal is missed; --meshes 1,20,50 --window 60.
bench-operator: $(STAMP) k8s
	$(PY) bench/operator_scale.py $(BENCH_OPTIONS)

clean:
	rm -rf $(VENV) .sandbox .pytest_cache .mypy_cache .ruff_cache .hypothesis
