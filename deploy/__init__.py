"""Deployment: export a trained classifier to a self-contained ONNX bundle, then serve it without torch.

- ``deploy.export``    (needs torch): checkpoint -> bundle (fp32 + INT8 ONNX, tokenizer, labels, calibration,
  metadata), gated on parity with the torch model.
- ``deploy.predictor`` (torch-free): :class:`BundlePredictor`, onnxruntime + tokenizers + NumPy.
- ``deploy.infer``     (torch-free): batch inference over JSONL/CSV files.
- ``deploy.serve``     (torch-free): FastAPI service.

Nothing is imported here so that ``import deploy.predictor`` stays cheap and never pulls in torch.
"""
