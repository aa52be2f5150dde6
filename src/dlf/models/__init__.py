"""Models: importing this package registers every model."""
from dlf.models import (  # noqa: F401  (registration side effects)
    autoint, dcn, dcnv2, deepfm, dlf, dnn, finalmlp, finalnet, fm, gdcn, lr, wukong, xdeepfm,
)
from dlf.models.registry import available_models, build_model, get_entry, weights_mismatch

__all__ = ["available_models", "build_model", "get_entry", "weights_mismatch"]
