"""The resource: the NodeGroupMesh model and the CRD generated from it.

Pure: no I/O library.
"""
