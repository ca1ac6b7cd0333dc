"""The loopback cluster of the distributed-mode tests: `chunkwise.harness.cluster.local`, shared with
`make cluster-demo` and bench/scaleout/. The `cluster` fixture (a pytest plugin, tests/conftest.py)
starts it once per session for tests/test_cluster.py and tests/test_cluster_security.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from chunkwise.harness.cluster.local import SIM_ARGS, Cluster, Host, cleanup_tree, make_base, start_cluster, stop

__all__ = ["API_KEY", "SIM_ARGS", "Cluster", "Host", "cleanup_tree", "make_base", "start_cluster", "stop"]

#: An OpenAI-compatible API key in the environment of every process of the cluster (unused by its Ollama
#: runs): tests/test_cluster_security.py searches the run, the Prefect home and the database for it.
API_KEY = "sk-CLUSTER-MARKER-" + "3" * 24


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    base = make_base()
    try:
        c = start_cluster(base, [[*SIM_ARGS, "--fault-seed", str(k)] for k in range(3)],
                          env={"CHUNKWISE_API_KEY": API_KEY})
    except BaseException:
        cleanup_tree(base)  # start_cluster stopped what it had started; its files go too
        raise
    # the parents mark a Running shard whose process is gone Crashed after 10 s (default 30 s): shorter tests
    c.env["CHUNKWISE_SHARD_LOST_AFTER_S"] = "10"
    try:
        yield c
    finally:
        c.close()
        cleanup_tree(base)
