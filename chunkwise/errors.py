"""Exit codes shared by every `chunkwise` command.

    0    success: every request answered
    1    finished, but some requests failed or were rejected before sending (see results.parquet
         and rejects.parquet); or chunks left unfinished by a transient outage -- resumable with
         the same run name, `chunkwise resume`, or Prefect's Retry (`--retry-failed` re-sends the
         failed ones; a rejected row needs its input fixed)
    2    bad input, bad configuration, unreachable server, a fatal server answer (model not found),
         or a run directory that cannot be written (disk full): fix it, then resume
    130  stopped by Ctrl-C or SIGTERM; resumable
"""

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_INTERRUPTED = 0, 1, 2, 130
