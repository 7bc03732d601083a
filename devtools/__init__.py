"""Developer tooling: what `make k8s`, `make helm`, `make image`, `make sandbox`, `make demo` and
the benches run, and what the tests start their real parts with.

It lives outside `tests/` so that the sandbox, the demo and the benches never depend on the
test suite, and outside `operator/` so that none of it ships in the sgmesh package (an
import-linter contract keeps sgmesh from importing it, and it from importing the tests).

    sandbox.py            `make sandbox`: control plane + moto server in the background
    k8s/build.py          `make k8s`: kube-apiserver, etcd, kubectl built from Go modules
    k8s/controlplane.py   a real kube-apiserver + etcd on loopback (envtest-style)
    k8s/pki.py            the throwaway CA and certificates the control plane serves with
    k8s/gen_replaces.py   regenerates k8s/go.mod for another Kubernetes release
    aws/moto_server.py    a moto server on a free port, as a separate process
    aws/moto_aws.py       what that process runs: moto with AWS's security-group rule semantics
    aws/world.py          the AWS world builder: VPCs, SGs, roles, templates, ASGs
    nodes.py              a world's instances registered as Nodes, CoreDNS as a Pod
    operator_harness.py   `sgmesh run` as a separate process, NodeGroupMeshes through the API
    go_tool.py            a tool built from a Go module here, once per version, into the user cache
    helm/build.py         `make helm`: helm built from the Go module in helm/
    promtool/build.py     `make promtool`: promtool built from the Go module in promtool/
    image.py              `make image`: the operator image, built with buildah

devtools/README.md says the same for people browsing the repository.
"""

from pathlib import Path

__all__ = ["REPO_ROOT"]

REPO_ROOT = Path(__file__).resolve().parent.parent
"""The repository root: where `.sandbox/`, `crds/` and the image's build context are."""
