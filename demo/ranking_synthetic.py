"""Seeded synthetic stream of ranking impressions + playback events with a hidden truth.

Used by the benchmark (and tests) because the real KuaiRand sample has 200 rows. The
hidden engagement of a (user, item, context) is

    e = 0.9 * long-term affinity (user x item latent vectors)
      + 1.0 * short-term affinity (item vs the user's recent watched list, which follows
              a drifting "mood" cluster)
      + 0.6 * item quality + device x duration fit (TV likes films, phones like clips)
      + evening bonus + noise,

and playback quality matters: a slow network, low cached ratio or weak device makes a
choppy start (STALL events) and an abandon within 3 s likely (GRF's motivation).

The server's pxtr sees only a noisy long-term affinity, a noisy item quality and the
item duration - not the recent list, the network, the device or the hour. So a model
that reads those features can beat pxtr, but only by learning them from the stream.
Events follow the contracts in PREAMBLE.md (plain dicts, aware UTC datetimes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

import numpy as np

DEVICE_TYPES = ("TV", "MOBILE", "TABLET", "WEB", "STB")
SURFACES = ("HOME", "WATCH_ALSO", "AUTOPLAY", "FEED", "SEARCH")


@dataclass(frozen=True)
class SyntheticConfig:
    seed: int = 42
    users: int = 3_000
    items: int = 2_000
    clusters: int = 12
    latent_dim: int = 8
    requests: int = 30_000
    impressions_per_request: int = 8
    days: float = 7.0
    start: datetime = datetime(2024, 3, 1, tzinfo=timezone.utc)
    heartbeat_s: int = 300
    recent_len: int = 20
    server_noise: float = 0.5
    guest_share: float = 0.1


@dataclass
class SyntheticStream:
    impressions: list[dict[str, Any]] = field(default_factory=list)
    playbacks: list[dict[str, Any]] = field(default_factory=list)

    def events(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Impressions and playback events merged in event-time order."""
        merged = [(e["event_time"], 0, "impression", e) for e in self.impressions]
        merged += [(e["event_time"], 1, "playback", e) for e in self.playbacks]
        merged.sort(key=lambda x: (x[0], x[1]))
        for _, _, kind, event in merged:
            yield kind, event


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _sigmoid_np(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


_SURFACE_CDF = np.cumsum([0.4, 0.2, 0.1, 0.2, 0.1])


class _World:
    def __init__(self, cfg: SyntheticConfig, rng: np.random.Generator) -> None:
        self.cfg = cfg
        centers = rng.normal(size=(cfg.clusters, cfg.latent_dim))
        centers /= np.linalg.norm(centers, axis=1, keepdims=True)
        self.item_cluster = rng.integers(0, cfg.clusters, cfg.items)
        vec = centers[self.item_cluster] + 0.35 * rng.normal(size=(cfg.items, cfg.latent_dim))
        self.item_vec = vec / np.linalg.norm(vec, axis=1, keepdims=True)
        self.item_quality = rng.normal(0.0, 0.7, cfg.items)
        is_film = rng.random(cfg.items) < 0.45
        self.item_is_film = is_film
        self.item_duration_ms = np.where(
            is_film,
            rng.integers(20 * 60_000, 130 * 60_000, cfg.items),
            np.clip(rng.lognormal(math.log(45_000), 0.7, cfg.items), 8_000, 600_000).astype(np.int64),
        )
        popularity = 1.0 / np.arange(1, cfg.items + 1) ** 0.8
        self.item_popularity = popularity[rng.permutation(cfg.items)]
        self.item_popularity /= self.item_popularity.sum()
        self.popularity_cdf = np.cumsum(self.item_popularity)
        self.cluster_items = [np.flatnonzero(self.item_cluster == c) for c in range(cfg.clusters)]
        # users: 1-2 favourite clusters, a device, a network profile, a current mood
        self.user_clusters = [
            rng.choice(cfg.clusters, size=int(rng.integers(1, 3)), replace=False) for _ in range(cfg.users)
        ]
        uvec = np.stack([centers[c].mean(axis=0) for c in self.user_clusters]) + 0.5 * rng.normal(
            size=(cfg.users, cfg.latent_dim)
        )
        self.user_vec = uvec / np.linalg.norm(uvec, axis=1, keepdims=True)
        self.user_device = rng.choice(len(DEVICE_TYPES), cfg.users, p=[0.3, 0.4, 0.1, 0.1, 0.1])
        self.user_net_mu = rng.normal(math.log(5_000), 1.0, cfg.users)
        self.user_device_score = np.clip(rng.beta(4, 2, cfg.users), 0.02, 0.99)
        activity = 1.0 / np.arange(1, cfg.users + 1) ** 0.7
        self.user_activity = activity / activity.sum()
        self.user_guest = rng.random(cfg.users) < cfg.guest_share
        self.user_mood = rng.integers(0, cfg.clusters, cfg.users)
        self.recent: list[list[int]] = []
        for u in range(cfg.users):
            n = int(rng.integers(0, cfg.recent_len + 1))
            self.recent.append([int(rng.choice(self.cluster_items[self.user_mood[u]])) for _ in range(n)])

    def short_term(self, user: int, item: int) -> float:
        recent = self.recent[user][:10]
        if not recent:
            return 0.0
        return float(np.max(self.item_vec[recent] @ self.item_vec[item]))


def generate(cfg: SyntheticConfig | None = None) -> SyntheticStream:
    cfg = cfg or SyntheticConfig()
    rng = np.random.default_rng(cfg.seed)
    world = _World(cfg, rng)
    stream = SyntheticStream()
    span_s = cfg.days * 86_400
    # request times with a daily cycle (evening peak)
    offsets = np.sort(rng.random(cfg.requests * 3) * span_s)
    hours = (offsets / 3600.0) % 24
    distance = np.minimum(np.abs(hours - 20.5), 24 - np.abs(hours - 20.5))
    keep = rng.random(offsets.size) < 0.35 + 0.65 * np.exp(-(distance**2) / 18.0)
    offsets = offsets[keep][: cfg.requests]
    users = rng.choice(cfg.users, offsets.size, p=world.user_activity)
    for req_no, (offset, user) in enumerate(zip(offsets, users, strict=False)):
        _one_request(cfg, rng, world, stream, req_no, float(offset), int(user))
    stream.impressions.sort(key=lambda e: e["event_time"])
    stream.playbacks.sort(key=lambda e: e["event_time"])
    return stream


def _candidates(cfg: SyntheticConfig, rng: np.random.Generator, world: _World, user: int) -> np.ndarray:
    k = cfg.impressions_per_request
    kinds = rng.random(2 * k)
    draws = np.empty(2 * k, dtype=np.int64)
    popular = kinds < 0.4
    draws[popular] = np.minimum(np.searchsorted(world.popularity_cdf, rng.random(int(popular.sum()))), cfg.items - 1)
    favourite = world.user_clusters[user]
    for i in np.flatnonzero(~popular):
        if kinds[i] < 0.7:
            pool = world.cluster_items[int(favourite[int(rng.integers(favourite.size))])]
        elif kinds[i] < 0.85:
            pool = world.cluster_items[int(world.user_mood[user])]
        else:
            pool = None
        draws[i] = int(rng.integers(cfg.items)) if pool is None else int(pool[int(rng.integers(pool.size))])
    _, first = np.unique(draws, return_index=True)
    unique = draws[np.sort(first)]
    while unique.size < k:
        extra = int(rng.integers(cfg.items))
        if extra not in unique:
            unique = np.append(unique, extra)
    return unique[:k]


def _one_request(
    cfg: SyntheticConfig,
    rng: np.random.Generator,
    world: _World,
    stream: SyntheticStream,
    req_no: int,
    offset: float,
    user: int,
) -> None:
    shown_at = cfg.start + timedelta(seconds=offset)
    hour = shown_at.hour
    device = DEVICE_TYPES[world.user_device[user]]
    big_screen = device in ("TV", "STB")
    surface = SURFACES[int(np.searchsorted(_SURFACE_CDF, rng.random()))]
    network_kbps = int(np.clip(rng.lognormal(world.user_net_mu[user], 0.6), 80, 100_000))
    device_score = float(world.user_device_score[user])
    user_id = None if world.user_guest[user] else f"u{user}"
    device_id = f"d{user}"
    if rng.random() < 0.05:
        world.user_mood[user] = int(rng.integers(cfg.clusters))  # interest drift
    recent = world.recent[user]
    recent_ids = [f"i{j}" for j in recent]
    items = _candidates(cfg, rng, world, user)
    k = items.size
    duration = world.item_duration_ms[items]
    film = world.item_is_film[items]
    cached_ratio = np.clip(rng.beta(1.2, 3.0, k), 0.0, 1.0)
    long_term = (world.item_vec[items] @ world.user_vec[user]) * 2.0
    if recent:
        short_term = (world.item_vec[recent[:10]] @ world.item_vec[items].T).max(axis=0) * 2.0 - 1.0
    else:
        short_term = np.zeros(k)
    quality = world.item_quality[items]
    fit = np.where(film, 0.6, -0.3) if big_screen else np.where(film, -0.5, 0.3)
    engagement = 0.9 * long_term + 1.0 * short_term + 0.6 * quality + fit + (0.3 if 19 <= hour <= 23 else 0.0)
    choppy_logit = (
        -1.4 * (math.log(network_kbps) - math.log(3_000)) - 2.5 * cached_ratio - 2.0 * (device_score - 0.5) + 0.2
    )
    # the server: noisy long-term affinity and quality, knows the duration, nothing else
    server = 0.9 * (long_term + rng.normal(0, cfg.server_noise, k)) + 0.6 * (
        quality + rng.normal(0, cfg.server_noise * 0.5, k)
    )
    pxtr_evr = _sigmoid_np(server - 1.2)
    pxtr_lvr = _sigmoid_np(server - 2.0 + np.where(film, 0.0, 0.5))
    # svr is an impression-level label (played, then quit < 3 s): P(play) x P(quit | play)
    pxtr_svr = _sigmoid_np(0.8 * server - 1.6) * _sigmoid_np(-1.0 - 0.6 * server)
    pxtr_fpr = _sigmoid_np(server - 2.6 + np.where(film, -1.2, 0.8))
    p_play = _sigmoid_np(-1.6 + 0.8 * engagement - 0.15 * np.arange(k) + (0.8 if surface == "AUTOPLAY" else 0.0))
    play_roll = rng.random(k)
    choppy = rng.random(k) < _sigmoid_np(choppy_logit)
    quit_roll = rng.random(k)
    fraction = _sigmoid_np(1.1 * engagement - np.where(film, 0.9, -0.2) + rng.normal(0, 0.9, k))
    cursor = shown_at + timedelta(seconds=1)
    window_end = shown_at + timedelta(minutes=25)
    plays = 0
    context_base = {"network_kbps": network_kbps, "device_score": device_score, "hour_of_day": hour}
    for position in range(k):
        impression_id = f"r{req_no}-{position}"
        item_id = f"i{int(items[position])}"
        stream.impressions.append(
            {
                "impression_id": impression_id,
                "request_id": f"r{req_no}",
                "user_id": user_id,
                "device_id": device_id,
                "device_type": device,
                "item_id": item_id,
                "position": position,
                "surface": surface,
                "recent_watched": recent_ids,
                "pxtr": {
                    "evr": float(pxtr_evr[position]),
                    "lvr": float(pxtr_lvr[position]),
                    "svr": float(pxtr_svr[position]),
                    "fpr": float(pxtr_fpr[position]),
                },
                "context": {
                    **context_base,
                    "cached_ratio": float(cached_ratio[position]),
                    "item_duration_ms": int(duration[position]),
                },
                "labels": None,
                "event_time": shown_at + timedelta(milliseconds=position),
            }
        )
        if plays >= 3 or cursor > window_end or play_roll[position] >= p_play[position]:
            continue
        plays += 1
        quits_early = quit_roll[position] < _sigmoid(-2.0 - 0.8 * float(engagement[position])) + (
            0.65 if choppy[position] else 0.0
        )
        if quits_early:
            watched = int(rng.uniform(200, 2_900))
        else:
            watched = int(int(duration[position]) * min(1.0, float(fraction[position]) * 1.08))
        start = cursor + timedelta(seconds=float(rng.exponential(15.0)) + 1.0)
        end = _emit_play(
            cfg,
            rng,
            stream,
            impression_id,
            user_id,
            device_id,
            device,
            item_id,
            int(duration[position]),
            watched,
            start,
            network_kbps,
            float(cached_ratio[position]),
            bool(choppy[position]),
        )
        cursor = end + timedelta(seconds=float(rng.exponential(10.0)))
        if watched >= 10_000:
            world.recent[user] = ([int(items[position])] + world.recent[user])[: cfg.recent_len]


def _emit_play(
    cfg: SyntheticConfig,
    rng: np.random.Generator,
    stream: SyntheticStream,
    impression_id: str,
    user_id: str | None,
    device_id: str,
    device: str,
    item_id: str,
    duration: int,
    watched: int,
    start: datetime,
    network_kbps: int,
    cached_ratio: float,
    choppy: bool,
) -> datetime:
    session_id = f"s-{impression_id}"
    seq = 0

    def emit(event_type: str, position: int, at: datetime, stall_ms: int = 0) -> None:
        nonlocal seq
        seq += 1
        stream.playbacks.append(
            {
                "event_id": f"{session_id}-{seq}",
                "session_id": session_id,
                "user_id": user_id,
                "device_id": device_id,
                "device_type": device,
                "os": "android" if device == "MOBILE" else "tizen",
                "app_version": "5.2.0",
                "item_id": item_id,
                "event_type": event_type,
                "position_ms": position,
                "duration_ms": duration,
                "network_kbps": network_kbps,
                "buffered_ratio": cached_ratio,
                "stall_ms": stall_ms,
                "bitrate_kbps": min(network_kbps, 8_000),
                "event_time": at,
            }
        )

    emit("START", 0, start)
    clock = start
    stalled_ms = 0
    if choppy:
        stalled_ms = int(rng.uniform(800, 4_000))
        emit("STALL", 0, start + timedelta(milliseconds=stalled_ms), stall_ms=stalled_ms)
        clock = start + timedelta(milliseconds=stalled_ms)
    beat = cfg.heartbeat_s * 1000
    position = 0
    while position + beat < watched:
        position += beat
        emit("HEARTBEAT", position, clock + timedelta(milliseconds=position))
    end_at = clock + timedelta(milliseconds=watched)
    if watched >= duration:
        emit("COMPLETE", duration, end_at)
    else:
        emit("STOP", watched, end_at)
    return end_at
