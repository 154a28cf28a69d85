"""Online training and on-device scoring of the multi-task ranking model (GRF / KION).

Pure core, no Kafka: labels.py joins impressions with playbacks, features.py is the one
feature function shared by the trainer and the device runtime, model.py builds the
Keras MMoE + target-attention model, trainer.py trains it online, export.py writes
checkpoints and verified TFLite artifacts, schedule.py and registry.py hold the
checkpoint and model-lifecycle rules, device.py scores a candidate pool with LiteRT,
gate.py is GRF's choppy-playback gate, synthetic.py a seeded stream for benchmarks;
serving.py (the playoff split and the server-side request), online.py (per-version online
metrics) and cache_pool.py (the device's cache-pool policy) close the serving loop.
TensorFlow is imported only by model.py, trainer.py, export.py and gate.py (device.py
needs only ai-edge-litert and numpy at run time, plus export.py's constants).
"""
