"""Real, small, distinct PNG images for the simulator to hand out."""

from __future__ import annotations

import hashlib
import io

from PIL import Image, ImageDraw


def make_png(seed: str, size: tuple[int, int] = (96, 128)) -> bytes:
    """A PNG whose colours and mark depend on `seed`, so two outputs never share bytes."""
    digest = hashlib.sha256(seed.encode("utf-8")).digest()
    width, height = size
    image = Image.new("RGB", size, (digest[0], digest[1], digest[2]))
    draw = ImageDraw.Draw(image)
    x, y = digest[3] % max(1, width // 2), digest[4] % max(1, height // 2)
    draw.rectangle([x, y, x + width // 3, y + height // 3], fill=(digest[5], digest[6], digest[7]))
    draw.line([0, digest[8] % height, width, digest[9] % height], fill=(255 - digest[0], 255 - digest[1], 90), width=3)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
