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
