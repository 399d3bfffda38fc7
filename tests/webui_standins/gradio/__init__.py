"""Stand-in for gradio 3.41 (the WebUI's): components record their arguments; events record their wiring."""


class Error(Exception):
    pass


class Block:
    def __init__(self, *args, **kwargs):
        self.args = args
        self.kwargs = kwargs
        self.elem_id = kwargs.get("elem_id")
        self.visible = kwargs.get("visible", True)
        self.events = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def click(self, fn=None, inputs=None, outputs=None, _js=None, **kwargs):
        self.events.append({"event": "click", "fn": fn, "inputs": inputs, "outputs": outputs, "_js": _js})

    def change(self, fn=None, inputs=None, outputs=None, _js=None, **kwargs):
        self.events.append({"event": "change", "fn": fn, "inputs": inputs, "outputs": outputs, "_js": _js})


class Row(Block):
    pass


class Column(Block):
    pass


class Accordion(Block):
    pass


class Radio(Block):
    pass


class Dropdown(Block):
    pass


class File(Block):
    pass


class Checkbox(Block):
    pass


class Slider(Block):
    pass


class Textbox(Block):
    pass


class Button(Block):
    pass


class Image(Block):
    pass


class Number(Block):
    pass


class Markdown(Block):
    pass


class HTML(Block):
    pass
