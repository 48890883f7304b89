"""Encoders that turn one modality of a city into region vectors (eq. 5-7): ``image``, CNNs trained
with triplet losses (eq. 5-6); ``heads``, triplet-trained heads on frozen ImageNet features; and
``text``, skip-gram POI vectors (eq. 7). Nothing is imported here, so ``musecl.encoders.text``
does not pay for torch nor ``musecl.encoders.image`` for gensim."""
