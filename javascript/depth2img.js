// Hover hints for the Depth2Img panel (the WebUI shows `titles` entries as tooltips).
(function() {
    const hints = {
        "Preview depth": "Show the processed depth map (gray and coloured) without generating",
        "Invert (swap near and far)": "Depth maps here are white = near; invert maps that use white = far",
        "Add the depth map to the outputs": "Append the depth map used as a 16-bit PNG after the generated images",
    };
    if (typeof titles === "object") {
        Object.assign(titles, hints);
    }
})();

// Preview depth in img2img: the first input is replaced by the img2img sub-tab in use (0 img2img, 1 sketch,
// 2 inpaint, 3 inpaint sketch, 4 inpaint upload, 5 batch), so the preview reads that tab's picture. The same
// helper the WebUI's own img2img submit uses (get_tab_index, javascript/ui.js, v1.8-v1.10).
// eslint-disable-next-line no-unused-vars
function depth2img_preview_args() {
    var args = Array.from(arguments);
    args[0] = get_tab_index('mode_img2img');
    return args;
}

// The batch tab's depth-map folder does something only in the img2img "Batch" sub-tab (index 5): show it
// there alone. onUiUpdate runs after every change of the page, which includes switching sub-tabs by a click or
// by the WebUI's "send to" buttons; the work is one lookup while the sub-tab stays the same.
(function() {
    var shownFor = null;
    onUiUpdate(function() {
        var box = gradioApp().getElementById("depth2img_img2img_depth_dir");
        var tabs = gradioApp().getElementById("mode_img2img");
        if (!box || !tabs) {
            return;
        }
        var batch = get_tab_index("mode_img2img") === 5;
        if (shownFor !== batch) {
            shownFor = batch;
            box.style.display = batch ? "" : "none";
        }
    });
})();
