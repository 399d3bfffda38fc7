"""Stage 9, host: the standalone diffusers engine (load, depth_pipeline, request, size, generate, inpaint)."""
