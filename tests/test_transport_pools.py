"""Hundreds of requests in flight through one client (issue 22): the client deals its threads over several
httpx pools, so they do not all queue on one pool's lock (pure: no request is sent)."""

from __future__ import annotations

import threading

import httpx

from chunkwise.ollama.client import OllamaClient
from chunkwise.transport import POOL_CONNECTIONS


def client(max_connections: int) -> OllamaClient:
    return OllamaClient("http://127.0.0.1:9", connect_timeout_s=1, read_timeout_s=1, max_connections=max_connections)


def pools_of_threads(boundary: OllamaClient, threads: int) -> list[tuple[httpx.Client, httpx.Client]]:
    """The pool each of `threads` threads reads, twice, all threads alive at once (no thread id reused)."""
    seen: list[tuple[httpx.Client, httpx.Client]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(threads)

    def look() -> None:
        first = boundary._http
        barrier.wait()
        with lock:
            seen.append((first, boundary._http))

    runners = [threading.Thread(target=look) for _ in range(threads)]
    for t in runners:
        t.start()
    for t in runners:
        t.join()
    return seen


def test_threads_are_dealt_over_one_pool_per_16_connections_and_keep_theirs():
    boundary = client(4 * POOL_CONNECTIONS)
    seen = pools_of_threads(boundary, 16)
    assert all(first is second for first, second in seen)  # a thread keeps its pool
    assert len({id(first) for first, _ in seen}) == 4  # 64 connections: four pools, every one in use
    boundary.close()


def test_a_small_client_keeps_one_pool_and_close_closes_every_pool():
    small = client(8)
    assert len({id(first) for first, _ in pools_of_threads(small, 4)}) == 1
    small.close()
    big = client(260)
    pools = {id(first): first for first, _ in pools_of_threads(big, 20)}
    assert len(pools) == 17  # ceil(260 / 16), every one dealt out before any is dealt twice
    big.close()
    assert all(pool.is_closed for pool in pools.values())
