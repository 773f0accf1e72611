"""Serving what training saved: loading `.keras` models, SavedModel/ONNX export and prediction."""
