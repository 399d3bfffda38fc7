"""Stage 11, entry points: the CLI and the web app."""
