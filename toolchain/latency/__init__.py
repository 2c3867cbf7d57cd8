"""Latency lookup tables: op signatures, tables on disk, single-op models, runners, the profiler and predictor."""
