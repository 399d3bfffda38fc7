"""Stage 1, source: every byte string that becomes a picture or a depth map (the gate, decoders, EXR,
depth kinds distance -> inverse, batch-folder lookup) and the encoders that write depth maps back."""
