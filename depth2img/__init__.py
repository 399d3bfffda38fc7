"""Host-agnostic core of sd-webui-depth2img.

Depth maps in, UNet conditioning out; checkpoints, estimators and a diffusers engine.
Nothing here imports the WebUI (`modules.*`).
"""

__version__ = "0.1.0"
