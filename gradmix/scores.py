"""Open-set scores from classifier logits: higher means "more likely known".

Each score maps logits (N, K) to ``(known_score (N,), prediction (N,))``.

* MSP: maximum softmax probability (Hendrycks & Gimpel 2017; the OSR baseline of Neal et al. 2018).
* MLS: maximum logit (Vaze et al., ICLR 2022).
"""
from __future__ import annotations

import numpy as np


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def msp(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = _softmax(np.asarray(logits, dtype=np.float64))
    return p.max(1), p.argmax(1)


def mls(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    z = np.asarray(logits, dtype=np.float64)
    return z.max(1), z.argmax(1)


SCORES = {"msp": msp, "mls": mls}
