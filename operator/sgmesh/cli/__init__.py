"""The `sgmesh` command line."""
