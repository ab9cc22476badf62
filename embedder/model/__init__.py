"""The model layer: what a sentence-transformers model is made of and how inputs become its token
ids. Loading (``load.py``) picks between reading the model's files alone (``files.py``, no torch)
and sentence-transformers (``st_loader.py``); the module and pooling rules both follow are stated
once (``pipeline.py``, ``pooling.py``). This layer imports neither the core nor HTTP."""
