"""Distributed mode on one machine (simulated hosts) -> bench/results/scaleout.md, one section per part.

    python -m bench.scaleout                   # every part in turn with its default (what `make bench` runs)
    python -m bench.scaleout --part scaling    # E(N) for N = 1, 3 hosts (`--hosts 1,2,3` adds N = 2), API latency
    python -m bench.scaleout --part shards     # idle between shards and the tail against shard size (3 hosts)
    python -m bench.scaleout --part failover   # a killed simulator, a killed shard process
    python -m bench.scaleout --part ceiling    # one parent's cost per shard; one shard process at zero latency

Each part starts its own loopback cluster (`chunkwise.harness.cluster.local`: PostgreSQL, a Prefect server,
simulators, `chunkwise worker`s) and stops it; each stays under about ten minutes on 2 cores. Every
figure is obtained against chunkwise's Ollama simulator, all processes on this machine's cores, so
they show the machinery's overheads, not a GPU's speed.

E(N) = throughput with N hosts / (N x throughput of host 1 alone): the simulated hosts run the
same flags (only the answer-length seed differs), so host 1 alone stands for each host alone.
Throughput is counted over the shard window (first shard start to last shard end, from the hosts'
facts in `hosts/*.jsonl`) and over the parent's whole wall time (which adds staging, planning,
Prefect's dispatch and aggregation). Host idle between shards: the gaps between one host's
consecutive shard runs (worker poll + flow process start), summed over hosts, as a share of hosts x
window; "chunk to chunk" widens each gap to the host's server: from the last chunk of one shard to
the first chunk of the next (adds the shard's own start: context, session, preflight). Tail: from
the first host's last shard end to the window's end.

Modules: `cluster` (bring-up, simulators' counts), `timing` (figures from the hosts' facts and the
server's states), `report` (the results file), one module per part (`throughput` holds scaling and
shards), `__main__` (the command line).
"""
