"""Durable primitives of the run directory: layout, contained writes, ledger, checkpoints, lock, records."""
