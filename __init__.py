"""ImVideoEdit for ComfyUI: text-instructed video editing with a frozen Wan 2.1 backbone and an adapter learned
from image pairs. ComfyUI imports this file and calls ``comfy_entrypoint`` (V3 API); the nodes live in nodes/."""

import importlib.util

# Outside ComfyUI (e.g. pytest collecting this folder as a package) there is nothing to register.
if importlib.util.find_spec("comfy_api") is not None:
    from .nodes import comfy_entrypoint  # noqa: F401
