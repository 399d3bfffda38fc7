"""Stage 8, panel: the one depth panel both hosts build (gradio 3.41 and current)."""
