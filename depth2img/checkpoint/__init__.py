"""Stage 2, checkpoint: reading SD 2 depth checkpoints safely (identify, load, data-only unpickle)
and the CLIP tokenizer they need."""
