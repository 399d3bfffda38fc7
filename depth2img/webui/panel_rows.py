"""What only the WebUI's depth panel has, under the shared panel (depth2img.panel.builder): the depth output, a depth
checkpoint for the job, the batch tab's depth folder and depth scale, the hidden img2img sub-tab index."""

from __future__ import annotations

from depth2img.schema.args import Depth2ImgArgs


def build_webui_rows(
    elem: str, is_img2img: bool, checkpoint_choices: list[str], batch_supported: bool, batch_note: str,
    dirs_hidden: bool = False,
) -> dict:  # fmt: skip
    """What only the WebUI's panel has, under the shared panel: the depth output, a depth checkpoint for the job,
    the batch tab's depth folder and depth scale (img2img; on WebUIs without it, a note saying why), and the
    hidden img2img sub-tab index the preview reads (filled in by javascript/depth2img.js).

    dirs_hidden (--hide-ui-dir-config): the folder box is hidden and locked, as the WebUI's own folder boxes."""
    import gradio as gr

    c = {}
    with gr.Row(elem_classes=["depth2img-row"]):
        c["return_depth"] = gr.Checkbox(False, label="Add the depth map to the outputs", elem_id=f"{elem}_return")
        c["checkpoint"] = gr.Dropdown(
            choices=checkpoint_choices,
            value=checkpoint_choices[0],
            label="Depth checkpoint (used for this job when the loaded model is not a depth model)",
            elem_id=f"{elem}_checkpoint",
        )
    c["depth_dir"] = gr.Textbox(
        label="Batch tab: folder of depth maps, matched to the inputs by file name",
        visible=is_img2img and batch_supported and not dirs_hidden,
        interactive=not dirs_hidden,
        elem_id=f"{elem}_depth_dir",
    )
    if is_img2img:
        c["batch_depth_scale"] = gr.Radio(
            choices=[("each image's own", "per-image"), ("one for the whole folder", "global")],
            value=Depth2ImgArgs().batch_depth_scale,
            label="Batch tab: depth scale",
            info="one: a depth pass over every input first, then each image on the folder's depth range",
            visible=batch_supported,
            elem_id=f"{elem}_batch_depth_scale",
        )
        if not batch_supported:
            gr.Markdown(f"Batch tab: {batch_note}.", elem_id=f"{elem}_depth_dir_note")
    c["preview_tab"] = gr.Number(value=0, visible=False, elem_id=f"{elem}_preview_tab")
    return c
