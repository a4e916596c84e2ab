"""The networks and their files: configuration, the Wan 2.1 backbone, rotary embeddings, the attention seam, the
ImVideoEdit adapter, checkpoint and adapter file formats."""
