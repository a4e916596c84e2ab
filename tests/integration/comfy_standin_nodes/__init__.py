"""A test-only custom node pack: the stand-in text encoder and VAE as loader nodes, so that a real ComfyUI server
can run the pack's workflows with tiny models (the real umT5 and Wan VAE cannot be tiny). Linked into a test
server's custom_nodes/ by the soak test; never shipped."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.realpath(__file__))))  # through the symlink
from comfy_standins import StandInCLIP, StandInCodecVAE  # noqa: E402


def _loader(kind: str, make):
    """A loader node with no inputs that returns ``make()`` as a ``kind`` socket."""
    class StandInLoader:
        RETURN_TYPES = (kind,)
        FUNCTION = "load"
        CATEGORY = "testing"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {}}

        def load(self):
            return (make(),)
    return StandInLoader


NODE_CLASS_MAPPINGS = {"IMVETestStandInCLIP": _loader("CLIP", StandInCLIP),
                       "IMVETestStandInVAE": _loader("VAE", StandInCodecVAE)}
