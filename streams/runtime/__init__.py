"""The stream runtime: the Faust app, decoding with dead letters, tables, the lean engine (changelog-backed partition state), metrics, the worker."""
