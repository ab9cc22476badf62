"""The core: one worker's embedding service (``service.py``), its batching thread and pass planning
(``batching.py``, ``batch_plan.py``) and the errors it raises in its own terms (``errors.py``).
It knows nothing of HTTP: no flask, werkzeug, pydantic or either API's shapes
(``tests/fast/test_layers.py`` holds it to that)."""
