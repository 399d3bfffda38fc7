"""The WebUI's install hook: install only what its environment lacks; never upgrade the WebUI's own pins.

A WebUI v1.10.x environment already has everything the extension uses (torch, numpy, Pillow, OpenCV,
safetensors, omegaconf, transformers); the extension's WebUI path does not need diffusers.
"""

import launch

# import name -> pip requirement, installed only when the import name is missing entirely.
OPTIONAL_INSTALLS = {
    "cv2": "opencv-python-headless",
    "safetensors": "safetensors",
    "omegaconf": "omegaconf",
}
# The WebUI pins these; the extension must never install or upgrade them.
WEBUI_OWNED = ("torch", "transformers", "gradio", "numpy", "PIL")

for module, requirement in OPTIONAL_INSTALLS.items():
    if not launch.is_installed(module):
        launch.run_pip(f"install {requirement}", f"{requirement} for sd-webui-depth2img")

missing = [module for module in WEBUI_OWNED if not launch.is_installed(module)]
if missing:
    print(f"[Depth2Img] the WebUI environment lacks {', '.join(missing)}; reinstall the WebUI's requirements")
