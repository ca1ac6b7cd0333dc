"""The request file end to end: validation and quarantine, staging into the run directory, samples."""
