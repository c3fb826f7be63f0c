"""The paper's annotation removal, reproduced step by step (``usfmae clean --method paper``).

USF-MAE (Megahed et al., section 2.2, and the repository notebook's defaults) OR-s three masks on the
native-resolution frame, closes then opens the union with a 5x5 kernel and fills it by Navier-Stokes
inpainting:

- text: Tesseract word boxes on the grayscale image (non-empty words), filled rectangles;
- colour marks: CLAHE (clip 2.0, 8x8 tiles) on L of CIELAB, back to BGR, then HSV; pixels with
  S > 40 clustered by K-means (k=3) on (H, S, V); clusters with mean V > 20 kept; connected
  components of at least 20 px kept;
- grayscale marks: CLAHE on gray, Canny(50, 150), 3x3 dilation, external contours with
  30 < area < 2000 px filled.

Then (not here: see :func:`usfmae.clean.run.resize_output`) a nearest-neighbour resize to 224x224.
Thresholds are in native pixels, as in the paper. The only liberties taken: Tesseract runs in
process (same engine and page segmentation, same boxes, no process start-up), and K-means gets a
fixed seed so that runs are reproducible.
"""

from __future__ import annotations

import cv2
import numpy as np

from usfmae.clean.ocr import word_boxes

CLAHE_CLIP = 2.0
CLAHE_TILES = (8, 8)
SAT_MIN = 40
KMEANS_K = 3
KMEANS_SEED = 0
CLUSTER_V_MIN = 20
COLOUR_MIN_PX = 20
CANNY_LO, CANNY_HI = 50, 150
CONTOUR_AREA = (30, 2000)
MORPH_KERNEL = 5
INPAINT_RADIUS = 3


def _clahe() -> cv2.CLAHE:
    return cv2.createCLAHE(clipLimit=CLAHE_CLIP, tileGridSize=CLAHE_TILES)


def text_mask(gray: np.ndarray) -> np.ndarray:
    """Filled Tesseract word boxes. ``gray`` (H, W) uint8 -> (H, W) uint8 mask in {0, 255}."""
    mask = np.zeros_like(gray)
    for word in word_boxes(gray, margin=False):  # the frame as the notebook gives it to Tesseract
        cv2.rectangle(mask, (word.x, word.y), (word.x + word.w, word.y + word.h), 255, thickness=-1)
    return mask


def colour_mask(bgr: np.ndarray) -> np.ndarray:
    """Saturated marks by K-means in HSV after CLAHE on L. ``bgr`` (H, W, 3) -> (H, W) {0, 255}."""
    lab = cv2.cvtColor(bgr, cv2.COLOR_BGR2LAB)
    lab[..., 0] = _clahe().apply(lab[..., 0])
    hsv = cv2.cvtColor(cv2.cvtColor(lab, cv2.COLOR_LAB2BGR), cv2.COLOR_BGR2HSV)
    mask = np.zeros(bgr.shape[:2], np.uint8)
    candidates = hsv[..., 1] > SAT_MIN
    n = int(candidates.sum())
    if n == 0:
        return mask
    samples = hsv[candidates].astype(np.float32)  # (n, 3): H, S, V
    k = min(KMEANS_K, n)
    cv2.setRNGSeed(KMEANS_SEED)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 10, 1.0)
    _, labels, centers = cv2.kmeans(samples, k, None, criteria, 3, cv2.KMEANS_PP_CENTERS)
    labels = labels.ravel()
    keep_cluster = np.array([samples[labels == c, 2].mean() > CLUSTER_V_MIN if np.any(labels == c) else False
                             for c in range(k)])
    selected = np.zeros(bgr.shape[:2], bool)
    selected[candidates] = keep_cluster[labels]
    count, comp, stats, _ = cv2.connectedComponentsWithStats(selected.astype(np.uint8), connectivity=8)
    big = np.zeros(count, bool)
    big[1:] = stats[1:, cv2.CC_STAT_AREA] >= COLOUR_MIN_PX
    mask[big[comp]] = 255
    return mask


def gray_mark_mask(gray: np.ndarray) -> np.ndarray:
    """Small closed edge contours (calipers, ticks, small text). (H, W) uint8 -> (H, W) {0, 255}."""
    edges = cv2.Canny(_clahe().apply(gray), CANNY_LO, CANNY_HI)
    edges = cv2.dilate(edges, np.ones((3, 3), np.uint8), iterations=1)
    contours, _ = cv2.findContours(edges, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    mask = np.zeros_like(gray)
    small = [c for c in contours if CONTOUR_AREA[0] < cv2.contourArea(c) < CONTOUR_AREA[1]]
    if small:
        cv2.drawContours(mask, small, -1, 255, thickness=-1)
    return mask


def paper_mask(bgr: np.ndarray, use_ocr: bool = True) -> np.ndarray:
    """Union of the three masks after 5x5 close then open. ``bgr`` (H, W, 3) -> (H, W) {0, 255}."""
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    mask = colour_mask(bgr) | gray_mark_mask(gray)
    if use_ocr:
        mask |= text_mask(gray)
    kernel = np.ones((MORPH_KERNEL, MORPH_KERNEL), np.uint8)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel)
    return cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)


def clean_paper(rgb: np.ndarray, use_ocr: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The paper's annotation removal at native resolution.

    Args:
        rgb: (H, W, 3) uint8 RGB frame.
        use_ocr: run the Tesseract text mask (the paper always does).

    Returns:
        ``(cleaned (H, W, 3) uint8 RGB, mask (H, W) bool)``.
    """
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    mask = paper_mask(bgr, use_ocr)
    cleaned = cv2.inpaint(bgr, mask, INPAINT_RADIUS, cv2.INPAINT_NS)
    return cv2.cvtColor(cleaned, cv2.COLOR_BGR2RGB), mask > 0
