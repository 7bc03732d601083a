"""sgmesh: keeps the node groups (ASGs) of an EKS cluster able to reach each other.

Modules follow the data flow: models → discovery (launch, security_groups, roles) → planning →
apply → reconcile → status / handlers / cli. docs/architecture.md describes the flow, the
layers and the ownership rules.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
