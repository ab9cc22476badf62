"""sentence-transformers' Pooling, stated once: reading its modes from a config or module, and
pooling right-padded token vectors in NumPy the way it does (the onnx backend pools with this)."""

from __future__ import annotations

import numpy as np

from .errors import UnsupportedModel

#: Pooling modes in sentence-transformers' concatenation order (implemented by :func:`pool`), and
#: the legacy boolean config keys that name them.
LEGACY_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
POOLING_MODES = tuple(LEGACY_POOLING_KEYS.values())


def pooling_modes(pooling) -> tuple[str, ...]:
    """The modes, in concatenation order, of a Pooling config (``pooling_mode``: a name or a list;
    else the legacy booleans; else mean), a Pooling module (its ``pooling_mode``), a mode name or a
    sequence of names."""
    if isinstance(pooling, dict):
        mode = pooling.get("pooling_mode")
        if mode is None:
            mode = tuple(m for key, m in LEGACY_POOLING_KEYS.items() if pooling.get(key, False)) or ("mean",)
    else:
        mode = getattr(pooling, "pooling_mode", pooling)
    return (mode,) if isinstance(mode, str) else tuple(mode)


def implemented(modes: tuple[str, ...]) -> tuple[str, ...]:
    """``modes`` if :func:`pool` implements each; UnsupportedModel naming the others."""
    unknown = [m for m in modes if m not in POOLING_MODES]
    if unknown:
        raise UnsupportedModel(f"pooling mode {', '.join(unknown)} is not implemented by the onnx "
                               f"backend (it has {', '.join(POOLING_MODES)}): use EMBEDDER_BACKEND=torch")
    # include_prompt=False needs the prompt's length, which sentence-transformers only passes when it
    # encodes with a prompt itself; the service (torch backend too) pools every token it sends.
    return modes


def pool(hidden: np.ndarray, mask: np.ndarray, modes: tuple[str, ...]) -> np.ndarray:
    """sentence-transformers' Pooling on right-padded token vectors (batch, tokens, dim)."""
    weights = mask.astype(np.float32)[..., None]
    lengths = np.maximum(weights.sum(axis=1), 1e-9)
    rows = np.arange(hidden.shape[0])
    out = []
    for mode in modes:
        if mode == "cls":
            out.append(hidden[rows, mask.argmax(axis=1)])
        elif mode == "mean":
            out.append((hidden * weights).sum(axis=1) / lengths)
        elif mode == "mean_sqrt_len_tokens":
            out.append((hidden * weights).sum(axis=1) / np.sqrt(lengths))
        elif mode == "max":
            out.append(np.where(weights > 0, hidden, -np.inf).max(axis=1))
        elif mode == "weightedmean":
            position = weights * np.arange(1, hidden.shape[1] + 1, dtype=np.float32)[None, :, None]
            out.append((hidden * position).sum(axis=1) / np.maximum(position.sum(axis=1), 1e-9))
        elif mode == "lasttoken":
            out.append(hidden[rows, mask.sum(axis=1) - 1])
        else:  # pooling_modes() lets only the above through
            raise UnsupportedModel(f"pooling mode {mode!r}")
    return np.concatenate(out, axis=1).astype(np.float32, copy=False)
