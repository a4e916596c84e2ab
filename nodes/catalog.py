"""Node ids of the pack. Saved workflows reference these forever: never rename one, never reorder widgets.

Pure Python (no ComfyUI import), so the default test run can check them.
"""

PREFIX = "IMVE"
CATEGORY = "ImVideoEdit"

NODE_IDS: dict[str, str] = {
    "load_adapter": "IMVELoadAdapter",
    "apply_adapter": "IMVEApplyAdapter",
    "edit_conditioning": "IMVEEditConditioning",
    "sampler": "IMVESampler",
    "gate_mask": "IMVEGateMask",
    "load_video_frames": "IMVELoadVideoFrames",
    "train_adapter": "IMVETrainAdapter",
    "long_video_edit": "IMVELongVideoEdit",
    "edit_mask": "IMVEEditMask",
    "tune_on_keyframe": "IMVETuneOnKeyframe",
    "degrade_latent": "IMVEDegradeLatent",
    "animate_image": "IMVEAnimateImage",
    "save_image_pairs": "IMVESaveImagePairs",
    "wan22_expert": "IMVEWan22Expert",
}

ADAPTER_FOLDER = "imvideoedit"  # models/imvideoedit/
