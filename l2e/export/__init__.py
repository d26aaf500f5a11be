"""Writing a trained model for other software: the ``final/`` folder that transformers, sentence-transformers and
serving engines load (``final``), l2e's own sentence-transformers modules (``st_modules``), ONNX export and its
runtime model (``onnx_export``) and the model card (``model_card``). A new export target gets a module here and a
parity test that loads it and compares its vectors with l2e's Embedder."""
