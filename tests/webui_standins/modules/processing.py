import cv2
import numpy as np
import torch
from PIL import Image, ImageOps

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
        self.n_iter = 1
        self.seed = 1234
        self.prompt = ""
        self.scripts = None
        # What the stand-in's samplers were given, in call order: (pass, the image_conditioning tensor).
        self.sampled_with = []

    def init(self, all_prompts, all_seeds, all_subseeds):
        """The WebUI's StableDiffusionProcessing.init: nothing (its subclasses prepare their job here)."""

    def sample(self, conditioning, unconditional_conditioning, seeds, subseeds, subseed_strength, prompts):
        raise NotImplementedError

    def latent(self, width=None, height=None):
        """The stand-in's noise/latent: zeros [batch, 4, h/8, w/8] (no VAE, no sampler)."""
        return torch.zeros(self.batch_size, 4, (height or self.height) // 8, (width or self.width) // 8)

    def before_every_sampling(self, x):
        if self.scripts is not None:
            self.scripts.process_before_every_sampling(p=self, x=x, noise=x, c=None, uc=None)

    def comment(self, text):
        self.comments[text] = 1

    def txt2img_image_conditioning(self, x, width=None, height=None):
        from modules import shared

        if getattr(shared.sd_model, "depth_model", None) is not None:
            # The WebUI's native txt2img path with a depth model ("hybrid" conditioning: a 5-channel mask+latent
            # conditioning, so a 9-channel UNet input for a 5-channel UNet).
            raise RuntimeError(NATIVE_TXT2IMG_ERROR)
        return x.new_zeros(x.shape[0], 5, 1, 1)  # a plain model's: a dummy the sampler ignores

    def img2img_image_conditioning(self, source_image, latent_image, image_mask=None, round_image_mask=True):
        # The WebUI's own depth estimate (marked so tests can tell it from the extension's).
        return torch.full((latent_image.shape[0], 1, *latent_image.shape[2:]), 7.0)


class StableDiffusionProcessingTxt2Img(StableDiffusionProcessing):
    def __init__(self, enable_hr=False, hr_scale=2.0, **kwargs):
        super().__init__(**kwargs)
        self.enable_hr = enable_hr
        self.hr_scale = hr_scale

    def sample(self, conditioning, unconditional_conditioning, seeds, subseeds, subseed_strength, prompts):
        """The WebUI's (v1.10.1) order: the scripts' before-every-sampling hook, then the sampler with
        txt2img_image_conditioning(x); with hires fix (the latent upscaler, inpainting_mask_weight 1), the second
        pass at the upscaled size conditions with txt2img_image_conditioning(samples) again."""
        x = self.latent()
        self.before_every_sampling(x)
        self.sampled_with.append(("first pass", self.txt2img_image_conditioning(x)))
        if not self.enable_hr:
            return x
        width, height = int(self.width * self.hr_scale), int(self.height * self.hr_scale)
        samples = torch.nn.functional.interpolate(x, size=(height // 8, width // 8), mode="bilinear")
        self.before_every_sampling(samples)
        self.sampled_with.append(("hires pass", self.txt2img_image_conditioning(samples)))
        return samples


class StableDiffusionProcessingImg2Img(StableDiffusionProcessing):
    def __init__(self, init_images, resize_mode=0, mask=None, **kwargs):
        super().__init__(**kwargs)
        self.init_images = init_images
        self.resize_mode = resize_mode
        self.inpaint_full_res = False
        self.paste_to = None
        self.image_mask = mask  # the WebUI's __post_init__: the painted/uploaded mask, read by init()
        self.mask_round = True
        self.inpainting_mask_invert = 0
        self.mask_blur_x = self.mask_blur_y = 4
        self.inpaint_full_res_padding = 0
        self.image_conditioning = None
        self.init_latent = None

    def init(self, all_prompts, all_seeds, all_subseeds):
        """The WebUI's StableDiffusionProcessingImg2Img.init (v1.10.1), what it does that decides what reaches
        img2img_image_conditioning: the mask read with create_binary_mask, inverted, blurred, and with "only
        masked" its crop region (p.paste_to) set before the conditioning; the init images flattened and resized to
        the job's size, one image repeated over the batch; then self.image_conditioning =
        img2img_image_conditioning(image * 2 - 1, init_latent, image_mask, mask_round), once for the job.
        (Its VAE, fills, colour corrections and overlays are left out: the init latent is zeros here.)"""
        crop_region = None
        image_mask = self.image_mask
        if image_mask is not None:
            image_mask = create_binary_mask(image_mask, round=self.mask_round)
            if self.inpainting_mask_invert:
                image_mask = ImageOps.invert(image_mask)
            if self.mask_blur_x > 0:
                kernel = 2 * int(2.5 * self.mask_blur_x + 0.5) + 1
                image_mask = Image.fromarray(cv2.GaussianBlur(np.array(image_mask), (kernel, 1), self.mask_blur_x))
            if self.mask_blur_y > 0:
                kernel = 2 * int(2.5 * self.mask_blur_y + 0.5) + 1
                image_mask = Image.fromarray(cv2.GaussianBlur(np.array(image_mask), (1, kernel), self.mask_blur_y))
            if self.inpaint_full_res:
                mask = image_mask.convert("L")
                crop_region = get_crop_region_v2(mask, self.inpaint_full_res_padding)
                if crop_region:
                    crop_region = expand_crop_region(crop_region, self.width, self.height, mask.width, mask.height)
                    x1, y1, x2, y2 = crop_region
                    image_mask = mask.crop(crop_region).resize((self.width, self.height))
                    self.paste_to = (x1, y1, x2 - x1, y2 - y1)
                else:
                    image_mask = None
                    self.inpaint_full_res = False
            else:
                image_mask = image_mask.resize((self.width, self.height))
        imgs = []
        for img in self.init_images:
            image = img.convert("RGB")  # images.flatten
            if crop_region is None:
                image = image.resize((self.width, self.height))  # images.resize_image(self.resize_mode, ...)
            else:
                image = image.crop(crop_region).resize((self.width, self.height))
            imgs.append(np.moveaxis(np.array(image).astype(np.float32) / 255.0, 2, 0))
        if len(imgs) == 1:
            batch_images = np.expand_dims(imgs[0], axis=0).repeat(self.batch_size, axis=0)
        elif len(imgs) <= self.batch_size:
            self.batch_size = len(imgs)
            batch_images = np.array(imgs)
        else:
            raise RuntimeError(f"bad number of images passed: {len(imgs)}; expecting {self.batch_size} or less")
        image = torch.from_numpy(batch_images)
        self.init_latent = self.latent()
        self.image_conditioning = self.img2img_image_conditioning(image * 2 - 1, self.init_latent, image_mask,
                                                                  self.mask_round)  # fmt: skip

    def sample(self, conditioning, unconditional_conditioning, seeds, subseeds, subseed_strength, prompts):
        """The scripts' before-every-sampling hook, then the sampler with the conditioning init() made."""
        self.before_every_sampling(self.init_latent)
        self.sampled_with.append(("img2img", self.image_conditioning))
        return self.init_latent


def create_binary_mask(image, round=True):
    """The WebUI's own code (modules/processing.py, v1.8-v1.10): how it reads a mask before blurring it."""
    if image.mode == 'RGBA' and image.getextrema()[-1] != (255, 255):
        if round:
            image = image.split()[-1].convert("L").point(lambda x: 255 if x > 128 else 0)
        else:
            image = image.split()[-1].convert("L")
    else:
        image = image.convert('L')
    return image


def get_crop_region_v2(mask, pad=0):
    """The WebUI's modules/masking.py (v1.10.1)."""
    if box := mask.getbbox():
        x1, y1, x2, y2 = box
        if not pad:
            return box
        return max(x1 - pad, 0), max(y1 - pad, 0), min(x2 + pad, mask.size[0]), min(y2 + pad, mask.size[1])
    return None


def expand_crop_region(crop_region, processing_width, processing_height, image_width, image_height):
    """The WebUI's modules/masking.py (v1.10.1): the crop grown to the processing size's aspect."""
    x1, y1, x2, y2 = crop_region
    ratio_crop_region = (x2 - x1) / (y2 - y1)
    ratio_processing = processing_width / processing_height
    if ratio_crop_region > ratio_processing:
        desired_height = (x2 - x1) / ratio_processing
        desired_height_diff = int(desired_height - (y2 - y1))
        y1 -= desired_height_diff // 2
        y2 += desired_height_diff - desired_height_diff // 2
        if y2 >= image_height:
            diff = y2 - image_height
            y2 -= diff
            y1 -= diff
        if y1 < 0:
            y2 -= y1
            y1 -= y1
        if y2 >= image_height:
            y2 = image_height
    else:
        desired_width = (y2 - y1) * ratio_processing
        desired_width_diff = int(desired_width - (x2 - x1))
        x1 -= desired_width_diff // 2
        x2 += desired_width_diff - desired_width_diff // 2
        if x2 >= image_width:
            diff = x2 - image_width
            x2 -= diff
            x1 -= diff
        if x1 < 0:
            x2 -= x1
            x1 -= x1
        if x2 >= image_width:
            x2 = image_width
    return x1, y1, x2, y2


def process_images(p):
    """One job in the WebUI's order (v1.10.1, modules/processing.py process_images / process_images_inner):
    scripts' before_process -> the override_settings' checkpoint loaded -> scripts' process -> p.init(...) ->
    per batch (n_iter): scripts' before-every-sampling hook and the sampler (p.sample) -> scripts' postprocess.
    An exception from p.init or p.sample (e.g. from a conditioning hook) ends the job: it propagates, as the
    WebUI's API turns it into an error.
    """
    if p.scripts is not None:
        p.scripts.before_process(p)
    from modules import sd_models, shared

    # process_images: a checkpoint override (a script's, from before_process) is loaded for the job, if known,
    # and is the sd_model_checkpoint option while the job runs (AUTOMATIC1111 and Forge alike).
    checkpoint = p.override_settings.get("sd_model_checkpoint")
    if checkpoint is not None and sd_models.checkpoint_aliases.get(checkpoint) is not None:
        saved = dict(shared.opts.data)
        shared.opts.data["sd_model_checkpoint"] = checkpoint
        sd_models.reload_model_weights(info=sd_models.checkpoint_aliases[checkpoint])
        try:
            return _process_images_inner(p)
        finally:
            if p.override_settings_restore_afterwards:
                shared.opts.data.clear()
                shared.opts.data.update(saved)
    return _process_images_inner(p)


def _process_images_inner(p):
    all_prompts = [p.prompt] * (p.batch_size * p.n_iter)
    all_seeds = [int(p.seed) + i for i in range(len(all_prompts))]
    if p.scripts is not None:
        p.scripts.process(p)
    p.init(all_prompts, all_seeds, all_seeds)
    images = []
    for n in range(p.n_iter):
        seeds = all_seeds[n * p.batch_size : (n + 1) * p.batch_size]
        samples = p.sample(None, None, seeds, seeds, 0.0, all_prompts[: p.batch_size])
        images += [Image.new("RGB", (samples.shape[3] * 8, samples.shape[2] * 8)) for _ in range(samples.shape[0])]
    processed = Processed(p, images)
    if p.scripts is not None:
        p.scripts.postprocess(p, processed)
    return processed


class Processed:
    def __init__(self, p, images, infotexts=None):
        self.images = list(images)
        self.infotexts = list(infotexts or ["" for _ in images])
        self.extra_generation_params = p.extra_generation_params  # the same dict, as in the WebUI
        self.index_of_first_image = 0
