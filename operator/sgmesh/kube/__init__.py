"""Kubernetes reads outside the operator's watches: one connect, a mesh's member sources,
doctor's reader.
"""
