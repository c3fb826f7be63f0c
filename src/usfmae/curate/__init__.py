"""Curation: sources, readers (image, DICOM, video, volume), ingest, hashing, leakage audit."""
