"""Stage 4, process: what happens to a depth map after it exists: post-processing, masks from a
depth band, one scale shared by many maps."""
