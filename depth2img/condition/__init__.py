"""Stage 5, condition: a depth map becomes the UNet's fifth input channel."""
