"""Decompression bombs, built in memory at test time: small files whose headers declare far more pixels than
the limit (shared by tests/test_hostile.py and bench/bench_hostile.py). Each is a valid file of its format
as far as its header goes, so a decoder that trusted it would allocate what it declares."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

SIDE = 100_000  # 10 gigapixels declared: far above any limit


def png_bomb(width: int = SIDE, height: int = SIDE) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = chunk(b"IDAT", zlib.compress(b"\0" * 4096))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + pixels + chunk(b"IEND", b"")


def jpeg_bomb(width: int = 65_000, height: int = 65_000) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)  # SOF0: length(2), precision(1), height, width
    return bytes(data)


def tiff_bomb(width: int = SIDE, height: int = SIDE) -> bytes:
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
               (273, 4, 1, 200), (277, 3, 1, 1), (278, 4, 1, height), (279, 4, 1, 16)]
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        packed = struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, kind, count) + packed
    data = b"II*\x00" + struct.pack("<I", 8) + ifd + b"\0\0\0\0"
    return data.ljust(216, b"\0")


def bmp_bomb(width: int = 50_000, height: int = 50_000) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, "BMP")
    data = bytearray(buffer.getvalue())
    struct.pack_into("<ii", data, 18, width, height)
    return bytes(data)


def npy_bomb(side: int = SIDE) -> bytes:
    buffer = io.BytesIO()
    header = {"descr": "<f4", "fortran_order": False, "shape": (side, side)}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue() + b"\0" * 64


def exr_bomb(side: int = SIDE) -> bytes:
    """A 4x4 scanline EXR written by OpenEXR whose dataWindow is then rewritten to side x side."""
    import tempfile

    import OpenEXR

    with tempfile.TemporaryDirectory() as folder:
        path = f"{folder}/small.exr"
        header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
        OpenEXR.File(header, {"Z": np.zeros((4, 4), np.float32)}).write(path)
        with open(path, "rb") as file:
            data = bytearray(file.read())
    name = b"dataWindow\x00box2i\x00"
    at = data.index(name) + len(name) + 4  # after the attribute's 4-byte size
    struct.pack_into("<iiii", data, at, 0, 0, side - 1, side - 1)
    return bytes(data)


def hdr_bomb(width: int = 10_000, height: int = 10_000) -> bytes:
    """A Radiance RGBE file, run-length encoded: ~6 MB for 100 megapixels (OpenCV would decode all of it)."""
    line = bytearray([2, 2, width >> 8, width & 255])
    for _ in range(4):
        left = width
        while left > 0:
            run = min(127, left)
            line += bytes([128 + run, 128])
            left -= run
    return b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n" + f"-Y {height} +X {width}\n".encode() + bytes(line) * height


# name -> (builder, whether it is a picture format the init image also accepts)
BOMBS = {
    "png": (png_bomb, True),
    "jpeg": (jpeg_bomb, True),
    "tiff": (tiff_bomb, True),
    "bmp": (bmp_bomb, True),
    "npy": (npy_bomb, False),
    "exr": (exr_bomb, False),
    "hdr": (hdr_bomb, False),
}
