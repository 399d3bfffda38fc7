from collections import namedtuple

AlwaysVisible = object()
ScriptClassData = namedtuple("ScriptClassData", ["script_class", "path", "basedir", "module"])
scripts_data = []


class Script:
    filename = "depth2img_script.py"
    args_from = None
    args_to = None
    infotext_fields = None
    paste_field_names = None


class ScriptRunner:
    """The WebUI's hook loops: an exception from a script is logged and the job goes on without it."""

    def __init__(self, script, args):
        self.script = script
        self.args = list(args)
        self.errors = []

    def _call(self, method, p, *extra, **kwargs):
        hook = getattr(self.script, method, None)  # the WebUI's Script defines every hook as a no-op
        if hook is None:
            return
        try:
            hook(p, *extra, *self.args, **kwargs)
        except Exception as error:  # the WebUI: errors.report(f"Error running {method}: {filename}")
            self.errors.append((method, error))

    def before_process(self, p):
        self._call("before_process", p)

    def process(self, p):
        self._call("process", p)

    def postprocess(self, p, processed):
        self._call("postprocess", p, processed)

    def process_before_every_sampling(self, p, **kwargs):
        self._call("process_before_every_sampling", p, **kwargs)
