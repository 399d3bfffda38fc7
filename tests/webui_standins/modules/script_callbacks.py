callbacks = {"ui_settings": [], "before_ui": [], "app_started": []}


def on_ui_settings(fn):
    callbacks["ui_settings"].append(fn)


def on_before_ui(fn):
    callbacks["before_ui"].append(fn)


def on_app_started(fn):
    callbacks["app_started"].append(fn)
