"""How external CRDs are fetched, without the network: GOPROXY read as the Go command reads it,
module paths escaped as the proxy protocol wants, a module zip served by a `file://` proxy
kept only when its hash is the pinned one. (That the hash is computed as Go computes it shows
whenever the real CRDs are fetched: they must match the hashes sum.golang.org records.)"""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import yaml

from devtools import external_crds
from devtools.external_crds import CrdFetchError, ExternalCrd

MODULE = "example.com/Upper/crds"
VERSION = "v1.2.3"
FILE = "config/crd.yaml"
CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.com"},
}


def test_module_paths_are_escaped_as_the_proxy_protocol_says() -> None:
    assert external_crds._escape("github.com/BurntSushi/toml") == "github.com/!burnt!sushi/toml"
    assert external_crds._escape("github.com/aws/karpenter-provider-aws") == (
        "github.com/aws/karpenter-provider-aws"
    )


def test_goproxy_lists_proxies_in_order_with_how_to_fall_through() -> None:
    goproxy = "https://a.example/,https://b.example|file:///srv/proxy,direct,https://never"

    assert external_crds._proxies(goproxy) == [
        ("https://a.example", False),  # `,`: the next one only after "not found"
        ("https://b.example", True),  # `|`: the next one after any error
        ("file:///srv/proxy", False),
    ]
    assert external_crds._proxies("direct") == []
    assert external_crds._proxies("off") == []


@pytest.fixture
def proxy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `file://` module proxy holding MODULE@VERSION, behind one that has nothing; the user
    cache in the test's directory."""
    root = tmp_path / "proxy"
    archive = root / "example.com" / "!upper" / "crds" / "@v" / f"{VERSION}.zip"
    archive.parent.mkdir(parents=True)
    with zipfile.ZipFile(archive, "w") as module_zip:
        module_zip.writestr(f"{MODULE}@{VERSION}/go.mod", f"module {MODULE}\n")
        module_zip.writestr(f"{MODULE}@{VERSION}/{FILE}", yaml.safe_dump(CRD))
    monkeypatch.setenv("GOPROXY", f"file://{tmp_path / 'empty'},file://{root}")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return archive


def _crd(module_hash: str) -> ExternalCrd:
    return ExternalCrd(MODULE, VERSION, module_hash, FILE, "widgets.example.com")


def test_the_file_of_a_module_with_the_pinned_hash_is_kept_in_the_user_cache(
    proxy: Path, tmp_path: Path
) -> None:
    crd = _crd(external_crds.module_zip_hash(proxy))

    path = external_crds.ensure_file(crd)

    assert path == tmp_path / "cache/sgmesh/crds/example.com/!upper/crds@v1.2.3/config/crd.yaml"
    assert external_crds.load(crd) == CRD
    # Only that file is kept, and nothing half-written.
    assert [p.name for p in path.parent.parent.rglob("*") if p.is_file()] == ["crd.yaml"]
    proxy.unlink()
    assert external_crds.ensure_file(crd) == path  # from the cache, without the proxy


def test_a_module_whose_hash_is_not_the_pinned_one_is_refused(proxy: Path) -> None:
    crd = _crd("h1:" + "A" * 43 + "=")

    with pytest.raises(CrdFetchError, match="not the pinned h1:AAAA"):
        external_crds.ensure_file(crd)

    assert not crd.cached_file.exists()


def test_a_version_no_proxy_has_is_an_error_naming_each_proxy(proxy: Path, tmp_path: Path) -> None:
    crd = ExternalCrd(MODULE, "v9.9.9", "h1:unused", FILE, "widgets.example.com")

    with pytest.raises(CrdFetchError) as refused:
        external_crds.ensure_file(crd)

    header, *tried = str(refused.value).splitlines()
    assert header == f"cannot fetch {MODULE}@v9.9.9:"
    # Each proxy was asked: the empty one's "not found" let the next one be tried.
    assert [line.split("/example.com/")[0] for line in tried] == [
        f"file://{tmp_path / 'empty'}",
        f"file://{tmp_path / 'proxy'}",
    ]
