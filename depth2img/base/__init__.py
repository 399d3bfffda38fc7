"""Stage 0, base: devices and dtypes, safe file writes, paths, torch compatibility, errors and limits."""
