"""What it takes to go big, kept apart from the method: ``musecl.scaling.bench`` (``musecl bench``)
measures how fast each piece runs and how it grows with the number of regions;
``musecl.scaling.distributed`` trains the image encoders in the several processes ``torchrun``
starts (``musecl train-encoders``); ``musecl.scaling.shards`` keeps images that do not fit in memory
on disk (run setting ``image_store: shards``).

The core library (the method, its stages, the evaluation) never imports this package; a test
(``tests/test_import_graph.py``) keeps it so. The core asks its few questions of the processes it
trains with through :func:`musecl.training.processes` (one process unless
``musecl.scaling.distributed`` joined torchrun's), and finds the shards store by its entry point
(``musecl.methods.multisemantic.image_store_plugin``).
"""
