"""Files: video reading (OpenCV) and H.264 writing (PyAV), the RGB policy for decoded pixels, atomic writes."""
