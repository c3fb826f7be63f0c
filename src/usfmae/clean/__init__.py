"""Annotation removal: the paper's method, the scan-aware method, OCR."""
