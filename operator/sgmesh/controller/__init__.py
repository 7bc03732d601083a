"""The operator: kopf handlers, watches, nudges, peering, metrics and status.

The only sub-package that speaks kopf.
"""
