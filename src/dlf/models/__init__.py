"""Models: importing this package registers every model."""
from dlf.models import dlf, lr  # noqa: F401  (registration side effects)
from dlf.models.registry import available_models, build_model, get_entry

__all__ = ["available_models", "build_model", "get_entry"]
