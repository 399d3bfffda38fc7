"""The WebUI's install hook: install only what its environment lacks; never upgrade the WebUI's own pins.

A WebUI v1.8-v1.10 environment already has everything the extension uses (torch, numpy, Pillow, OpenCV,
safetensors, omegaconf, transformers) except OpenEXR; the extension's WebUI path does not need diffusers.
"""

import launch

# import name -> pip requirement, installed only when the import name is missing entirely.
OPTIONAL_INSTALLS = {
    "cv2": "opencv-python-headless",
    "safetensors": "safetensors",
    "omegaconf": "omegaconf",
    # EXR depth maps (Blender's Z pass). OpenCV cannot read them reliably; not a WebUI pin. Its only dependency,
    # numpy, the WebUI has: --no-deps keeps pip from touching the WebUI's numpy.
    "OpenEXR": "OpenEXR --no-deps",
}
# The WebUI pins these; the extension must never install or upgrade them.
WEBUI_OWNED = ("torch", "transformers", "gradio", "numpy", "PIL")

for module, requirement in OPTIONAL_INSTALLS.items():
    if not launch.is_installed(module):
        launch.run_pip(f"install {requirement}", f"{requirement} for sd-webui-depth2img")

missing = [module for module in WEBUI_OWNED if not launch.is_installed(module)]
if missing:
    print(f"[Depth2Img] the WebUI environment lacks {', '.join(missing)}; reinstall the WebUI's requirements")
