"""What it takes to go big, kept apart from the method: ``musecl.scaling.bench`` (``musecl bench``)
measures how fast each piece runs and how it grows with the number of regions;
``musecl.scaling.distributed`` trains the image encoders in the several processes ``torchrun``
starts (``musecl train-encoders``).

The core library (the method, its stages, the evaluation) never imports this package; a test
(``tests/test_import_graph.py``) keeps it so. The core asks its few questions of the processes it
trains with through :func:`musecl.training.processes` (one process unless
``musecl.scaling.distributed`` joined torchrun's). Still in the core: the image store's on-disk
shards (``musecl.encoders.shards``, one of ``ImageStore``'s two backends).
"""
