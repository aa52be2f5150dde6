"""dlf: CTR prediction built around DLF (SIGIR 2025)."""
__version__ = "0.1.0"

from dlf.api import train  # noqa: E402
from dlf.config import RunConfig, load_config  # noqa: E402

__all__ = ["train", "load_config", "RunConfig", "__version__"]
