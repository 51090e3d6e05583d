"""Draw a Predict answer on its image with PIL: boxes, mask outlines, keypoints, labels.

    picture = draw_prediction(image_bytes, predict_response)
    picture.save("overlay.png")

Classification answers are written as a list of the top classes in the corner. Colours
follow the category id, so one class keeps its colour across images. No font is loaded
from disk or the network: PIL's built-in bitmap font.
"""

from __future__ import annotations

import io
from typing import Any

from PIL import Image, ImageDraw, ImageFont

PALETTE = (
    (255, 56, 56),
    (72, 249, 10),
    (0, 194, 255),
    (255, 178, 29),
    (207, 210, 49),
    (146, 204, 23),
    (61, 219, 134),
    (26, 147, 52),
    (0, 212, 187),
    (44, 153, 168),
    (52, 69, 147),
    (100, 115, 255),
    (132, 56, 255),
    (203, 56, 255),
    (255, 149, 200),
    (255, 55, 199),
)


def colour(category_id: int) -> tuple[int, int, int]:
    return PALETTE[int(category_id) % len(PALETTE)]


def _font() -> Any:
    try:
        return ImageFont.load_default()
    except Exception:  # very old Pillow
        return None


def _label(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, fill: Any) -> None:
    font = _font()
    left, top, right, bottom = draw.textbbox(xy, text, font=font)
    y = max(0.0, xy[1] - (bottom - top) - 2)
    box = (left, y, right + 2, y + (bottom - top) + 2)
    draw.rectangle(box, fill=fill)
    draw.text((left + 1, y), text, fill=(0, 0, 0), font=font)


def draw_prediction(image: bytes | Image.Image, prediction: Any) -> Image.Image:
    """The image with ``prediction`` (a visionmesh.v1.PredictResponse) drawn on it."""
    picture = image if isinstance(image, Image.Image) else Image.open(io.BytesIO(image))
    picture = picture.convert("RGB")
    layer = Image.new("RGBA", picture.size, (0, 0, 0, 0))
    fill = ImageDraw.Draw(layer)
    draw = ImageDraw.Draw(picture)
    width = max(1, round(max(picture.size) / 200))
    for det in prediction.detections:
        rgb = colour(det.category_id)
        for polygon in det.polygons:
            points = list(zip(polygon.coordinates[0::2], polygon.coordinates[1::2], strict=False))
            if len(points) >= 3:
                fill.polygon(points, fill=(*rgb, 90))
    picture = Image.alpha_composite(picture.convert("RGBA"), layer).convert("RGB")
    draw = ImageDraw.Draw(picture)
    for det in prediction.detections:
        rgb = colour(det.category_id)
        for polygon in det.polygons:
            points = list(zip(polygon.coordinates[0::2], polygon.coordinates[1::2], strict=False))
            if len(points) >= 3:
                draw.line(points + [points[0]], fill=rgb, width=width)
        box = det.box
        has_box = box.width > 0 and box.height > 0
        if has_box:
            draw.rectangle(
                (box.x, box.y, box.x + box.width, box.y + box.height), outline=rgb, width=width
            )
        radius = width + 1
        visible = [k for k in det.keypoints if k.visibility > 0 or k.score > 0]
        for k in visible:
            draw.ellipse((k.x - radius, k.y - radius, k.x + radius, k.y + radius), fill=rgb)
        name = det.category_name or str(det.category_id)
        anchor = (box.x, box.y) if has_box else (visible[0].x, visible[0].y) if visible else None
        if anchor is None and det.polygons and det.polygons[0].coordinates:
            anchor = (det.polygons[0].coordinates[0], det.polygons[0].coordinates[1])
        if anchor is not None:
            _label(draw, anchor, f"{name} {det.score:.2f}", rgb)
    y = 2.0
    for cls in list(prediction.classes)[:5]:
        text = f"{cls.category_name or cls.category_id} {cls.score:.2f}"
        _label(draw, (2.0, y + 12), text, colour(cls.category_id))
        y += 14
    return picture
