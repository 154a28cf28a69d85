"""A GRU4Rec-style sequential baseline in TensorFlow (Hidasi et al. 2016, full softmax).

Embedding -> dropout -> GRU -> dense over the catalogue; trained on windows of the fit
sessions (next event at every step, cross-entropy over the whole catalogue, Adam), early
stopped on the validation slice's NDCG@10 (the bench's own protocol, patience ``patience``
epochs once ``MIN_EPOCHS`` have run, at most ``max_epochs``); the test model is retrained on the test fit data for the
best epoch count found on validation.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from bench.quality.protocol import Prefix, Slice, evaluate

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
MAX_LEN = 20
# Tuning results and fitted test weights are cached by data signature and parameters, so that the
# sequential model can be trained in its own process (``python -m bench.quality.sequential``) while
# the bench runs the other methods; the bench then reads the test slice with the cached model.
CACHE = Path(os.environ.get("VITRINA_BENCH_CACHE", "/tmp/vitrina-bench-cache"))
WAIT_S = 45 * 60
MIN_EPOCHS = 10  # early stopping (patience epochs without a better validation NDCG@10) starts counting after these


def signature(data: Slice, extra: object = "") -> str:
    text = json.dumps([data.name, len(data.fit), data.n_items, data.cut_ms, data.catalogue[:50], extra], default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _wait_for(path: Path, lock: Path) -> bool:
    began = time.time()
    while lock.exists() and not path.exists() and time.time() - began < WAIT_S:
        time.sleep(10)
    return path.exists()


def _tf():
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(int(os.environ.get("H17_TF_THREADS", "1")))
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass
    return tf


def windows(data: Slice, max_len: int = MAX_LEN) -> tuple[np.ndarray, np.ndarray]:
    """Left-padded (input, next) windows of catalogue index + 1 (0 = padding)."""
    xs, ys = [], []
    for session in data.fit:
        seq = [data.index[item] + 1 for item in session.items]
        for end in range(len(seq), 1, -max_len):
            chunk = seq[max(0, end - max_len - 1):end]
            x, y = chunk[:-1], chunk[1:]
            pad = max_len - len(x)
            xs.append([0] * pad + x)
            ys.append([0] * pad + y)
    return np.array(xs, dtype=np.int32), np.array(ys, dtype=np.int32)


class GRU4Rec:
    def __init__(self, data: Slice, hidden: int = 100, dropout: float = 0.25, lr: float = 2e-3,
                 batch: int = 128, seed: int = 17) -> None:
        tf = _tf()
        tf.keras.utils.set_random_seed(seed)
        self.tf = tf
        self.n_items = data.n_items
        self.batch = batch
        self.x, self.y = windows(data)
        self.embedding = tf.keras.layers.Embedding(self.n_items + 1, hidden, mask_zero=True)
        self.gru = tf.keras.layers.GRU(hidden, return_sequences=True)
        self.drop = tf.keras.layers.Dropout(dropout)
        self.out = tf.keras.layers.Dense(self.n_items + 1)
        self.optimizer = tf.keras.optimizers.Adam(lr)
        self.rng = np.random.default_rng(seed)
        self.dropout = dropout

        def hidden_states(x, training):
            h = self.embedding(x)
            h = self.drop(h, training=training)
            return self.gru(h, mask=self.embedding.compute_mask(x), training=training)

        @tf.function(reduce_retracing=True)
        def train_step(x, y):
            with tf.GradientTape() as tape:
                h = hidden_states(x, True)
                valid = y > 0
                h = self.drop(tf.boolean_mask(h, valid), training=True)  # only the real steps hit the softmax
                logits = self.out(h)
                loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(tf.boolean_mask(y, valid), logits))
            variables = (self.embedding.trainable_variables + self.gru.trainable_variables
                         + self.out.trainable_variables)
            self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
            return loss

        @tf.function(reduce_retracing=True)
        def predict(x):
            return self.out(hidden_states(x, False)[:, -1, :])

        self._train_step, self._predict = train_step, predict

    def epoch(self) -> float:
        order = self.rng.permutation(len(self.x))
        losses = []
        for start in range(0, len(order), self.batch):
            pick = order[start:start + self.batch]
            losses.append(float(self._train_step(self.x[pick], self.y[pick])))
        return float(np.mean(losses))

    def scores(self, prefixes: Sequence[Prefix]) -> np.ndarray:
        x = np.zeros((len(prefixes), MAX_LEN), dtype=np.int32)
        empty = []
        for row, prefix in enumerate(prefixes):
            seq = [i + 1 for i in prefix.seq[-MAX_LEN:]]
            if not seq:
                empty.append(row)
                continue
            x[row, MAX_LEN - len(seq):] = seq
        logits = self._predict(x).numpy()[:, 1:]
        if empty:
            logits[empty] = -np.arange(self.n_items, dtype=np.float32)  # nothing known: popularity order
        return logits


def tune(val: Slice, grid: list[dict], max_epochs: int, patience: int, log: Callable[[str], None],
         budget_s: float) -> tuple[dict, float, list[dict]]:
    """Early stopping on validation NDCG@10 for every configuration; returns the best (params incl. epochs)."""
    path = CACHE / f"gru-tune-{signature(val, [grid, max_epochs, patience])}.json"
    lock = path.with_suffix(".lock")
    if _wait_for(path, lock):
        cached = json.loads(path.read_text())
        log(f"  gru4rec: tuning read from {path}")
        return cached["params"], cached["val_ndcg10"], cached["trace"]
    CACHE.mkdir(parents=True, exist_ok=True)
    lock.write_text(str(os.getpid()))
    params, best, trace = _tune(val, grid, max_epochs, patience, log, budget_s)
    path.write_text(json.dumps({"params": params, "val_ndcg10": best, "trace": trace}))
    lock.unlink(missing_ok=True)
    return params, best, trace


def _tune(val: Slice, grid: list[dict], max_epochs: int, patience: int, log: Callable[[str], None],
          budget_s: float) -> tuple[dict, float, list[dict]]:
    best_params, best, trace = {}, -1.0, []
    for params in grid:
        model = GRU4Rec(val, **params)
        began = time.perf_counter()
        top, top_epoch, since = -1.0, 0, 0
        for epoch in range(1, max_epochs + 1):
            loss = model.epoch()
            ndcg = evaluate(model, val)["ndcg10"]
            trace.append({"params": params, "epoch": epoch, "loss": round(loss, 4), "val_ndcg10": round(ndcg, 4)})
            log(f"  gru4rec {params} epoch {epoch}: loss {loss:.4f} val ndcg10 {ndcg:.4f}")
            if ndcg > top + 1e-5:
                top, top_epoch, since = ndcg, epoch, 0
            else:
                since += 1
                if since >= patience and epoch >= MIN_EPOCHS:
                    break
            if time.perf_counter() - began > budget_s:
                log(f"  gru4rec {params}: time budget reached at epoch {epoch}")
                trace[-1]["budget_reached"] = True
                break
        if top > best:
            best, best_params = top, dict(params, epochs=top_epoch)
    return best_params, best, trace


def fit_for_test(test: Slice, params: dict) -> GRU4Rec:
    params = dict(params)
    epochs = params.pop("epochs")
    model = GRU4Rec(test, **params)
    path = CACHE / f"gru-test-{signature(test, [params, epochs])}.npz"
    lock = path.with_suffix(".lock")
    if _wait_for(path, lock):
        weights = np.load(path)
        model._predict(np.zeros((1, MAX_LEN), dtype=np.int32))  # build the layers
        model.embedding.set_weights([weights["e0"]])
        model.gru.set_weights([weights[f"g{i}"] for i in range(len(model.gru.get_weights()))])
        model.out.set_weights([weights["o0"], weights["o1"]])
        return model
    CACHE.mkdir(parents=True, exist_ok=True)
    lock.write_text(str(os.getpid()))
    for _ in range(epochs):
        model.epoch()
    arrays = {"e0": model.embedding.get_weights()[0], "o0": model.out.get_weights()[0], "o1": model.out.get_weights()[1]}
    arrays.update({f"g{i}": w for i, w in enumerate(model.gru.get_weights())})
    np.savez(path, **arrays)
    lock.unlink(missing_ok=True)
    return model


if __name__ == "__main__":  # train the sequential model of one dataset ahead of (or beside) the bench
    import argparse
    import sys

    from bench.coview_quality import DATA, GRU_GRID, load_ratings, sessionize
    from bench.quality.protocol import movielens_slices, rsc_slices

    parser = argparse.ArgumentParser()
    parser.add_argument("dataset", choices=["movielens", "rsc15"])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--budget-s", type=float, default=1500.0)
    args = parser.parse_args()
    if args.dataset == "movielens":
        ratings = load_ratings(DATA)
        ratings.sort(key=lambda r: (r[2], r[0], r[1]))
        val, test, _ = movielens_slices(sessionize(ratings))
    else:
        val, test = rsc_slices()
    say = lambda m: print(m, flush=True)
    best_params, _, _ = tune(val, GRU_GRID, args.epochs, 3, say, args.budget_s)
    say(f"best {best_params}")
    fit_for_test(test, best_params)
    say("test model cached")
    sys.exit(0)
