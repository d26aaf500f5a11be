"""Using an embedding model: encoding queries and documents (``embedder``: l2e checkpoints, plain Hugging Face,
sentence-transformers and ONNX models), scoring with any representation, BM25 or a fusion (``search``), MTEB
evaluation (``mteb_wrapper``), paired statistics over per-query scores (``stats``) and hard-negative mining
(``mine``). A new scorer goes in ``search.py``, a new evaluation in ``mteb_wrapper.py``, a new mining filter in
``mine.py``."""
