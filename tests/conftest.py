"""Fixtures shared by every test directory: AWS on a moto server, the local control plane; and
the Hypothesis profiles the property tests run under."""

from hypothesis import settings

pytest_plugins = ["tests.support.fixtures", "tests.cluster.fixtures"]

# The property tests name no example count of their own: the profile decides. `make test`
# runs the full profile (the default); `make unit` the quick one (`--hypothesis-profile
# quick`), which still runs every property, on fewer examples. No deadline: the tests run in
# parallel workers on a loaded machine, and how long an example takes there is no property of
# sgmesh.
settings.register_profile("full", max_examples=300, deadline=None)
settings.register_profile("quick", max_examples=25, deadline=None)
settings.load_profile("full")
