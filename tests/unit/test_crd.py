"""The checked-in CRD is what the models generate."""

from __future__ import annotations

from pathlib import Path

from sgmesh.api import crd

CHECKED_IN = Path(__file__).parents[2] / "crds" / "nodegroupmesh.yaml"


def test_checked_in_crd_matches_the_models() -> None:
    assert CHECKED_IN.read_text() == crd.render_crd(), "run `make crd` and commit crds/"


def test_crd_is_cluster_scoped_with_status_subresource_and_short_name() -> None:
    manifest = crd.crd_manifest()
    version = manifest["spec"]["versions"][0]

    assert manifest["spec"]["scope"] == "Cluster"
    assert manifest["spec"]["names"]["shortNames"] == ["ngm"]
    assert version["subresources"] == {"status": {}}
    assert "$ref" not in crd.render_crd()
    assert "anyOf" not in crd.render_crd()
