"""Phantom: the B-mode simulator with screen overlays and exact ground truth (clean image, overlay and lesion masks)."""
