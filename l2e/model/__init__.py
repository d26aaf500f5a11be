"""The embedding model: ``ModelSettings`` (``settings``: what inference must reproduce, saved as ``l2e_model.json``),
the backbone loader and ``EmbeddingModel`` (``embedding_model``), bidirectional attention, the parameter-free and
trainable poolings, the representation heads, LoRA, arithmetic precision and the tiny random test models. A new
pooling goes in ``pooling.py`` (parameter-free) or ``attention_pooling.py`` (trainable) with ``@register``; a new
head in ``heads.py``; anything that changes the vectors also gets a ``ModelSettings`` field."""
