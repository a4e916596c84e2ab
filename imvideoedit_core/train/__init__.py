"""Training: the adapter trainer, keyframe tuning, image-pair datasets (reading and writing)."""
