"""The special token ids of the tiny models and the synthetic catalogs."""

from __future__ import annotations

PAD = 0
BOS = 1
EOS = 2
FIRST_TOKEN = 3  # the first id of an ordinary token: paths never hold PAD, BOS or EOS inside
