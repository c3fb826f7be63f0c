"""Segmentation results in the report: overlays, Table 2-style tables and Dice vs label-fraction curves.

Results are the ``usfmae segment`` JSON files (``protocol.task == "segmentation"``).
"""

from __future__ import annotations

import numpy as np

# Class colours (RGB) for overlays: class 1 red, 2 green, 3 blue, ... (background left as is).
PALETTE = np.array([(0, 0, 0), (230, 50, 50), (40, 200, 80), (50, 110, 240), (240, 200, 40), (200, 60, 220),
                    (40, 210, 220), (250, 140, 30), (150, 90, 60)], dtype=np.uint8)


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """The image with each class tinted in its colour and outlined.

    Args:
        image: (H, W) or (H, W, C) uint8.
        mask: (H, W) label indices (0 = background), the same size.
        alpha: tint strength inside the classes.

    Returns:
        (H, W, 3) uint8 RGB.
    """
    import cv2

    rgb = np.repeat(image[..., :1], 3, axis=2) if image.ndim == 3 and image.shape[2] == 1 else image
    rgb = np.repeat(rgb[..., None], 3, axis=2) if rgb.ndim == 2 else rgb[..., :3]
    if rgb.shape[:2] != mask.shape:
        raise ValueError(f"image {rgb.shape[:2]} and mask {mask.shape} differ in size")
    colours = PALETTE[np.minimum(mask, len(PALETTE) - 1)]
    inside = (mask > 0)[..., None]
    out = np.where(inside, (1 - alpha) * rgb + alpha * colours, rgb).astype(np.uint8)
    for c in np.unique(mask[mask > 0]):
        contours, _ = cv2.findContours((mask == c).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, tuple(int(v) for v in PALETTE[min(int(c), len(PALETTE) - 1)]), 1)
    return out
