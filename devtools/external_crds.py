"""The CRDs of other projects whose objects sgmesh reads or ships — Karpenter's `EC2NodeClass`,
the VPC CNI's `ENIConfig`, the VPC resource controller's `SecurityGroupPolicy`,
prometheus-operator's `PrometheusRule` — exactly as those projects publish them, so that the
tests' objects are checked by the real schemas and a schema change upstream shows when a
version is bumped.

Each CRD is one file of a Go module, at the version pinned below. The module's zip comes from
the Go module proxy over HTTP (`<proxy>/<escaped module path>/@v/<version>.zip`, the proxies of
`go env GOPROXY` in order), is streamed to a temporary file, checked against the module's
`h1:` hash pinned below — the one go.sum and the checksum database (sum.golang.org) hold for
that version — and only the CRD's file is kept, in
`${XDG_CACHE_HOME:-~/.cache}/sgmesh/crds/<module>@<version>/<file>`, outside the repository.
Later runs read the cache; a lock makes concurrent callers fetch once, and the file appears by
renaming a finished one, so a killed fetch leaves nothing half-written.

Why not `go mod download`: it refuses a module whose go.mod asks for a newer Go than the local
toolchain (Karpenter's often does), although nothing here is compiled; the zip and its hash do
not depend on the toolchain.

Usage: `python -m devtools.external_crds` fetches every CRD not yet cached and prints
where each is.
"""

from __future__ import annotations

import argparse
import base64
import copy
import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import yaml

from devtools.k8s import build

__all__ = [
    "EC2NODECLASS",
    "ENICONFIG",
    "EXTERNAL_CRDS",
    "PROMETHEUSRULE",
    "SECURITYGROUPPOLICY",
    "CrdFetchError",
    "ExternalCrd",
    "cache_root",
    "ec2nodeclass_crd",
    "eniconfig_crd",
    "ensure_file",
    "load",
    "module_zip_hash",
    "prometheusrule_crd",
    "securitygrouppolicy_crd",
]

# Go's default when GOPROXY is unset, used too when `go` is not on PATH.
DEFAULT_GOPROXY = "https://proxy.golang.org,direct"
# The Go command refuses module zips larger than this; so do we.
MAX_ZIP_BYTES = 500 << 20
TIMEOUT_SECONDS = 60


class CrdFetchError(RuntimeError):
    """A CRD could not be fetched or is not what was expected; the message says why."""


@dataclass(frozen=True)
class ExternalCrd:
    """One CRD file of a Go module at a pinned version."""

    module: str
    version: str
    # The module zip's hash as go.sum and sum.golang.org record it: what was fetched is
    # exactly what every other user of that version got.
    module_hash: str
    path: str
    name: str

    @property
    def module_directory(self) -> Path:
        """Where the files kept of this module version go, named as in Go's module cache."""
        return cache_root() / f"{_escape(self.module)}@{_escape(self.version)}"

    @property
    def cached_file(self) -> Path:
        return self.module_directory / self.path


EC2NODECLASS = ExternalCrd(
    module="github.com/aws/karpenter-provider-aws",
    version="v1.15.2",
    module_hash="h1:RGw64PB2ROUHZIUhBqjO78l3zJ9YctnWeullrr4cxYI=",
    path="pkg/apis/crds/karpenter.k8s.aws_ec2nodeclasses.yaml",
    name="ec2nodeclasses.karpenter.k8s.aws",
)
# A file of the aws-vpc-cni Helm chart's crds/ directory: Helm installs those files as they
# are, never as templates, and this one is plain YAML (`load` refuses it if that changes).
ENICONFIG = ExternalCrd(
    module="github.com/aws/amazon-vpc-cni-k8s",
    version="v1.23.2",
    module_hash="h1:Ka5CQyoDQhTJ41BruEiI35Xs7LJoC+zUubWI5+xbrLc=",
    path="charts/aws-vpc-cni/crds/customresourcedefinition.yaml",
    name="eniconfigs.crd.k8s.amazonaws.com",
)
# The VPC resource controller's SecurityGroupPolicy (security groups for pods), as its
# kubebuilder generates it.
SECURITYGROUPPOLICY = ExternalCrd(
    module="github.com/aws/amazon-vpc-resource-controller-k8s",
    version="v1.8.2",
    module_hash="h1:S6fvZf7+Xjho4LLo2AdxT3x9yaOJ37Ly/eGQd+ASWi4=",
    path="config/crd/bases/vpcresources.k8s.aws_securitygrouppolicies.yaml",
    name="securitygrouppolicies.vpcresources.k8s.aws",
)
# prometheus-operator's PrometheusRule, the file its kube-prometheus and Helm charts install.
PROMETHEUSRULE = ExternalCrd(
    module="github.com/prometheus-operator/prometheus-operator",
    version="v0.85.0",
    module_hash="h1:M5xLCLEoaW2IJfnuCwFzzpL+jSVQu3KGT84Pye+fW8s=",
    path="example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml",
    name="prometheusrules.monitoring.coreos.com",
)
EXTERNAL_CRDS = (EC2NODECLASS, ENICONFIG, SECURITYGROUPPOLICY, PROMETHEUSRULE)


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sgmesh" / "crds"


