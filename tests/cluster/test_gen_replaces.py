"""go.mod replaces exactly the staging modules of the pinned k8s.io/kubernetes release."""

from __future__ import annotations

import re

from devtools.k8s import gen_replaces

KUBERNETES_GO_MOD_EXCERPT = """
module k8s.io/kubernetes

go 1.26.0

require (
\tgo.etcd.io/etcd/client/v3 v3.7.0
\tk8s.io/api v0.0.0
\tk8s.io/kube-openapi v0.0.0-20260721132016-d427ff9ee9ad
\tk8s.io/utils v0.0.0-20260626114624-be93311217bd
)

require (
\tgo.etcd.io/etcd/server/v3 v3.7.0 // indirect
\tk8s.io/apiserver v0.0.0 // indirect
)

replace k8s.io/api => ./staging/src/k8s.io/api
"""

_REPLACE = re.compile(r"^\s*(k8s\.io/\S+)\s+=>\s+(\S+)\s+(v\S+)\s*$", re.MULTILINE)


def test_only_v0_0_0_k8s_modules_count_as_staging() -> None:
    parsed = gen_replaces.parse_kubernetes_go_mod(KUBERNETES_GO_MOD_EXCERPT)
    assert parsed.staging_modules == ("k8s.io/api", "k8s.io/apiserver")
    assert parsed.etcd_server_version == "v3.7.0"
    assert parsed.go_version == "1.26.0"


def test_staging_modules_are_pinned_to_the_matching_v0_release() -> None:
    parsed = gen_replaces.parse_kubernetes_go_mod(KUBERNETES_GO_MOD_EXCERPT)
    rendered = gen_replaces.render("v1.37.2", parsed)
    assert {m: (t, v) for m, t, v in _REPLACE.findall(rendered)} == {
        "k8s.io/api": ("k8s.io/api", "v0.37.2"),
        "k8s.io/apiserver": ("k8s.io/apiserver", "v0.37.2"),
    }
    assert "\tk8s.io/kubernetes v1.37.2\n" in rendered
    assert "\tgo.etcd.io/etcd/server/v3 v3.7.0\n" in rendered


def test_checked_in_go_mod_has_a_replace_for_every_staging_module() -> None:
    version = gen_replaces.pinned_kubernetes_version()
    upstream = gen_replaces.parse_kubernetes_go_mod(
        gen_replaces.download_kubernetes_go_mod(version)
    )
    staging = gen_replaces.staging_version(version)
    replaces = {m: (t, v) for m, t, v in _REPLACE.findall(gen_replaces.GO_MOD.read_text())}
    assert replaces == {module: (module, staging) for module in upstream.staging_modules}
