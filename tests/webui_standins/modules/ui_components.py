import gradio as gr


class InputAccordion(gr.Checkbox):
    """An accordion whose open state is the input (v1.7+)."""

    def __init__(self, value, **kwargs):
        super().__init__(value, **kwargs)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
