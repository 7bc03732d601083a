"""The local control plane: kube-apiserver, etcd and kubectl built from the Go modules that
`go.mod` here pins (`build`), and started on loopback with TLS and RBAC (`controlplane`)."""
