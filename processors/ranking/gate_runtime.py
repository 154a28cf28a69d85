"""The gate model's TF-free half (GRF stage 1): its config, feature encoding, manifest and LiteRT runner.

The trainer side (``gate.py``, TensorFlow) and the device side (``DeviceGate``, LiteRT only) share
``GateConfig`` and ``encode_gate_batch``; the config travels in the gate's manifest so both bucketize
alike. ``replace_choppy``: GRF's rule, a video predicted choppy with probability >= 0.75 is skipped
and replaced from the cached pool.
"""
from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from processors.ranking.artifacts import FLOAT_KIND, SIGNATURE_KEY, sha256_hex
from processors.ranking.errors import ModelIntegrityError, RankingInputError
from processors.ranking.features import bucketize
from processors.ranking.labels import PLAYBACK_EVENT_TYPES, require_time, viewer_key

GATE_KIND = "gate"
GATE_THRESHOLD = 0.75
GATE_OUTPUT = "choppy"
GATE_FEATURES: tuple[str, ...] = (
    "duration_s",
    "size_mb",
    "network_kbps",
    "cached_ratio",
    "device_score",
    "choppy_history",
)


@dataclass(frozen=True)
class GateConfig:
    duration_s_bounds: tuple[float, ...] = (10, 30, 60, 180, 600, 1_800, 3_600, 7_200)
    size_mb_bounds: tuple[float, ...] = (1, 5, 20, 50, 100, 250, 500, 1_000, 2_000)
    network_kbps_bounds: tuple[float, ...] = (300, 700, 1_500, 3_000, 6_000, 12_000, 25_000, 50_000)
    cached_ratio_bounds: tuple[float, ...] = (0.01, 0.1, 0.25, 0.5, 0.75, 0.99)
    device_score_bounds: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8)
    choppy_history_bounds: tuple[float, ...] = (0.01, 0.1, 0.25, 0.5, 0.75)
    device_types: tuple[str, ...] = ("TV", "MOBILE", "TABLET", "WEB", "STB")
    history_len: int = 20
    embedding_dim: int = 4
    hidden_units: tuple[int, ...] = (32, 16)

    @property
    def bounds(self) -> tuple[tuple[float, ...], ...]:
        return (
            self.duration_s_bounds,
            self.size_mb_bounds,
            self.network_kbps_bounds,
            self.cached_ratio_bounds,
            self.device_score_bounds,
            self.choppy_history_bounds,
        )

    def specs(self) -> dict[str, tuple[tuple[int, ...], str]]:
        return {"gate_buckets": ((len(GATE_FEATURES),), "int32"), "device_type": ((), "int32")}

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GateConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise RankingInputError("bad_gate_config", f"unknown keys {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


MAX_OPEN_PLAYS = 16  # per viewer: plays that never stop (an app killed mid-play) do not pile up


def gate_step(state: Mapping[str, Any] | None, event: Mapping[str, Any], *, history_len: int = 20,
              device_scores: Mapping[str, float] | None = None) -> tuple[dict[str, Any], dict[str, Any] | None, bool]:
    """One playback event on one viewer's gate state -> (state, finished sample or None, state changed).

    The state is plain JSON (an engine store keeps it): ``open`` = {play id: {"f": features at START,
    "s": stalled so far}}, ``h`` = the viewer's last ``history_len`` outcomes (1 = stalled). A sample
    ({features..., "label": 0|1}) is finished on STOP/COMPLETE; a play joined mid-way (no START seen)
    is ignored, its START features being unknown."""
    event_type = event.get("event_type")
    if event_type not in PLAYBACK_EVENT_TYPES:
        raise RankingInputError("bad_event_type", f"unknown event_type {event_type!r}", field="event_type")
    require_time(event)
    state = state if state is not None else {"open": {}, "h": []}
    play_id = f"{event.get('session_id')}\x1f{event.get('item_id')}"
    known = (state.get("open") or {}).get(play_id)
    stalled = event_type == "STALL" or (event.get("stall_ms") or 0) > 0
    if (known is None and event_type != "START") or \
            (known is not None and event_type not in ("STOP", "COMPLETE") and (known["s"] or not stalled)):
        return state, None, False  # a heartbeat of a play (most events): nothing to copy or write
    current: dict[str, Any] = {"open": dict(state.get("open") or {}), "h": list(state.get("h") or ())}
    play = current["open"].get(play_id)
    if play is None:
        history = current["h"]
        duration_ms = event.get("duration_ms") or 0
        bitrate = event.get("bitrate_kbps")
        play = {"f": {
            "viewer": viewer_key(event),
            "device_type": event.get("device_type"),
            "duration_s": duration_ms / 1000 if duration_ms else None,
            "size_mb": bitrate * duration_ms / 8_000_000 if bitrate and duration_ms else None,
            "network_kbps": event.get("network_kbps"),
            "cached_ratio": event.get("buffered_ratio"),
            "device_score": (device_scores or {}).get(str(event.get("device_id"))),
            "choppy_history": (sum(history) / len(history)) if history else None,
        }, "s": 0}
        current["open"][play_id] = play
        while len(current["open"]) > MAX_OPEN_PLAYS:
            current["open"].pop(next(iter(current["open"])))  # the oldest open play
    else:
        play = current["open"][play_id] = dict(play)
    if stalled:
        play["s"] = 1
    if event_type in ("STOP", "COMPLETE"):
        del current["open"][play_id]
        current["h"] = (current["h"] + [int(play["s"])])[-history_len:]
        return current, {**play["f"], "label": int(play["s"])}, True
    return current, None, True


@dataclass
class GateSampleBuilder:
    """Incremental playback -> (features at START, stalled?) samples over many viewers, in memory
    (tests, benches; the worker keeps the same per-viewer state in an engine store)."""

    config: GateConfig = field(default_factory=GateConfig)
    device_scores: Mapping[str, float] = field(default_factory=dict)
    _states: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add_playback(self, event: Mapping[str, Any]) -> dict[str, Any] | None:
        """Feed one event; returns a finished sample {features..., "label": 0|1} on STOP/COMPLETE."""
        viewer = viewer_key(event)
        state, sample, changed = gate_step(self._states.get(viewer), event, history_len=self.config.history_len,
                                           device_scores=self.device_scores)
        if changed:
            self._states[viewer] = state
        return sample


def encode_gate_batch(samples: Sequence[Mapping[str, Any]], config: GateConfig) -> dict[str, np.ndarray]:
    buckets = np.asarray(
        [[bucketize(s.get(name), b) for name, b in zip(GATE_FEATURES, config.bounds, strict=False)] for s in samples],
        dtype=np.int32,
    ).reshape(len(samples), len(GATE_FEATURES))
    devices = [s.get("device_type") for s in samples]
    device_ids = np.asarray(
        [1 + config.device_types.index(d) if d in config.device_types else 0 for d in devices], dtype=np.int32
    )
    return {"gate_buckets": buckets, "device_type": device_ids}


def replace_choppy(p_choppy: float, threshold: float = GATE_THRESHOLD) -> bool:
    """GRF: swap the upcoming video for a cached one when the gate says >= 0.75 choppy."""
    return p_choppy >= threshold


def gate_signature(config: GateConfig) -> list[dict[str, Any]]:
    return [{"name": name, "shape": [-1, *shape], "dtype": dtype} for name, (shape, dtype) in config.specs().items()]


class DeviceGate:
    """The published gate run with LiteRT (no TensorFlow): sha256 and signature checked against the
    manifest, ``predict`` = P(choppy) per play context (the ``GateSampleBuilder`` feature dict:
    duration_s, size_mb, network_kbps, cached_ratio, device_score, choppy_history, device_type)."""

    def __init__(self, manifest: Mapping[str, Any], model_bytes: bytes, *, num_threads: int | None = None) -> None:
        if manifest.get("kind") != GATE_KIND:
            raise ModelIntegrityError("not_a_gate", "the manifest does not describe a gate model", field="kind")
        artifact = (manifest.get("artifacts") or {}).get(FLOAT_KIND)
        if not isinstance(artifact, Mapping) or "sha256" not in artifact:
            raise ModelIntegrityError("artifact_not_in_manifest", f"manifest has no {FLOAT_KIND} artifact",
                                      field="artifacts")
        actual = sha256_hex(model_bytes)
        if actual != artifact["sha256"]:
            raise ModelIntegrityError("sha256_mismatch", f"gate bytes hash {actual[:12]}... != manifest "
                                      f"{str(artifact['sha256'])[:12]}...", field="sha256")
        try:
            self.config = GateConfig.from_dict(manifest["gate_config"])
        except (KeyError, TypeError, RankingInputError) as exc:
            raise ModelIntegrityError("bad_manifest", f"gate_config unreadable: {exc}", field="gate_config") from exc
        if manifest.get("input_signature") != gate_signature(self.config):
            raise ModelIntegrityError("signature_mismatch", "manifest signature does not match its gate config")
        self.version = str(manifest.get("version"))
        self.threshold = float(manifest.get("threshold", GATE_THRESHOLD))
        self._lock = threading.Lock()
        from ai_edge_litert.interpreter import Interpreter

        try:
            self._runner = Interpreter(model_content=model_bytes, num_threads=num_threads).get_signature_runner(
                manifest.get("signature_key", SIGNATURE_KEY))
        except (ValueError, RuntimeError) as exc:
            raise ModelIntegrityError("unloadable_model", f"LiteRT cannot load the gate: {exc}") from exc
        details = self._runner.get_input_details()
        for entry in manifest["input_signature"]:
            got = details.get(entry["name"])
            if got is None or [int(d) for d in got["shape_signature"]] != entry["shape"]:
                raise ModelIntegrityError("signature_mismatch", f"gate input {entry['name']} differs from the manifest",
                                          field=entry["name"])

    def predict(self, plays: Sequence[Mapping[str, Any]]) -> np.ndarray:
        if not plays:
            return np.zeros(0, np.float32)
        inputs = encode_gate_batch(plays, self.config)
        with self._lock:
            return np.asarray(self._runner(**inputs)[GATE_OUTPUT]).reshape(-1)

    def choppy(self, plays: Sequence[Mapping[str, Any]]) -> list[bool]:
        return [replace_choppy(float(p), self.threshold) for p in self.predict(plays)]


@dataclass(frozen=True)
class NextPlay:
    item_id: str | None
    from_pool: bool
    skipped: tuple[str, ...]  # candidates passed over as predicted choppy
    p_choppy: dict[str, float]


def pick_next(ranked: Sequence[str], p_choppy: Mapping[str, float], pool_ranked: Sequence[str],
              threshold: float = GATE_THRESHOLD) -> NextPlay:
    """GRF's device rule: play the best-ranked candidate unless the gate predicts it choppy (>= 0.75);
    a choppy one is skipped and replaced by the best-ranked title of the cached pool (a cached file
    cannot stall). With no usable pool entry the next candidate the gate lets through plays; when the
    gate flags every candidate, the best-ranked one plays anyway (something must)."""
    if not ranked:
        return NextPlay(pool_ranked[0] if pool_ranked else None, bool(pool_ranked), (), dict(p_choppy))
    top = ranked[0]
    if not replace_choppy(p_choppy.get(top, 0.0), threshold):
        return NextPlay(top, False, (), dict(p_choppy))
    cached = next((i for i in pool_ranked if i != top), None)
    if cached is not None:
        return NextPlay(cached, True, (top,), dict(p_choppy))
    skipped = []
    for item in ranked:
        if not replace_choppy(p_choppy.get(item, 0.0), threshold):
            return NextPlay(item, False, tuple(skipped), dict(p_choppy))
        skipped.append(item)
    return NextPlay(top, False, (), dict(p_choppy))


def play_context(candidate: Mapping[str, Any], context: Mapping[str, Any], device_type: str | None) -> dict[str, Any]:
    """The gate's features for playing ``candidate`` now (as ``GateSampleBuilder`` sees a START):
    its duration and size (bitrate x duration), the network, the cached share, the device score and
    the viewer's choppy history from ``context``."""
    duration_ms = candidate.get("item_duration_ms") or 0
    bitrate = candidate.get("bitrate_kbps") or context.get("bitrate_kbps")
    return {
        "device_type": device_type,
        "duration_s": duration_ms / 1000 if duration_ms else None,
        "size_mb": bitrate * duration_ms / 8_000_000 if bitrate and duration_ms else None,
        "network_kbps": context.get("network_kbps"),
        "cached_ratio": candidate.get("cached_ratio", context.get("cached_ratio")),
        "device_score": context.get("device_score"),
        "choppy_history": context.get("choppy_history"),
    }
