"""dlf.serve: model bundles, batch scoring, ONNX export and the HTTP scoring server.

    dlf export RUN --out BUNDLE [--format onnx]     dlf.serve.bundle.export_bundle
    dlf predict BUNDLE --input F --output F         dlf.serve.predict.predict_file
    dlf serve BUNDLE --port P                       dlf.serve.server.create_app / serve

FastAPI, uvicorn and ONNX Runtime (the `[serve]` extra) are imported only where used.
"""
from dlf.serve.bundle import BUNDLE_FORMAT_VERSION, Bundle, BundleError, export_bundle, load_bundle

__all__ = ["BUNDLE_FORMAT_VERSION", "Bundle", "BundleError", "export_bundle", "load_bundle"]
