"""The loopback cluster of the distributed-mode tests (tests/test_cluster.py starts it once per
session): `chunkwise.harness.cluster.local`, shared with `make cluster-demo` and bench/scaleout/."""

from chunkwise.harness.cluster.local import SIM_ARGS, Cluster, Host, cleanup_tree, make_base, start_cluster, stop

__all__ = ["SIM_ARGS", "Cluster", "Host", "cleanup_tree", "make_base", "start_cluster", "stop"]
