"""carousel-gateway: a real-time gateway for vertical storage carousels."""

__version__ = "0.1.0"
