"""usfmae: ultrasound self-supervised foundation models (USF-MAE), from raw data to evaluation."""

__version__ = "0.1.0"
