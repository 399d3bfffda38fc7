"""Stage 9, host: the standalone diffusers engine (pipeline loading, generate)."""
