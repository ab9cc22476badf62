"""The HTTP layer: the Flask app (``app.py``), its routes, the request and response models
(``schemas.py``), validation, the one error table, the OpenAPI document and the docs page. The
only layer that knows text-embeddings-inference's and OpenAI's names and shapes."""
