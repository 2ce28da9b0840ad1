"""Deployment: export a trained classifier to a self-contained ONNX bundle, then serve it without torch.

- ``fenlei.deploy.export``    (needs torch): checkpoint -> bundle (fp32 + INT8 ONNX, tokenizer, labels, calibration,
  metadata), gated on parity with the torch model.
- ``fenlei.deploy.merge``     (needs torch): a LoRA generative classifier -> a merged Hugging Face causal LM.
- ``fenlei.serving.predictor`` (torch-free): :class:`BundlePredictor`, onnxruntime + tokenizers + NumPy.
- ``fenlei.serving.infer``     (torch-free): batch inference over JSONL/CSV files.
- ``fenlei.serving.serve``     (torch-free): FastAPI service.

Nothing is imported here so that ``import fenlei.serving.predictor`` stays cheap and never pulls in torch.
"""
