"""Data: feature maps, batches, datasets and the built-in synthetic generator."""
from dlf.data.features import OOV_ID, PAD_ID, Batch, FeatureMap, FieldSpec

__all__ = ["Batch", "FeatureMap", "FieldSpec", "PAD_ID", "OOV_ID"]
