"""ImVideoEdit core: pure PyTorch, never imports ComfyUI.

Submodules are imported explicitly (``from imvideoedit_core import backbone``) so that importing the
package stays cheap and free of optional dependencies.
"""
