"""Decode untrusted image files so that one bad file costs one sample, never the process.

A station reads whatever lands in a folder: truncated writes, flipped bits, files
whose header claims 65535x65535 pixels, decompression bombs, gigabyte files. So
the file size is checked before reading, the pixel count from the format's header
before decoding (PNG IHDR, JPEG SOF, BMP and TIFF headers; other formats are
refused), JPEG is decoded strictly (libjpeg's corrupt-data warnings are errors,
bytes after the end marker are fine), PNG chunks must be complete with valid CRCs
up to IEND, and any failure while decoding becomes a :class:`BadInputError` that
names the file, the reason and what to do.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import simplejpeg

from flowedge.core.errors import BadInputError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
RECAPTURE = "re-capture the part or drop the file"
TRUNCATED = "the writer was probably interrupted: re-capture or drop the file"


@dataclass(frozen=True)
class DecodeLimits:
    """What one file may cost before any pixel is decoded (station: ``pipeline.limits``)."""

    max_bytes: int = 64 * 2**20
    max_pixels: int = 40_000_000


DEFAULT_LIMITS = DecodeLimits()


class _Refused(Exception):
    """A reason a file cannot be used, plus what the operator should do about it."""

    def __init__(self, reason: str, advice: str = RECAPTURE) -> None:
        super().__init__(reason)
        self.reason, self.advice = reason, advice


def read_image_file(path: str | Path, limits: DecodeLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Read and decode one image file; the size limit is checked before reading."""
    name = str(path)
    try:
        with open(path, "rb") as handle:
            _check_size(os.fstat(handle.fileno()).st_size, limits, name)
            data = handle.read(limits.max_bytes + 1)  # a file still growing cannot pass the limit
    except OSError as exc:
        raise BadInputError(f"image {name}: cannot read file ({exc.strerror or exc})") from exc
    return decode_image_bytes(data, name, limits)


def decode_image_bytes(
    data: bytes, name: str = "<bytes>", limits: DecodeLimits = DEFAULT_LIMITS
) -> np.ndarray:
    """Decode PNG, JPEG, BMP or TIFF bytes to uint8/uint16 HxW or HxWxC (BGR/BGRA)."""
    if not data:
        raise BadInputError(f"image {name}: file is empty; check the camera or the file writer")
    _check_size(len(data), limits, name)
    try:
        return _decode(data, limits)
    except _Refused as exc:
        raise BadInputError(f"image {name}: {exc.reason}; {exc.advice}") from None
    except MemoryError:
        raise BadInputError(
            f"image {name}: decoding ran out of memory; lower pipeline.limits.max_megapixels "
            "or give the station more memory"
        ) from None
    except Exception as exc:  # cv2.error, ValueError, OSError...: the file's problem, not ours
        raise BadInputError(
            f"image {name}: not a decodable image ({type(exc).__name__}: {exc}); {RECAPTURE}"
        ) from exc


def _check_size(size: int, limits: DecodeLimits, name: str) -> None:
    if size > limits.max_bytes:
        raise BadInputError(
            f"image {name}: file is {size} bytes, over the limit of {limits.max_bytes} bytes; "
            "check the writer, or raise pipeline.limits.max_file_mib if such files are expected"
        )


def _decode(data: bytes, limits: DecodeLimits) -> np.ndarray:
    if data.startswith(PNG_SIGNATURE):
        _check_pixels(*_png_size(data), limits)
        return _opencv_decode(data, "PNG")
    if data.startswith(b"\xff\xd8"):
        return _decode_jpeg(data, limits)
    if data.startswith(b"BM"):
        _check_pixels(*_bmp_size(data), limits)
        return _opencv_decode(data, "BMP")
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        _check_pixels(*_tiff_size(data), limits)
        return _opencv_decode(data, "TIFF")
    raise _Refused(
        f"not a decodable image (unknown format, first bytes {data[:8]!r})",
        "use PNG, JPEG, BMP or TIFF",
    )


def _check_pixels(width: int, height: int, limits: DecodeLimits) -> None:
    if width <= 0 or height <= 0:
        raise _Refused(f"not a decodable image (header says {width}x{height} pixels)")
    if width * height > limits.max_pixels:
        raise _Refused(
            f"header says {width}x{height} = {width * height / 1e6:.1f} megapixels, over the "
            f"limit of {limits.max_pixels / 1e6:.1f}; refused before decoding",
            "check the camera, or raise pipeline.limits.max_megapixels if such images are expected",
        )


