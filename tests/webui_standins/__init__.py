"""Small stand-ins for the AUTOMATIC1111 WebUI's `modules.*` (and for gradio 3 and fastapi, which the test
environments lack), so CI can import `scripts/depth2img_script.py` and exercise its wiring.

Each stand-in keeps only what the script touches, with the WebUI's names and behaviour where it matters
(read from the WebUI's code, v1.8.0-v1.10.1): ScriptRunner logs exceptions from a script's process() and
carries on without it; `images.read` exists from v1.9; options fall back to registered defaults; the native
depth conditioning of txt2img fails with the 5-vs-9-channel error.

    with webui("1.8.0") as env:
        script_module = env.load_script()
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from contextlib import contextmanager
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType, SimpleNamespace

STANDINS_DIR = Path(__file__).resolve().parent
SCRIPT_PATH = STANDINS_DIR.parent.parent / "scripts" / "depth2img_script.py"
TOP_LEVEL = ("modules", "gradio", "fastapi", "modules_forge")
VERSIONS = ("1.8.0", "1.9.4", "1.10.1")


def _ours(name: str) -> bool:
    return any(name == top or name.startswith(top + ".") for top in TOP_LEVEL)


class WebUIEnv(SimpleNamespace):
    """The stand-in modules of one test, and the script loaded against them."""

    def load_script(self):
        spec = importlib.util.spec_from_file_location("depth2img_script_under_test", SCRIPT_PATH)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        self.script = module
        return module


@contextmanager
def webui(version: str = "1.10.1", forge: bool = False):
    """Put the stand-ins in sys.modules for the duration (real gradio/fastapi, if installed, come back after).

    forge: Forge's own package is found too (`modules_forge`, which is how the extension tells Forge), over the
    same `modules` (Forge keeps AUTOMATIC1111's script API; its model is Forge's, without a depth_model)."""
    if version not in VERSIONS:
        raise ValueError(f"unknown WebUI version {version}; stand-ins for {', '.join(VERSIONS)}")
    from depth2img.estimate import registry

    saved = {name: module for name, module in sys.modules.items() if _ours(name)}
    any_folder_path = registry.ANY_FOLDER_PATH  # the script restricts estimator paths at import
    for name in saved:
        del sys.modules[name]
    sys.path.insert(0, str(STANDINS_DIR))
    try:
        names = ("call_queue", "devices", "images", "img2img", "processing", "script_callbacks", "scripts",
                 "sd_models", "shared", "ui_components")
        env = WebUIEnv(version=version, gradio=importlib.import_module("gradio"),
                       fastapi=importlib.import_module("fastapi"),
                       **{name: importlib.import_module(f"modules.{name}") for name in names})
        if forge:
            sys.modules["modules_forge"] = ModuleType("modules_forge")
            sys.modules["modules_forge"].__spec__ = ModuleSpec("modules_forge", None)
        if version == "1.8.0":
            del env.images.read  # v1.8 has no images.read: its batch tab opens inputs with PIL directly
        yield env
    finally:
        sys.path.remove(str(STANDINS_DIR))
        registry.ANY_FOLDER_PATH = any_folder_path
        for name in [name for name in sys.modules if _ours(name)]:
            del sys.modules[name]
        sys.modules.update(saved)
