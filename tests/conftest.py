"""Fixtures shared by every test directory: AWS on a moto server, the local control plane."""

pytest_plugins = ["tests.support.fixtures", "tests.cluster.fixtures"]
