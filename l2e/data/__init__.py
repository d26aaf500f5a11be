"""Training data from raw rows to batches: reading and validating raw datasets, BEIR folders and tokenized shards
(``read``), tokenization shared by training and inference (``tokens``), the ``tokenize_data.py`` pipeline
(``prepare``) and batch planning and collation (``batching``). A new raw data format or row check goes in
``read.py``, a tokenization rule in ``tokens.py``, a sampling or batching strategy in ``batching.py``."""
