"""What an uploaded file is, before anything is stored: its cleaned name,
its type (from the extension, checked against the bytes), and for images
a re-encoded copy without metadata and a thumbnail.

Pure functions of the bytes, no database: the upload view runs them in an
upload process (upload_worker), never in the server's (Pillow is CPU-bound,
and much of it holds the GIL).
"""

from __future__ import annotations

import io
import os
import unicodedata
import warnings
from dataclasses import dataclass
from typing import IO

from django.conf import settings
from PIL import Image, ImageOps, UnidentifiedImageError

from core.errors import ServiceError

NAME_MAX = 200

# Pillow's own name for each image type we accept.
IMAGE_FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/gif": "GIF", "image/webp": "WEBP"}

# The first bytes of the non-image types: what a file claims by its name
# must be what it starts with (a "report.pdf" that is HTML is refused).
_ZIP = (b"PK\x03\x04", b"PK\x05\x06")
_OLE = (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",)
MAGIC: dict[str, tuple[bytes, ...]] = {
    "application/pdf": (b"%PDF-",),
    "application/msword": _OLE,
    "application/vnd.ms-excel": _OLE,
    "application/vnd.ms-powerpoint": _OLE,
    "application/zip": _ZIP,
    "application/gzip": (b"\x1f\x8b",),
    "application/x-7z-compressed": (b"7z\xbc\xaf\x27\x1c",),
}


def name_clean(name: str) -> str:
    """The name a file is shown and saved with: its last path component
    (no ``../``), without control or format characters (no bidi tricks),
    NFC. Refused when nothing is left or it is longer than NAME_MAX."""
    name = unicodedata.normalize("NFC", name)
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if unicodedata.category(c) not in {"Cc", "Cf", "Zl", "Zp"})
    name = name.strip().strip(".").strip()
    if not name:
        raise ServiceError("invalid", "The file has no usable name.")
    if len(name) > NAME_MAX:
        raise ServiceError("invalid", f"The file name is longer than {NAME_MAX} characters.")
    return name


def content_type_of(name: str) -> str:
    """The type a file is served as, from its extension; refused if not allowed."""
    _, ext = os.path.splitext(name.lower())
    content_type = settings.CHAT_ATTACHMENT_TYPES.get(ext.lstrip("."))
    if content_type is None:
        allowed = ", ".join(sorted(settings.CHAT_ATTACHMENT_TYPES))
        raise ServiceError("invalid", f"Files of type {ext or '(none)'} are not accepted. Accepted: {allowed}.")
    return content_type


def bytes_check(head: bytes, content_type: str, name: str) -> None:
    """Refuse a file whose first bytes are not what its name claims."""
    magic = MAGIC.get(content_type)
    if magic is not None and not head.startswith(magic):
        raise ServiceError("invalid", f"{name} is not the kind of file its name says.")
    if content_type == "application/x-tar" and head[257:262] != b"ustar":
        raise ServiceError("invalid", f"{name} is not a tar archive.")
    if content_type == "text/plain":
        if b"\x00" in head:
            raise ServiceError("invalid", f"{name} is not plain text.")
        try:
            head.decode("utf-8")
        except UnicodeDecodeError as e:
            # A multi-byte character cut at the end of `head` is fine.
            if e.start < len(head) - 4:
                raise ServiceError("invalid", f"{name} is not UTF-8 plain text.") from None


@dataclass(frozen=True)
class Picture:
    data: bytes  # the image re-encoded, without EXIF or other metadata
    thumbnail: bytes
    thumbnail_type: str
    width: int
    height: int


def image_process(file: IO[bytes], content_type: str, name: str) -> Picture:
    """Read an image with Pillow and re-encode it: refused if it is not an
    image of the type its name says, is truncated, or has more pixels than
    CHAT_IMAGE_MAX_PIXELS (a decompression bomb: checked from the header,
    before any pixel is decoded). What is stored is rebuilt from the pixels
    alone, so EXIF (GPS position, camera serial) and comments are gone."""
    expected = IMAGE_FORMATS[content_type]
    bad = ServiceError("invalid", f"{name} is not a valid {expected} image.")
    limit = settings.CHAT_IMAGE_MAX_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            file.seek(0)
            with Image.open(file, formats=[expected]) as probe:
                _pixels_check(probe, limit, name)
                probe.verify()
            file.seek(0)
            with Image.open(file, formats=[expected]) as image:
                _pixels_check(image, limit, name)
                frames = getattr(image, "n_frames", 1)
                if frames > 1:
                    return _animation(image, content_type, expected)
                image.load()
                upright = ImageOps.exif_transpose(image)
                clean = _pixels_only(upright)
                return _still(clean, expected)
    except ServiceError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ServiceError("invalid", f"{name} has too many pixels (at most {limit:,}).") from None
    except (OSError, SyntaxError, ValueError, EOFError, UnidentifiedImageError):
        raise bad from None


def _pixels_check(image: Image.Image, limit: int, name: str) -> None:
    width, height = image.size
    if width <= 0 or height <= 0 or width * height > limit:
        raise ServiceError("invalid", f"{name} has too many pixels (at most {limit:,}).")


def _pixels_only(image: Image.Image) -> Image.Image:
    """A new image of the same pixels and nothing else."""
    if image.mode not in {"RGB", "RGBA", "L", "LA", "P"}:
        image = image.convert("RGBA" if "A" in image.mode else "RGB")
    clean = Image.new(image.mode, image.size)
    if image.mode == "P":
        palette = image.getpalette()
        if palette is not None:
            clean.putpalette(palette)
        if "transparency" in image.info:
            clean.info["transparency"] = image.info["transparency"]
    clean.paste(image)
    return clean


def _encode(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    if fmt == "JPEG" and image.mode not in {"RGB", "L"}:
        image = image.convert("RGB")
    options = {"quality": 90} if fmt in {"JPEG", "WEBP"} else {}
    image.save(out, format=fmt, **options)
    return out.getvalue()


def _thumbnail(image: Image.Image) -> tuple[bytes, str]:
    size = settings.CHAT_THUMBNAIL_PIXELS
    thumb = image.copy()
    thumb.thumbnail((size, size))
    if thumb.mode in {"RGBA", "LA", "P"}:
        return _encode(thumb.convert("RGBA"), "PNG"), "image/png"
    return _encode(thumb, "JPEG"), "image/jpeg"


def _still(image: Image.Image, fmt: str) -> Picture:
    thumb, thumb_type = _thumbnail(image)
    return Picture(_encode(image, fmt), thumb, thumb_type, image.width, image.height)


def _animation(image: Image.Image, content_type: str, fmt: str) -> Picture:
    """An animated GIF or WebP: every frame re-encoded, the first as thumbnail."""
    frames, durations = [], []
    for index in range(image.n_frames):  # type: ignore[attr-defined]
        image.seek(index)
        image.load()
        frames.append(_pixels_only(image.convert("RGBA")))
        durations.append(image.info.get("duration", 100))
    out = io.BytesIO()
    frames[0].save(out, format=fmt, save_all=True, append_images=frames[1:], duration=durations, loop=0)
    thumb, thumb_type = _thumbnail(frames[0])
    return Picture(out.getvalue(), thumb, thumb_type, image.width, image.height)
