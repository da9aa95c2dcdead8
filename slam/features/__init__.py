"""ORB features: extraction spread over the image, and matching kernels."""
