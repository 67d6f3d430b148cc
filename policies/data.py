"""``Data``: one modality's batch as named tensors with padding masks; byte-level text.

Every modality travels as a ``Data``: ``values`` (named tensors, batch first) and ``masks``
(bool, True = a real entry, broadcastable to the value of the same name; a missing mask
means every entry is real). Padding masks ride with the values all the way to the loss,
so padded proprio and action dimensions can be zeroed at the input and dropped from the
loss in one place each.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

# Byte-level text: 256 byte values plus three specials.
BOS, EOS, PAD = 256, 257, 258
VOCAB = 259


@dataclass
class Data:
    values: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def batch(self) -> int:
        return next(iter(self.values.values())).shape[0]

    @property
    def device(self) -> torch.device:
        return next(iter(self.values.values())).device

    def mask(self, name: str) -> torch.Tensor | None:
        return self.masks.get(name)

    def with_values(self, values: dict[str, torch.Tensor]) -> "Data":
        return Data(values, self.masks)

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "Data":
        """Apply ``fn`` to every tensor, masks included (for batch-axis reshapes and selection)."""
        return Data({k: fn(v) for k, v in self.values.items()}, {k: fn(m) for k, m in self.masks.items()})

    def repeat(self, n: int) -> "Data":
        """Each batch row repeated n times in place (b0, b0, ..., b1, ...), like ``KVCache.expand``."""
        return self if n == 1 else self.map(lambda t: t.repeat_interleave(n, dim=0))

    def to(self, device: torch.device | str) -> "Data":
        return self.map(lambda t: t.to(device))

    def zeroed(self) -> "Data":
        """Values multiplied by their masks: padded entries carry exactly zero."""
        return self.with_values({k: masked(v, self.masks.get(k)) for k, v in self.values.items()})


def masked(value: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Padded entries set to exactly zero (``where``, not a product: NaN in padding stays out)."""
    return value if mask is None else torch.where(mask, value, torch.zeros((), dtype=value.dtype, device=value.device))


def encode_text(texts: Sequence[str], max_len: int, device: torch.device | str = "cpu") -> Data:
    """Strings -> ``Data(values={"ids": (B, n)}, masks={"ids": (B, n)})``: BOS, UTF-8 bytes, EOS.

    Longer texts are cut to ``max_len`` tokens (EOS kept). The batch is padded to its
    longest text, not to ``max_len``, so short instructions stay cheap.
    """
    # A rollout batch repeats one instruction per env: encode each distinct text once.
    encoded = {text: _encode(str(text), max_len) for text in dict.fromkeys(texts)}
    n = max(len(r) for r in encoded.values())
    ids = np.full((len(texts), n), PAD, dtype=np.int64)
    for i, text in enumerate(texts):
        row = encoded[text]
        ids[i, : len(row)] = row
    ids = torch.from_numpy(ids).to(device)
    return Data({"ids": ids}, {"ids": ids != PAD})


def _encode(text: str, max_len: int) -> np.ndarray:
    return np.array([BOS, *text.encode("utf-8")[: max_len - 2], EOS], dtype=np.int64)


def decode_text(ids: torch.Tensor) -> list[str]:
    """(B, n) token ids -> strings, reading bytes up to the first EOS/PAD (BOS skipped)."""
    out = []
    for row in ids.tolist():
        data = bytearray()
        for tok in row:
            if tok == BOS:
                continue
            if tok in (EOS, PAD):
                break
            data.append(tok)
        out.append(data.decode("utf-8", errors="replace"))
    return out
