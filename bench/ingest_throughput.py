"""Ingest throughput on one core: a 30 fps H.264 clip and a 30 fps cine DICOM, both sampled at 3 fps.

Writes a synthetic speckle clip (moving, so frames are not near duplicates) as MP4 and as an
uncompressed multi-frame DICOM, then times ``usfmae.data.ingest.process_file`` on each in this process
(decode, sample, hash, within-file dedup, PNG write: the whole per-file ingest path, one core).

Prints one JSON line. ``*_source_frames_per_s`` counts frames of the input stream covered per second
(the video decoder must decode all of them; the DICOM reader decodes only the sampled ones);
``*_out_frames_per_s`` counts sampled frames (hashed, and written unless near duplicates) per second;
``*_per_cpu_s`` divide by the CPU time of all the worker's threads instead of wall time, which is the
per-core figure (FFmpeg decodes with several threads). ``ingest_peak_rss_mb``: the worker's peak.

    python bench/ingest_throughput.py [--seconds 10] [--width 640] [--height 480]
"""

from __future__ import annotations

import argparse
import concurrent.futures as futures
import json
import multiprocessing
import resource
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from usfmae.data.ingest import IngestConfig, process_file

SOURCE_FPS = 30


def speckle_frames(n: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """(n, H, W) uint8: blurred Rayleigh speckle drifting 2 px per frame, under a depth fall-off."""
    rng = np.random.default_rng(seed)
    field = rng.rayleigh(1.0, (height, width + 2 * n)).astype(np.float32)
    field = cv2.GaussianBlur(field, (0, 0), 1.2)
    gain = np.linspace(1.0, 0.4, height, dtype=np.float32)[:, None]
    frames = np.empty((n, height, width), np.uint8)
    for i in range(n):
        frames[i] = np.clip(field[:, 2 * i:2 * i + width] * gain * 90, 0, 255)
    return frames


def write_mp4(path: Path, frames: np.ndarray) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=SOURCE_FPS)
        stream.height, stream.width = frames.shape[1:]
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23"}
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="gray")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_dicom(path: Path, frames: np.ndarray) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.StudyInstanceUID = "US", generate_uid()
    ds.NumberOfFrames, (ds.Rows, ds.Columns) = len(frames), frames.shape[1:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.FrameTime = 1000 / SOURCE_FPS
    ds.PixelData = frames.tobytes()
    ds.save_as(path, enforce_file_format=True)


def _peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM; unlike ru_maxrss it is not inherited over exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def time_file(root: Path, rel: str, out: Path, n_source: int, repeats: int) -> dict:
    """Best-of-``repeats`` wall time of one file's ingest, and the CPU time (all threads) it used."""
    cv2.setNumThreads(1)
    cfg = IngestConfig(root=str(root), out=str(out), workers=1)
    best, cpu, rows = float("inf"), float("inf"), []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        rows = process_file(str(root), rel, str(out), cfg)["rows"]
        best = min(best, time.perf_counter() - start)
        cpu = min(cpu, time.process_time() - start_cpu)
    written = sum(r["status"] == "ok" for r in rows)
    return {"peak_rss_mb": _peak_rss_mb(), "seconds": round(best, 4), "cpu_seconds": round(cpu, 4),
            "source_frames_per_s": round(n_source / best, 1), "out_frames_per_s": round(len(rows) / best, 1),
            "source_frames_per_cpu_s": round(n_source / cpu, 1), "out_frames_per_cpu_s": round(len(rows) / cpu, 1),
            "frames_sampled": len(rows), "frames_written": written}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--repeats", type=int, default=3, help="best of N timings")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    n = int(args.seconds * SOURCE_FPS)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        (root / "S").mkdir(parents=True)
        frames = speckle_frames(n, args.height, args.width)
        write_mp4(root / "S" / "clip.mp4", frames)
        write_dicom(root / "S" / "cine.dcm", frames)
        del frames
        # Timed in a fresh process so that its peak memory is ingest's, not this script's set-up.
        with futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            video = pool.submit(time_file, root, "S/clip.mp4", Path(tmp) / "out", n, args.repeats).result()
            cine = pool.submit(time_file, root, "S/cine.dcm", Path(tmp) / "out", n, args.repeats).result()
    result = {"bench": "ingest_throughput", "size": f"{args.width}x{args.height}", "source_fps": SOURCE_FPS,
              "sample_fps": 3.0, "source_frames": n}
    result.update({f"video_{k}": v for k, v in video.items()})
    result.update({f"dicom_{k}": v for k, v in cine.items()})
    result["ingest_peak_rss_mb"] = max(result.pop("video_peak_rss_mb"), result.pop("dicom_peak_rss_mb"))
    result["note"] = ("one worker process; PyAV decoder threads AUTO, so *_per_cpu_s (CPU time of all threads) "
                      "is the per-core figure")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
