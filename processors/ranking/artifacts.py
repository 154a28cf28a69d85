"""TF-free constants and helpers shared by the exporter and the device runtime."""

from __future__ import annotations

import hashlib

SIGNATURE_KEY = "serving_default"
OUTPUT_NAME = "predictions"
FLOAT_KIND = "tflite_float32"
QUANT_KIND = "tflite_dynamic_range"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
