"""Wan's strides, defined once. Both Wan VAEs compress 4x in time (frame 0 alone, then groups of 4), so clips are
4k+1 frames long; in space the Wan 2.1 VAE compresses 8x and the Wan 2.2 VAE (TI2V 5B) 16x, and the patch
embedding 2x more, so frame sides must be multiples of 16 (Wan 2.1, and the A14B experts, which use the 2.1 VAE)
or 32 (TI2V 5B). Hosts read the spatial stride from the VAE they are given (``size_multiple``)."""

VAE_SPATIAL_STRIDE = 8   # pixels per latent pixel, per side (the Wan 2.1 VAE)
WAN22_VAE_SPATIAL_STRIDE = 16  # the Wan 2.2 VAE (TI2V 5B)
VAE_TEMPORAL_STRIDE = 4  # frames per latent frame after the first (both VAEs)
PATCH_STRIDE = 2         # latent pixels per token, per side (patch_size (1, 2, 2))
SIZE_MULTIPLE = VAE_SPATIAL_STRIDE * PATCH_STRIDE  # 16


def size_multiple(vae_spatial_stride: int = VAE_SPATIAL_STRIDE) -> int:
    """What frame sides must be a multiple of for a VAE of this spatial stride: one token per side."""
    if vae_spatial_stride < 1:
        raise ValueError(f"a VAE's spatial stride is >= 1, got {vae_spatial_stride}")
    return vae_spatial_stride * PATCH_STRIDE


def vae_spatial_stride(family: str) -> int:
    """The spatial stride of the VAE a model family works with: Wan 2.2's for TI2V 5B, Wan 2.1's for the rest."""
    return WAN22_VAE_SPATIAL_STRIDE if family == "wan2.2-ti2v" else VAE_SPATIAL_STRIDE
