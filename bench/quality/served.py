"""vitrina's served "similar" lists as a bench method.

The fit views go through the same code the agents run (``CoviewIndex.add_view`` =
``contributions_for_view`` + ``apply_contribution``); each title's list is the served one
(``top_similar`` with K = 50, blended with the metadata list by ``coldstart.blend`` where the
dataset has a catalogue). A prefix is scored from the lists of its last ``context`` titles,
weight 1 / distance (``similarity.aggregate_similar``'s rule); titles outside every list score 0.
With a catalogue the list is put in served order by ``coldstart.arrange`` (series first, children's rule).

``coview_item_model_blend``: before the metadata blend, the co-view list is mixed with the list of a
closed-form item model (EASE on the stream's sessions, ``processors/coview/item_model.py``) fitted at the
cut on the fit sessions (the worker refits it every few minutes on the recent stream,
``streams/agents/coview.py`` ``refit_model``; at the cut the bench's model is as fresh as a refit just before
it), weight ``model_weight`` (``item_model.served_coview`` = ``blend_lists``). ``k`` is the served list's
length (the worker's ``VITRINA_COVIEW_K``): co-view, item-model and metadata lists and the blend are cut at it.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from bench.quality.protocol import Prefix, Slice
from processors.coview.coldstart import MetadataIndex, arrange, blend
from processors.coview.cooccurrence import CoviewConfig
from processors.coview.item_model import ItemModel, ItemModelConfig, blend_lists, fit_item_model
from processors.coview.memory import CoviewIndex
from processors.coview.similarity import SimilarityConfig

K = 50


class IndexCache:
    def __init__(self, views) -> None:
        self.views = views
        self.indexes: dict[CoviewConfig, CoviewIndex] = {}

    def get(self, config: CoviewConfig) -> CoviewIndex:
        index = self.indexes.get(config)
        if index is None:
            if len(self.indexes) >= 4:
                self.indexes.pop(next(iter(self.indexes)))
            index = self.indexes[config] = CoviewIndex(config)
            for view in self.views:
                index.add_view(view)
        return index


class MetaCache:
    """Memoised metadata lists (the catalogue is frozen at the cut)."""

    def __init__(self, metadata: MetadataIndex) -> None:
        self.metadata = metadata
        self.lists: dict[tuple[str, int], list[tuple[str, float]]] = {}

    def similar(self, item: str, k: int = K) -> list[tuple[str, float]]:
        found = self.lists.get((item, k))
        if found is None:
            found = self.lists[(item, k)] = self.metadata.similar(item, k)
        return found


class ModelCache:
    """Item models of the fit sessions by config (the stream's sessions before the cut)."""

    def __init__(self, data: Slice) -> None:
        self.sessions = [s.items for s in data.fit]
        self.cut_ms = data.cut_ms
        self.models: dict[ItemModelConfig, ItemModel] = {}

    def get(self, config: ItemModelConfig) -> ItemModel:
        model = self.models.get(config)
        if model is None:
            if len(self.models) >= 3:
                self.models.pop(next(iter(self.models)))
            model = self.models[config] = fit_item_model(self.sessions, config, self.cut_ms)
        return model


class Served:
    def __init__(self, data: Slice, index: CoviewIndex, similarity: SimilarityConfig, context: int,
                 metadata: MetaCache | None = None, prior: float | None = None,
                 list_fn=None, series_slots: int = 0, kids_share: float = 0.0,
                 item_model: ItemModel | None = None, model_weight: float = 0.0, k: int = K) -> None:
        self.data = data
        self.index = index
        self.similarity = similarity
        self.context = context
        self.metadata = metadata
        self.prior = prior
        self.list_fn = list_fn  # optional override: item -> served list
        self.series_slots = series_slots
        self.kids_share = kids_share
        self.item_model = item_model
        self.model_weight = model_weight
        self.k = k  # served list length (the worker's VITRINA_COVIEW_K)
        self.lists: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def served_list(self, item: str) -> list[tuple[str, float]]:
        if self.list_fn is not None:
            return self.list_fn(item)
        now = self.data.cut_ms
        coview = self.index.similar(item, now, self.similarity)
        if self.item_model is not None and self.model_weight > 0.0:
            coview = blend_lists(coview, self.item_model.similar(item, self.k), self.model_weight, self.k)
        if self.metadata is None or self.prior is None:
            return coview
        meta = self.metadata.similar(item, self.k)
        items = blend(coview, meta, self.index.count(item, now), self.prior, self.k)[0]
        return arrange(item, items, self.metadata.metadata, meta, self.k, self.series_slots, self.kids_share)

    def _list(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        found = self.lists.get(i)
        if found is None:
            index = self.data.index
            pairs = [(index[o], s) for o, s in self.served_list(self.data.catalogue[i]) if o in index]
            found = self.lists[i] = (np.array([p[0] for p in pairs], dtype=np.int64),
                                     np.array([p[1] for p in pairs], dtype=np.float64))
        return found

    def scores(self, prefixes: Sequence[Prefix]) -> np.ndarray:
        out = np.zeros((len(prefixes), self.data.n_items), dtype=np.float64)
        for row, prefix in enumerate(prefixes):
            for item, distance in prefix.recent:
                if distance > self.context:
                    break
                ids, values = self._list(item)
                if ids.size:
                    np.add.at(out[row], ids, values / distance)
        return out
