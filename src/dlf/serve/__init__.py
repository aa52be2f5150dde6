"""dlf.serve: model bundles, batch scoring, ONNX export and the HTTP scoring server.

    dlf export RUN --out BUNDLE [--format onnx]     dlf.serve.bundle.export_bundle
    dlf predict BUNDLE --input F --output F         dlf.serve.predict.predict_file
    dlf evaluate BUNDLE --input F                   dlf.serve.evaluate.evaluate_file
    dlf serve BUNDLE --port P                       dlf.serve.server.create_app / serve

FastAPI, uvicorn and ONNX Runtime (the `[serve]` extra) are imported only where used, and
dlf.serve.bundle (PyArrow) on first use of the names below: the CLI registers the serve
commands without it.
"""
import importlib

__all__ = ["BUNDLE_FORMAT_VERSION", "Bundle", "BundleError", "export_bundle", "load_bundle"]


def __getattr__(name: str):
    if name not in __all__:
        raise AttributeError(f"module 'dlf.serve' has no attribute {name!r}")
    return getattr(importlib.import_module("dlf.serve.bundle"), name)
