"""Fixtures shared by every test directory: AWS on a moto server, the local control plane; and
the Hypothesis profiles the property tests run under."""

import pytest
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


_SCATTERED = pytest.StashKey[set[str]]()


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In a worker of `--dist loadgroup`, every test marked `xdist_group` must carry its
    group in its node id by now (pytest-xdist's own collection hook puts it there): that is
    how the scheduler keeps a group on one worker. pytest 9.2 ignores the change (pytest-xdist
    issue 1386), and the groups would silently spread over the workers, the image tests among
    them, which must not run beside each other: those tests fail instead."""
    if not getattr(config.option, "loadgroup", False):
        return
    config.stash[_SCATTERED] = {
        item.nodeid
        for item in items
        if any(item.iter_markers("xdist_group")) and "@" not in item.nodeid.rpartition("]")[2]
    }


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.nodeid in item.config.stash.get(_SCATTERED, set()):
        pytest.fail(
            f"--dist loadgroup does not keep this test's xdist_group on one worker with pytest "
            f"{pytest.__version__} (pytest-xdist issue 1386): install the pins of pyproject.toml",
            pytrace=False,
        )
