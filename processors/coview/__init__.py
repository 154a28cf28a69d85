"""Session co-view "similar titles", cold start and autoplay: the pure core.

Modules: ``sessionize`` (viewer sessions, the viewed rule), ``cooccurrence``
(decayed, bounded co-view counts per title), ``similarity`` (normalised measures,
lazy top-K), ``coldstart`` (metadata TF-IDF fallback and blend), ``autoplay``
(next title choice), ``memory`` (in-memory drivers used by the bench and tests).
"""
