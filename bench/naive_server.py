"""The baseline for ``bench_serve.py``: an image classifier served the way tutorials write it.

One forward pass per request, inline in the route: PIL opens the upload, converts it to grey,
resizes it to 28×28, numpy → torch, normalise, ``with torch.no_grad(): model(x)``, softmax, and
the top label with every class's probability back as JSON. Nothing is crippled: torch keeps its
default thread count and the model is the same checkpoint, in eval mode, that trainlab serves
(loaded with ``load_checkpoint(...).build_model()``; the point here is the request path).

Users write the route both ways, so there are two apps:

* ``app``:      ``async def predict`` — runs on the event loop (blocks it while the model runs);
* ``app_sync``: ``def predict`` — FastAPI runs it in its thread pool (40 threads by default).

Run like a user does (the checkpoint folder comes from the environment)::

    NAIVE_CHECKPOINT=runs/k1/checkpoint python -m uvicorn naive_server:app --app-dir bench --port 8001
"""

from __future__ import annotations

import io
import os

import numpy as np
import torch
from fastapi import FastAPI, File, UploadFile
from PIL import Image

from trainlab.runs.checkpoint import load_checkpoint

checkpoint = load_checkpoint(os.environ["NAIVE_CHECKPOINT"])
model = checkpoint.build_model("cpu").eval()
classes = list(checkpoint.class_names)
MEAN = checkpoint.preprocessing["mean"][0]  # tutorials hard-code 0.1307 / 0.3081 for MNIST
STD = checkpoint.preprocessing["std"][0]


def classify(data: bytes) -> dict:
    image = Image.open(io.BytesIO(data)).convert("L").resize((28, 28))
    array = np.array(image, dtype=np.float32) / 255.0
    x = torch.tensor((array - MEAN) / STD).unsqueeze(0).unsqueeze(0)
    with torch.no_grad():
        probabilities = torch.softmax(model(x), dim=1)[0]
    top = int(probabilities.argmax())
    return {
        "label": classes[top],
        "confidence": float(probabilities[top]),
        "probabilities": dict(zip(classes, probabilities.tolist(), strict=True)),
    }


app = FastAPI()


@app.post("/predict")
async def predict(file: UploadFile = File(...)):  # noqa: B008 (the tutorial form)
    return classify(await file.read())


app_sync = FastAPI()


@app_sync.post("/predict")
def predict_sync(file: UploadFile = File(...)):  # noqa: B008
    return classify(file.file.read())
