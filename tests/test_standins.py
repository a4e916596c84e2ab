"""Weight-free stand-ins for the VAE and the text encoder."""

from __future__ import annotations

import pytest
import torch

from bench.standins import ByteTextEncoder, PatchCodec


def test_patch_codec_round_trip_is_exact():
    frames = torch.rand(3, 8, 12, 3)
    codec = PatchCodec(channels=16, patch=2)
    latent = codec.encode(frames)
    assert latent.shape == (1, 16, 3, 4, 6)
    assert torch.equal(latent[:, 12:], torch.zeros_like(latent[:, 12:]))  # padding channels
    assert torch.allclose(codec.decode(latent), frames, atol=1e-6)
    images = frames.permute(0, 3, 1, 2)  # (B, 3, H, W): each image a one-frame video
    assert torch.equal(codec.encode_images(images)[:, :, 0], latent[0].permute(1, 0, 2, 3))


def test_patch_codec_errors():
    with pytest.raises(ValueError, match="cannot hold 4x4 RGB blocks"):
        PatchCodec(channels=16, patch=4)
    with pytest.raises(ValueError, match="not a multiple of the codec patch 2"):
        PatchCodec().encode(torch.rand(1, 7, 8, 3))


def test_byte_text_encoder_is_deterministic_and_zero_padded():
    enc = ByteTextEncoder(32, max_len=16, seed=0)
    a = enc(["make it red", ""])
    assert a.shape == (2, 16, 32)
    assert torch.equal(a, ByteTextEncoder(32, max_len=16, seed=0)(["make it red", ""]))
    assert torch.equal(a[1], torch.zeros(16, 32))          # the empty instruction is all padding
    assert torch.equal(a[0, 11:], torch.zeros(5, 32))      # padding after 11 bytes
    assert not torch.allclose(a[0], enc(["make it blue"])[0])


def test_word_text_encoder_tokenizes_known_words_and_pads_with_zeros():
    from bench.standins import WordTextEncoder
    enc = WordTextEncoder(["a", "circle", "red"], 16, max_len=6)
    ids = enc.tokenize(["a red circle", "A RED, circle!", "a blue circle", ""])
    assert ids[0].tolist() == [2, 4, 3, 0, 0, 0] and torch.equal(ids[0], ids[1])  # case and punctuation ignored
    assert ids[2].tolist()[:3] == [2, 1, 3]                                       # unknown word -> <unk>
    out = enc(["a red circle", ""])
    assert out.shape == (2, 6, 16) and torch.equal(out[1], torch.zeros(6, 16))
    assert torch.equal(out[0, 3:], torch.zeros(3, 16))