def _opencv_decode(data: bytes, kind: str) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise _Refused(f"not a decodable image (OpenCV cannot decode this {kind})")
    return image


def _decode_jpeg(data: bytes, limits: DecodeLimits) -> np.ndarray:
    """Strict libjpeg-turbo decoding: truncation and corrupt entropy data are errors."""
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
        _check_pixels(width, height, limits)
        gray = colorspace == "Gray"
        image = simplejpeg.decode_jpeg(data, colorspace="GRAY" if gray else "BGR", strict=True)
    except ValueError as exc:
        # entropy-coded data never contains FF D9, so a file without it was cut off
        if "premature end" in str(exc).lower() or b"\xff\xd9" not in data:
            raise _Refused(f"JPEG is truncated ({exc})", TRUNCATED) from None
        raise _Refused(f"not a decodable image (corrupt JPEG: {exc})") from None
    return image[:, :, 0] if gray else image  # grayscale stays 2-D, as OpenCV gives it


def _png_size(data: bytes) -> tuple[int, int]:
    """IHDR's width and height, after checking every chunk up to IEND (length and CRC)."""
    view = memoryview(data)
    position, size = len(PNG_SIGNATURE), None
    while True:
        if position + 8 > len(data):
            raise _Refused("PNG is truncated (no IEND chunk)", TRUNCATED)
        length, raw_kind = struct.unpack(">I4s", view[position : position + 8])
        kind = raw_kind.decode("ascii", "backslashreplace")
        end = position + 12 + length
        if end > len(data):
            raise _Refused(f"PNG is truncated (chunk {kind} cut off)", TRUNCATED)
        (crc,) = struct.unpack(">I", view[end - 4 : end])
        if zlib.crc32(view[position + 4 : end - 4]) != crc:
            raise _Refused(f"not a decodable image (PNG chunk {kind} fails its CRC)")
        if size is None:
            if kind != "IHDR" or length != 13:
                raise _Refused("not a decodable image (PNG does not start with IHDR)")
            size = struct.unpack(">II", view[position + 8 : position + 16])
        if kind == "IEND":
            return size
        position = end


def _bmp_size(data: bytes) -> tuple[int, int]:
    """Width and height from the DIB header; a file shorter than its pixel array is truncated."""
    if len(data) < 26:
        raise _Refused("BMP is truncated (header cut off)", TRUNCATED)
    declared_size, _, pixel_offset, header_size = struct.unpack("<IIII", data[2:18])
    if header_size == 12:  # OS/2 BITMAPCOREHEADER
        width, height, _, bits = struct.unpack("<HHHH", data[18:26])
        compression = 0
    elif len(data) >= 34:
        width, height, _, bits, compression = struct.unpack("<iiHHI", data[18:34])
    else:
        raise _Refused("BMP is truncated (header cut off)", TRUNCATED)
    height = abs(height)  # negative: rows stored top-down
    uncompressed = compression in (0, 3)  # BI_RGB, BI_BITFIELDS
    row_bytes = (width * bits + 31) // 32 * 4
    if declared_size > len(data) or (
        uncompressed and width > 0 and pixel_offset + row_bytes * height > len(data)
    ):
        raise _Refused("BMP is truncated (pixel data cut off)", TRUNCATED)
    return width, height


def _tiff_size(data: bytes) -> tuple[int, int]:
    """ImageWidth and ImageLength from the first IFD (the page OpenCV decodes)."""
    order = "<" if data[:2] == b"II" else ">"
    try:
        (offset,) = struct.unpack(order + "I", data[4:8])
        (count,) = struct.unpack(order + "H", data[offset : offset + 2])
        tags = {}
        for entry in range(offset + 2, offset + 2 + 12 * count, 12):
            tag, kind, _ = struct.unpack(order + "HHI", data[entry : entry + 8])
            if tag in (256, 257):
                fmt = order + ("H" if kind == 3 else "I")
                tags[tag] = struct.unpack(fmt, data[entry + 8 : entry + 8 + struct.calcsize(fmt)])[
                    0
                ]
    except struct.error:
        raise _Refused("TIFF is truncated (first image directory cut off)", TRUNCATED) from None
    if 256 not in tags or 257 not in tags:
        raise _Refused("not a decodable image (TIFF without ImageWidth/ImageLength)")
    return tags[256], tags[257]
