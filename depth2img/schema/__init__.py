"""Stage 7, schema: the one typed args schema every host reads and writes."""
