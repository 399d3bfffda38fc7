"""Stage 6, export: writing checkpoints: diffusers -> LDM export and the tiny demo checkpoint."""
