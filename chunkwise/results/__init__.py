"""The end of a run: results.parquet, stats.json and the session's close."""
