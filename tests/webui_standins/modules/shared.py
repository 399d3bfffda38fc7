from types import SimpleNamespace


class OptionInfo:
    """The WebUI's signature (v1.8-v1.10, with settings categories)."""

    def __init__(self, default=None, label="", component=None, component_args=None, onchange=None, section=None,
                 refresh=None, comment_before='', comment_after='', infotext=None, restrict_api=False,
                 category_id=None):
        self.default = default
        self.label = label
        self.component = component
        self.component_args = component_args
        self.section = section
        self.category_id = category_id


class Options:
    """Values in `data` (config.json); a registered option's default when absent, as the WebUI's opts."""

    def __init__(self):
        object.__setattr__(self, "data", {})
        object.__setattr__(self, "data_labels", {})

    def add_option(self, key, info):
        self.data_labels[key] = info

    def __getattr__(self, name):
        if name in self.data:
            return self.data[name]
        if name in self.data_labels:
            return self.data_labels[name].default
        raise AttributeError(name)


opts = Options()
opts.add_option("img2img_background_color", OptionInfo("#ffffff", "fill transparent parts of the input image"))
opts.add_option("samples_format", OptionInfo("png", "File format for images"))

sd_model = None
# The WebUI's command-line flags the script reads (--api-auth, --hide-ui-dir-config).
cmd_opts = SimpleNamespace(api_auth=None, hide_ui_dir_config=False)
# The WebUI's models folder (modules.paths_internal.models_path): none here, so no models/depth either.
models_path = "/nonexistent-webui/models"


class State:
    """The WebUI's shared.state, as far as the script uses it: the status text under the progress bar."""

    textinfo = None
    job = ""


state = State()


def walk_files(path, allowed_extensions=None):
    """The WebUI's shared.walk_files (modules/util.py, v1.8-v1.10), what the batch tab lists: natural order,
    subfolders included (without its hidden-files option)."""
    import os
    import re

    def natural_sort_key(s, regex=re.compile("([0-9]+)")):
        return [int(text) if text.isdigit() else text.lower() for text in regex.split(s)]

    if not os.path.exists(path):
        return
    if allowed_extensions is not None:
        allowed_extensions = set(allowed_extensions)
    items = sorted(os.walk(path, followlinks=True), key=lambda x: natural_sort_key(x[0]))
    for root, _, files in items:
        for filename in sorted(files, key=natural_sort_key):
            if allowed_extensions is not None and os.path.splitext(filename)[1].lower() not in allowed_extensions:
                continue
            yield os.path.join(root, filename)
