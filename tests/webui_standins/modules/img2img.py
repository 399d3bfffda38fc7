from modules import images, processing, shared


def process_batch(p, input, output_dir, inpaint_mask_dir, args, to_scale=False, scale_by=1.0, use_png_info=False,
                  png_info_props=None, png_info_dir=None):  # fmt: skip
    """The WebUI's batch tab (v1.9-v1.10, modules/img2img.py), its loop only: list the inputs, then one job per
    input on the same p, each image read with images.read; v1.10's uploads come as file objects."""
    if isinstance(input, str):
        batch_images = list(shared.walk_files(input, allowed_extensions=(".png", ".jpg", ".jpeg", ".webp", ".tif",
                                                                          ".tiff")))  # fmt: skip
    else:
        batch_images = [x.name for x in input]
    shared.state.job_count = len(batch_images)
    results = []
    for i, image in enumerate(batch_images):
        shared.state.job = f"{i + 1} out of {len(batch_images)}"
        try:
            img = images.read(image)
        except OSError as error:  # the WebUI: UnidentifiedImageError, printed and skipped
            print(error)
            continue
        p.init_images = [img] * p.batch_size
        results.append(processing.process_images(p))
    return results
