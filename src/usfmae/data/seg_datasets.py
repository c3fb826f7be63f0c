"""Segmentation datasets read as users download them: image + label mask pairs with official partitions.

Every loader returns a :class:`SegDataset`: class names (index 0 = background), one
:class:`SegRecord` per image (image path, mask path, patient group, official split or fold, an
image-level label used to stratify folds and label fractions) and the official partitions as
:class:`usfmae.data.labelled.Fold` objects. Layouts (``shared/reference/benchmarks.md``):

- ``busbra``: ``BUSBRA/Images/bus_NNNN-X.png`` + ``Masks/mask_NNNN-X.png`` (0/255), the official
  patient-level 5 folds of ``5-fold-cv.csv``.
- ``mmotu`` (binary tumour masks ``annotations/<stem>_binary.PNG``) and ``mmotu8`` (the
  colour-coded ``annotations/<stem>.PNG``: background + 8 tumour classes), with the official
  segmentation split ``train.txt`` / ``val.txt`` (bare stems).
- ``folder``: the user's ``images/`` + ``masks/`` with matching stems; masks hold label indices
  (0 = background, 1.. = classes) or are binary 0/255.
- ``csv``: columns ``image,mask[,group]`` (paths relative to the CSV).
- ``phantom``: ``manifest.parquet`` written by ``usfmae phantom`` (``lesion_mask_path``).

Reading a mask (:func:`read_mask`) checks it: a missing file, a size other than its image's, or a
value outside the class set raises :class:`usfmae.errors.DataError` naming the file; batch loaders
(:func:`load_pairs`) skip such pairs with one line and record them in the rejects file.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from usfmae.data.labelled import (
    BUSBRA_CLASSES,
    MMOTU_CLASSES,
    Fold,
    _image_lookup,
    _read_csv,
    _resolve_root,
    load_busbra,
)
from usfmae.errors import DataError
from usfmae.fileio import RejectLog

log = logging.getLogger(__name__)

# MMOTU's colour code of the multi-class annotations (RGB), in the order of MMOTU_CLASSES; the
# palette of the dataset's own mmsegmentation config, as its public readers decode it.
MMOTU_PALETTE: tuple[tuple[int, int, int], ...] = (
    (64, 0, 0), (0, 64, 0), (0, 0, 64), (64, 0, 64), (64, 64, 0), (64, 64, 64), (0, 128, 0), (0, 0, 128))
MASK_FORMATS = ("binary", "index", "mmotu_colour")


@dataclass(frozen=True)
class SegRecord:
    """One image and its mask.

    Attributes:
        image, mask: absolute paths.
        group: patient/case id (images of one group never straddle a train/test boundary).
        label_index: image-level class used to stratify folds and label fractions (e.g. pathology).
        split: official split ("train"/"val") where one ships; fold: official 0-based test fold.
        spacing_mm: pixel size in mm where known (HD95 is then also reported in mm).
    """

    image: Path
    mask: Path
    group: str
    label_index: int = 0
    split: str | None = None
    fold: int | None = None
    spacing_mm: float | None = None

    @property
    def path(self) -> Path:
        """The image path (the name the classification records use)."""
        return self.image


@dataclass
class SegDataset:
    """Image/mask pairs plus the protocol facts a result must record.

    ``classes[0]`` is the background; ``mask_format`` says how mask files encode the classes:
    ``binary`` (0 and one other value), ``index`` (label indices) or ``mmotu_colour``.
    """

    name: str
    classes: list[str]
    records: list[SegRecord]
    mask_format: str = "index"
    protocol: str = ""
    official: list[Fold] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def labels(self) -> np.ndarray:
        """(N,) int64 image-level labels (stratification)."""
        return np.array([r.label_index for r in self.records], dtype=np.int64)

    @property
    def groups(self) -> np.ndarray:
        return np.array([r.group for r in self.records], dtype=object)


# ------------------------------------------------------------------------------------------- masks
def _decode_mask(path: Path) -> np.ndarray:
    """The stored values of a mask file, (H, W) or (H, W, 3) RGB; never rescaled (labels are exact)."""
    data = np.fromfile(path, dtype=np.uint8) if path.is_file() else None
    if data is None or data.size == 0:
        raise DataError(f"{path}: mask file missing or empty")
    mask = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if mask is None or mask.size == 0:
        raise DataError(f"{path}: not a readable mask image")
    if mask.dtype not in (np.uint8, np.uint16):
        raise DataError(f"{path}: mask must hold integer labels, found {mask.dtype}")
    if mask.ndim == 3:
        mask = mask[..., :3][..., ::-1]  # BGR(A) -> RGB; alpha ignored
        if (mask == mask[..., :1]).all():
            mask = mask[..., 0]      # grey stored as RGB
    return mask


def mask_to_labels(mask: np.ndarray, mask_format: str, num_classes: int, path: Path | str) -> np.ndarray:
    """Decode stored mask values to (H, W) uint8 label indices, or raise DataError naming ``path``."""
    if mask_format == "mmotu_colour":
        if mask.ndim == 2:
            mask = np.repeat(mask[..., None], 3, axis=2)
        code = (mask[..., 0].astype(np.int64) << 16) | (mask[..., 1].astype(np.int64) << 8) | mask[..., 2]
        lut = {0: 0, **{(r << 16) | (g << 8) | b: i + 1 for i, (r, g, b) in enumerate(MMOTU_PALETTE)}}
        values, inverse = np.unique(code, return_inverse=True)
        unknown = [int(v) for v in values if int(v) not in lut]
        if unknown:
            rgb = [((v >> 16) & 255, (v >> 8) & 255, v & 255) for v in unknown[:3]]
            raise DataError(f"{path}: colour(s) {rgb} are not in the MMOTU palette")
        return np.array([lut[int(v)] for v in values], dtype=np.uint8)[inverse].reshape(code.shape)
    if mask.ndim == 3:
        if mask_format != "binary":
            raise DataError(f"{path}: a label-index mask must be single-channel, found RGB colours")
        mask = mask.any(axis=2).astype(np.uint8)
    values = np.unique(mask)
    if mask_format == "binary":
        if len(values[values > 0]) > 1:
            raise DataError(f"{path}: a binary mask holds 0 and one other value, found {values[:6].tolist()}")
        return (mask > 0).astype(np.uint8)
    if values.max(initial=0) >= num_classes:
        raise DataError(f"{path}: label value(s) {values[values >= num_classes][:6].tolist()} outside "
                        f"0..{num_classes - 1}")
    return mask.astype(np.uint8)


def read_mask(record: SegRecord, ds: SegDataset, shape: tuple[int, int] | None = None) -> np.ndarray:
    """The (H, W) uint8 label-index mask of ``record``, checked against ``shape`` (its image's (H, W)).

    Raises:
        DataError: missing/unreadable file, another size than the image, values outside the classes.
    """
    mask = mask_to_labels(_decode_mask(record.mask), ds.mask_format, ds.num_classes, record.mask)
    if shape is not None and mask.shape[:2] != tuple(shape):
        raise DataError(f"{record.mask}: mask is {mask.shape[1]}x{mask.shape[0]} but its image is "
                        f"{shape[1]}x{shape[0]}")
    return mask


def load_pairs(ds: SegDataset, indices: Sequence[int], size: int, channels: int, policy: str = "pad",
               rejects: RejectLog | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode, check and fit images and masks (the same fit; nearest neighbour for masks).

    Args:
        ds: the dataset; indices: records to load.
        size, channels: model input size and channels.
        policy: the fit policy of the model's data contract ("pad" or "stretch").
        rejects: where skipped pairs are recorded (else only logged).

    Returns:
        images uint8 (N, channels, size, size), masks uint8 (N, size, size), kept indices (N,).
    """
    from usfmae.imaging import fit, read_image

    images, masks, kept = [], [], []
    for i in indices:
        record = ds.records[i]
        try:
            image = read_image(record.image)
            mask = read_mask(record, ds, image.shape[:2])
        except (DataError, OSError, cv2.error) as exc:
            reason = str(exc)
            if rejects is not None:
                rejects.reject(record.mask if str(record.mask) in reason else record.image, reason)
            else:
                log.warning("skipped %s", reason)
            continue
        images.append(np.ascontiguousarray(fit(image, size, channels, policy=policy).transpose(2, 0, 1)))
        masks.append(fit(mask, size, 1, policy=policy, interpolation="nearest")[..., 0])
        kept.append(int(i))
    if not kept and len(indices):
        raise DataError(f"{ds.name}: none of the {len(indices)} image/mask pairs could be read")
    shape = (0, channels, size, size)
    return (np.stack(images) if images else np.zeros(shape, np.uint8),
            np.stack(masks) if masks else np.zeros((0, size, size), np.uint8), np.asarray(kept, dtype=np.int64))


# ----------------------------------------------------------------------------------------- loaders
def load_busbra_seg(root: str | Path) -> SegDataset:
    """BUS-BRA lesion masks (``Masks/mask_NNNN-X.png``) with the official patient-level 5 folds."""
    cls = load_busbra(root)
    records = []
    for r in cls.records:
        mask = r.path.parent.parent / "Masks" / f"{r.path.stem.replace('bus_', 'mask_', 1)}.png"
        records.append(SegRecord(r.path, mask, r.group, r.label_index, fold=r.fold))
    return SegDataset("busbra", ["background", "lesion"], records, "binary",
                      "BUS-BRA lesion masks: official patient-level 5-fold partition (5-fold-cv.csv); "
                      f"folds stratified by pathology ({'/'.join(BUSBRA_CLASSES)}).", list(cls.official))


def _read_stems(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    stems = [Path(line.strip()).stem if line.strip().lower().endswith(".jpg") else line.strip()
             for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    if not stems:
        raise DataError(f"{path}: no entries")
    return stems


def _mmotu_labels(base: Path) -> dict[str, int]:
    """Image-level classes from train_cls.txt / val_cls.txt where present (stratification only)."""
    from usfmae.data.labelled import _read_cls_list

    out: dict[str, int] = {}
    for split in ("train", "val"):
        path = base / f"{split}_cls.txt"
        if path.is_file():
            out.update({Path(name).stem: label for name, label in _read_cls_list(path)})
    return out


def load_mmotu_seg(root: str | Path, multiclass: bool = False) -> SegDataset:
    """MMOTU OTU_2d tumour masks with the official segmentation split (``train.txt`` / ``val.txt``).

    Args:
        multiclass: False reads ``<stem>_binary.PNG`` (background, tumour); True reads the
            colour-coded ``<stem>.PNG`` (background + the 8 tumour classes).
    """
    base = _resolve_root(root, "train.txt", ["OTU_2d", "MMOTU/OTU_2d"], "MMOTU OTU_2d")
    lookup = _image_lookup(base / "images")
    annotations = base / "annotations"
    labels = _mmotu_labels(base)
    records = []
    for split in ("train", "val"):
        source = base / f"{split}.txt"
        for stem in _read_stems(source):
            image = lookup.get(f"{stem}.jpg")
            if image is None:
                raise DataError(f"{base / 'images' / (stem + '.JPG')}: image listed in {source.name} not found")
            mask = annotations / (f"{stem}.PNG" if multiclass else f"{stem}_binary.PNG")
            records.append(SegRecord(image.resolve(), mask, stem, labels.get(stem, 0), split=split))
    train = tuple(i for i, r in enumerate(records) if r.split == "train")
    val = tuple(i for i, r in enumerate(records) if r.split == "val")
    classes = ["background", *MMOTU_CLASSES] if multiclass else ["background", "tumour"]
    return SegDataset("mmotu8" if multiclass else "mmotu", classes, records,
                      "mmotu_colour" if multiclass else "binary",
                      f"MMOTU OTU_2d {'8-class colour' if multiclass else 'binary'} tumour masks: official "
                      "train.txt/val.txt split; no patient ids shipped, images not grouped.", [Fold(0, train, val)])


def load_folder_seg(root: str | Path) -> SegDataset:
    """``root/images/*`` + ``root/masks/*`` with matching stems (label-index or 0/255 PNG masks).

    A ``classes.txt`` beside them (one name per line, background first) names the classes;
    otherwise they are ``background, class1, ...`` up to the largest label found in the masks.
    """
    from usfmae.imaging import IMAGE_SUFFIXES

    root = Path(root).expanduser()
    images_dir, masks_dir = root / "images", root / "masks"
    for folder in (images_dir, masks_dir):
        if not folder.is_dir():
            raise DataError(f"{folder}: folder not found (expected images/ and masks/ with matching stems)")
    masks = {p.stem: p for p in masks_dir.iterdir() if p.is_file()}
    images = sorted(p for p in images_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise DataError(f"{images_dir}: no images")
    records = [SegRecord(p.resolve(), (masks.get(p.stem) or masks_dir / f"{p.stem}.png").resolve(), p.stem)
               for p in images]
    return SegDataset(root.name, _classes_for(root, records), records, "index",
                      "images/ + masks/ folder; each image its own group.")


def _classes_for(root: Path, records: Sequence[SegRecord]) -> list[str]:
    names_file = root / "classes.txt"
    if names_file.is_file():
        names = [line.strip() for line in names_file.read_text(encoding="utf-8").splitlines() if line.strip()]
        if len(names) < 2:
            raise DataError(f"{names_file}: needs at least two class names (background first)")
        return names
    top = 1
    for r in records:  # readable masks only: a broken one is reported when the pair is loaded
        try:
            mask = _decode_mask(r.mask)
        except DataError:
            continue
        if mask.ndim == 2:
            values = np.unique(mask)
            # 0/255 (a binary mask saved for viewing) means one foreground class, not 255.
            top = max(top, 1 if set(values.tolist()) <= {0, 255} else int(values.max()))
    return ["background", *(f"class{i}" for i in range(1, top + 1))]


def load_csv_seg(path: str | Path) -> SegDataset:
    """A CSV with columns ``image,mask[,group]``; relative paths are relative to the CSV's folder."""
    path = Path(path).expanduser()
    rows = _read_csv(path, ["image", "mask"])
    records = []
    for row in rows:
        image, mask = (Path(row[k]) if Path(row[k]).is_absolute() else path.parent / row[k] for k in ("image", "mask"))
        records.append(SegRecord(image.resolve(), mask.resolve(), row.get("group") or Path(row["image"]).stem))
    grouping = "groups from the 'group' column" if any(r.get("group") for r in rows) else "no patient grouping"
    return SegDataset(path.stem, _classes_for(path.parent, records), records, "index",
                      f"CSV {path.name}; {grouping}.")


def load_phantom_seg(root: str | Path) -> SegDataset:
    """The phantom's exact lesion masks (``lesion_mask_path``), stratified by benign/malignant/normal."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = Path(root).expanduser()
    manifest = root / "manifest.parquet" if root.is_dir() else root
    if not manifest.is_file():
        raise DataError(f"{manifest}: phantom manifest not found")
    try:
        table = pq.read_table(manifest, columns=["id", "path", "label_index", "lesion_mask_path", "depth_mm"])
    except (pa.ArrowInvalid, KeyError, OSError) as exc:
        raise DataError(f"{manifest}: no lesion masks in this phantom manifest (made before they were "
                        "written; generate it again with usfmae phantom)") from exc
    records = []
    for row in table.to_pylist():
        image = manifest.parent / row["path"]
        if not image.is_file():
            raise DataError(f"{image}: image listed in {manifest.name} not found")
        records.append(SegRecord(image.resolve(), (manifest.parent / row["lesion_mask_path"]).resolve(),
                                 str(row["id"]), int(row["label_index"])))
    return SegDataset("phantom", ["background", "lesion"], records, "binary",
                      "phantom simulator, exact lesion masks; each image its own group.")


LOADERS = {"busbra": load_busbra_seg, "mmotu": load_mmotu_seg,
           "mmotu8": lambda root: load_mmotu_seg(root, multiclass=True),
           "folder": load_folder_seg, "csv": load_csv_seg, "phantom": load_phantom_seg}


def load_seg_dataset(spec: str) -> SegDataset:
    """Load ``"KIND:PATH"`` with KIND one of busbra, mmotu, mmotu8, folder, csv, phantom."""
    kind, sep, path = spec.partition(":")
    if not sep or kind not in LOADERS or not path:
        raise DataError(f"dataset spec {spec!r}: expected KIND:PATH with KIND in {', '.join(LOADERS)}")
    return LOADERS[kind](path)


def official_or_kfold(ds: SegDataset, split: str, k: int, seed: int = 0) -> list[Fold]:
    """The dataset's official partition (``split`` auto/official), or a grouped stratified k-fold."""
    from usfmae.data import labelled

    if split == "official" or (split == "auto" and ds.official):
        if not ds.official:
            raise DataError(f"{ds.name}: no official split ships with this dataset; use --split kfold")
        return list(ds.official)
    # split_folds reads only .labels, .groups, .name and len(): a SegDataset provides them.
    return labelled.split_folds(ds, k, seed)  # type: ignore[arg-type]

