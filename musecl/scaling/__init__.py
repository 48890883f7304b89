"""What it takes to go big, kept apart from the method: ``musecl.scaling.bench`` (``musecl bench``)
measures how fast each piece runs and how it grows with the number of regions.

The core library (the method, its stages, the evaluation) never imports this package; a test
(``tests/test_import_graph.py``) keeps it so. Still in the core: the image store's on-disk shards
(``musecl.encoders.shards``, one of ``ImageStore``'s two backends) and the one-process fallbacks of
``musecl.distributed`` that the Trainer and the cache call unconditionally.
"""
