"""ToyWorld: a procedural world of short videos and scene edits whose ground truth is known exactly."""
