"""Bounded-memory evaluation of many items (directions, classes, noisy copies, masks):
``vmap`` inside a chunk, chunks in sequence, optionally split across devices."""

from jaxcam._chunking import DEFAULT_CHUNKS as DEFAULT_CHUNKS
from jaxcam._chunking import chunk_size as chunk_size
from jaxcam._chunking import chunked_map as chunked_map
from jaxcam._chunking import chunked_sum as chunked_sum
from jaxcam._chunking import per_axis as per_axis

__all__ = ["DEFAULT_CHUNKS", "chunk_size", "chunked_map", "chunked_sum", "per_axis"]
