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
# The WebUI's models folder (modules.paths_internal.models_path): none here, so no models/depth either.
models_path = "/nonexistent-webui/models"
