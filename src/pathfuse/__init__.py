"""pathfuse: fusion of pathology foundation models, from whole-slide images to benchmark tables."""

__version__ = "0.1.0"