def _escape(text: str) -> str:
    """Go's module path escaping (golang.org/x/mod/module.EscapePath): an upper-case letter
    becomes `!` and its lower case, so that paths differing in case differ on any file system."""
    return "".join(f"!{char.lower()}" if char.isupper() else char for char in text)


def _goproxy() -> str:
    """GOPROXY as the Go command sees it (environment, `go env -w`), or Go's default."""
    go = shutil.which("go")
    if go is None:
        return os.environ.get("GOPROXY") or DEFAULT_GOPROXY
    # Run outside any module, so that no go.mod can ask for another toolchain.
    result = subprocess.run(
        [go, "env", "GOPROXY"],
        cwd=tempfile.gettempdir(),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise CrdFetchError(f"go env GOPROXY failed:\n{result.stderr}")
    return result.stdout.strip() or DEFAULT_GOPROXY


def _proxies(goproxy: str) -> list[tuple[str, bool]]:
    """The proxy URLs of GOPROXY in order, each with whether to try the next one after any
    error (`|`) rather than only after "not found" (`,`), as the Go command does. `direct`
    (a version-control checkout) has no zip to fetch and ends the list, as does `off`."""
    proxies: list[tuple[str, bool]] = []
    rest = goproxy
    while rest:
        cut = min((i for i in (rest.find(","), rest.find("|")) if i >= 0), default=len(rest))
        entry, separator, rest = rest[:cut].strip(), rest[cut : cut + 1], rest[cut + 1 :]
        if entry in {"direct", "off"}:
            break
        if "://" in entry:
            proxies.append((entry.rstrip("/"), separator == "|"))
    return proxies


def _copy_bounded(source: IO[bytes], target: IO[bytes]) -> None:
    copied = 0
    while chunk := source.read(1 << 20):
        copied += len(chunk)
        if copied > MAX_ZIP_BYTES:
            raise CrdFetchError(f"module zip larger than {MAX_ZIP_BYTES >> 20} MiB")
        target.write(chunk)


def _download_zip(crd: ExternalCrd, target: IO[bytes]) -> str:
    """Stream the module zip into `target`; the URL it came from."""
    goproxy = _goproxy()
    proxies = _proxies(goproxy)
    if not proxies:
        raise CrdFetchError(
            f"GOPROXY={goproxy!r} names no module proxy: the CRDs are fetched from one "
            f"(set GOPROXY, e.g. {DEFAULT_GOPROXY})"
        )
    failures = []
    for proxy, after_any_error in proxies:
        url = f"{proxy}/{_escape(crd.module)}/@v/{_escape(crd.version)}.zip"
        try:
            with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:
                target.seek(0)
                target.truncate()
                _copy_bounded(response, target)
            return url
        except OSError as error:  # urllib's errors included
            failures.append(f"{url}: {error}")
            http_not_found = isinstance(error, urllib.error.HTTPError) and error.code in {404, 410}
            file_not_found = isinstance(getattr(error, "reason", None), FileNotFoundError)
            not_found = http_not_found or file_not_found  # file:// proxies answer the latter
            if not (not_found or after_any_error):
                break
    raise CrdFetchError(f"cannot fetch {crd.module}@{crd.version}:\n" + "\n".join(failures))


def module_zip_hash(zip_path: Path) -> str:
    """The `h1:` hash of a module zip, as go.sum records it (golang.org/x/mod/sumdb/dirhash
    Hash1): SHA-256 over the sorted lines "<SHA-256 of a file>  <its name in the zip>"."""
    summary = hashlib.sha256()
    with zipfile.ZipFile(zip_path) as archive:
        for name in sorted(archive.namelist()):
            if "\n" in name:
                raise CrdFetchError(f"{zip_path}: file name with a newline: {name!r}")
            digest = hashlib.sha256()
            with archive.open(name) as member:
                while chunk := member.read(1 << 20):
                    digest.update(chunk)
            summary.update(f"{digest.hexdigest()}  {name}\n".encode())
    return "h1:" + base64.b64encode(summary.digest()).decode()


def _fetch(crd: ExternalCrd) -> None:
    destination = crd.cached_file
    destination.parent.mkdir(parents=True, exist_ok=True)
    print(f"fetching {crd.module}@{crd.version} for {crd.name} ...", file=sys.stderr, flush=True)
    with tempfile.NamedTemporaryFile(dir=destination.parent, suffix=".zip") as archive:
        url = _download_zip(crd, archive)
        archive.flush()
        try:
            found = module_zip_hash(Path(archive.name))
        except zipfile.BadZipFile as error:
            raise CrdFetchError(f"{url} is not a zip: {error}") from None
        if found != crd.module_hash:
            raise CrdFetchError(
                f"{url} has hash {found}, not the pinned {crd.module_hash}: "
                "the proxy served other content for this version"
            )
        member = f"{crd.module}@{crd.version}/{crd.path}"
        with zipfile.ZipFile(archive.name) as module_zip:
            try:
                content = module_zip.read(member)
            except KeyError:
                raise CrdFetchError(f"{url} holds no {crd.path}") from None
    partial = destination.with_name(f"{destination.name}.partial-{os.getpid()}")
    try:
        partial.write_bytes(content)
        partial.rename(destination)
    finally:
        partial.unlink(missing_ok=True)


def ensure_file(crd: ExternalCrd) -> Path:
    """The CRD's file in the user cache, fetched first if this machine has not yet."""
    destination = crd.cached_file
    if destination.is_file():
        return destination
    module_directory = crd.module_directory
    with build.locked(module_directory.with_name(f"{module_directory.name}.lock")):
        if not destination.is_file():  # another process fetched it while we waited
            _fetch(crd)
    return destination


@functools.cache
def _parsed(crd: ExternalCrd) -> dict[str, Any]:
    path = ensure_file(crd)
    text = path.read_text()
    if "{{" in text:
        raise CrdFetchError(f"{path} holds Helm template actions: render it before applying it")
    documents = [document for document in yaml.safe_load_all(text) if document]
    if len(documents) != 1:
        raise CrdFetchError(f"{path}: {len(documents)} YAML documents, expected one CRD")
    [document] = documents
    if (document.get("kind"), document.get("metadata", {}).get("name")) != (
        "CustomResourceDefinition",
        crd.name,
    ):
        raise CrdFetchError(f"{path} is not the CustomResourceDefinition {crd.name}")
    return dict(document)


def load(crd: ExternalCrd) -> dict[str, Any]:
    """The CRD as a parsed document (a copy: the caller may change it)."""
    return copy.deepcopy(_parsed(crd))


def ec2nodeclass_crd() -> dict[str, Any]:
    """Karpenter's EC2NodeClass CRD (karpenter.k8s.aws/v1, cluster-scoped)."""
    return load(EC2NODECLASS)


def eniconfig_crd() -> dict[str, Any]:
    """The VPC CNI's ENIConfig CRD (crd.k8s.amazonaws.com/v1alpha1, cluster-scoped)."""
    return load(ENICONFIG)


def securitygrouppolicy_crd() -> dict[str, Any]:
    """The VPC resource controller's SecurityGroupPolicy CRD (vpcresources.k8s.aws/v1beta1,
    namespaced)."""
    return load(SECURITYGROUPPOLICY)


def prometheusrule_crd() -> dict[str, Any]:
    """prometheus-operator's PrometheusRule CRD (monitoring.coreos.com/v1, namespaced)."""
    return load(PROMETHEUSRULE)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m devtools.external_crds", description=__doc__)
    parser.parse_args()
    try:
        for crd in EXTERNAL_CRDS:
            load(crd)  # fetched if needed, and checked to be the CRD it should be
            print(f"{crd.name} ({crd.module}@{crd.version}): {crd.cached_file}")
    except CrdFetchError as error:
        sys.exit(str(error))


if __name__ == "__main__":
    main()
