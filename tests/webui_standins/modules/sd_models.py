import os

checkpoints_list = {}
checkpoint_aliases = {}


class CheckpointInfo:
    """Titles as the WebUI makes them for files outside its model folder: the file name (no hash yet)."""

    def __init__(self, filename):
        self.filename = filename
        self.name = os.path.basename(filename)
        self.model_name = os.path.splitext(self.name)[0]
        self.title = self.name
        self.shorthash = None
        self.ids = [self.model_name, self.title, self.name]

    def register(self):
        checkpoints_list[self.title] = self
        for alias in self.ids:
            checkpoint_aliases[alias] = self


def get_closet_checkpoint_match(search_string):
    """The WebUI's lookup: an alias, else the shortest title containing the string, else None."""
    if not search_string:
        return None
    info = checkpoint_aliases.get(search_string)
    if info is not None:
        return info
    found = sorted([i for i in checkpoints_list.values() if search_string in i.title], key=lambda i: len(i.title))
    return found[0] if found else None


# What loading a checkpoint gives, for the tests that need it: filename -> the model object (shared.sd_model).
loadable = {}


def reload_model_weights(sd_model=None, info=None):
    """The WebUI's: make `info` the loaded model (here: the model a test registered in `loadable`, if any)."""
    from modules import shared

    if info is not None and info.filename in loadable:
        shared.sd_model = loadable[info.filename]
    return shared.sd_model
