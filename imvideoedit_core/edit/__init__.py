"""Editing a video: the two-stream runtime and source cache, the sampling loop and its hooks, masks, long videos,
degraded starts, the clip policy."""
