"""Stage 10, sequences: frame sequences on one depth scale, and the workers that render them."""
