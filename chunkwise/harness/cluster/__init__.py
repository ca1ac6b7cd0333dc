"""A loopback cluster for the demo, the cluster tests and the scale-out benchmarks.

Not distributed mode itself: that is `chunkwise/cluster`.
"""
