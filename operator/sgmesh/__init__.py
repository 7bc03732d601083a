"""sgmesh: keeps the node groups (ASGs) of an EKS cluster able to reach each other.

Sub-packages follow the data flow: `api` (the resource) → `engine` (the pure decisions) and
`aws` / `kube` (the reads and writes at the edges) → `controller` (the kopf operator) and
`doctor` (the diagnosis) → `cli`. docs/architecture.md draws the flow, the layers and the
ownership rules.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
