"""A network split at a layer, and where its arrays live.

- ``_split``: :class:`Split`, ``features(x) -> A`` and ``head(A) -> outputs``, the value
  every method works on (its shapes checked once per input shape), and :class:`TokenGrid`
  for token models;
- ``_modules``: :func:`split_module`, a user's own linen or NNX model split at a named
  submodule without rewriting it (the zoo's splits are made by :mod:`jaxcam.models`);
- ``_devices``: :func:`place` (variables on the devices once), :func:`data_mesh`,
  :func:`shard_batch` and :func:`padded_size` (batches over the devices).

Every name here is also ``jaxcam.<name>``.
"""

from jaxcam.splitting._devices import data_mesh as data_mesh
from jaxcam.splitting._devices import padded_size as padded_size
from jaxcam.splitting._devices import place as place
from jaxcam.splitting._devices import shard_batch as shard_batch
from jaxcam.splitting._modules import split_module as split_module
from jaxcam.splitting._split import Split as Split
from jaxcam.splitting._split import TokenGrid as TokenGrid

__all__ = ["Split", "TokenGrid", "data_mesh", "padded_size", "place", "shard_batch",
           "split_module"]
