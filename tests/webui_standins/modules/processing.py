import torch

NATIVE_TXT2IMG_ERROR = (
    "Given groups=1, weight of size [320, 5, 3, 3], expected input[2, 9, 8, 8] to have 5 channels, "
    "but got 9 channels instead"
)


class StableDiffusionProcessing:
    def __init__(self, width=64, height=64, batch_size=1, is_api=False):
        self.width = width
        self.height = height
        self.batch_size = batch_size
        self.is_api = is_api
        self.extra_generation_params = {}
        self.override_settings = {}
        self.override_settings_restore_afterwards = True
        self.comments = {}

    def comment(self, text):
        self.comments[text] = 1

    def txt2img_image_conditioning(self, x, width=None, height=None):
        # The WebUI's native txt2img path with a depth model: a 9-channel UNet input for a 5-channel UNet.
        raise RuntimeError(NATIVE_TXT2IMG_ERROR)

    def img2img_image_conditioning(self, source_image, latent_image, image_mask=None, round_image_mask=True):
        # The WebUI's own depth estimate (marked so tests can tell it from the extension's).
        return torch.full((latent_image.shape[0], 1, *latent_image.shape[2:]), 7.0)


class StableDiffusionProcessingTxt2Img(StableDiffusionProcessing):
    pass


class StableDiffusionProcessingImg2Img(StableDiffusionProcessing):
    def __init__(self, init_images, resize_mode=0, **kwargs):
        super().__init__(**kwargs)
        self.init_images = init_images
        self.resize_mode = resize_mode
        self.inpaint_full_res = False
        self.paste_to = None


class Processed:
    def __init__(self, p, images, infotexts=None):
        self.images = list(images)
        self.infotexts = list(infotexts or ["" for _ in images])
        self.extra_generation_params = p.extra_generation_params  # the same dict, as in the WebUI
        self.index_of_first_image = 0
