from PIL import Image


def read(fp, **kwargs):
    """v1.9+: the img2img batch tab reads its inputs with this (the WebUI also fixes EXIF orientation)."""
    return Image.open(fp, **kwargs)


def flatten(img, bgcolor):
    """The WebUI's own code (modules/images.py, v1.8-v1.10): the reference for transparency."""
    if img.mode == "RGBA":
        background = Image.new('RGBA', img.size, bgcolor)
        background.paste(img, mask=img)
        img = background

    return img.convert('RGB')
