"""Wan 2.1's strides, defined once: the VAE compresses 8x in space and 4x in time, the patch embedding 2x more in
space, so frame sides must be multiples of 16 and clips 4k+1 frames long."""

VAE_SPATIAL_STRIDE = 8   # pixels per latent pixel, per side
VAE_TEMPORAL_STRIDE = 4  # frames per latent frame after the first
PATCH_STRIDE = 2         # latent pixels per token, per side (patch_size (1, 2, 2))
SIZE_MULTIPLE = VAE_SPATIAL_STRIDE * PATCH_STRIDE  # 16
