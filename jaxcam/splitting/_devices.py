"""Where arrays live: variables placed on the devices once, batches split across them.

A jit-compiled call copies every NumPy argument into the program: 553 MB of VGG16
variables per call, a host-to-device transfer on a GPU. :func:`place` puts a split's
variables on the devices once (replicated over a mesh), so later calls find them there.
:func:`shard_batch` splits a batch along its first axis over the same mesh: jit then runs
one data-parallel program, each device on its share of the images, and the methods need
no change (computation follows the data).
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS = "data"


def data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """The one mesh of the package: 1-d, its axis named ``"data"``, over ``devices``
    (default: this process's devices, ``jax.local_devices()``; under ``jax.distributed``
    each process explains its own files on its own devices). Batches (the command line),
    noisy copies, masks and ablations (a method's ``devices=``) are split along it.

    Raises:
      TypeError: ``devices`` is not a non-empty sequence of ``jax.Device``.
      ValueError: a device is listed twice.
    """
    devices = list(jax.local_devices() if devices is None else devices)
    if not devices or not all(isinstance(d, jax.Device) for d in devices):
        raise TypeError("devices must be a non-empty sequence of jax devices, e.g. "
                        f"devices=jax.devices(); got {devices!r}")
    if len(set(devices)) != len(devices):
        raise ValueError(f"devices lists a device more than once: {devices}")
    return Mesh(np.asarray(devices), (AXIS,))


def method_mesh(devices: Sequence[jax.Device] | None) -> Mesh | None:
    """The mesh of a method's ``devices`` option: None (the default device alone), or
    :func:`data_mesh` over the devices given."""
    return None if devices is None else data_mesh(devices)


def replicate(tree: Any, mesh: Mesh | None = None) -> Any:
    """``tree``'s arrays on every device of ``mesh`` (default: on the default device)."""
    if mesh is None:
        return jax.device_put(tree)
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def place(split, mesh: Mesh | None = None):
    """``split`` with its variables on the devices: replicated over ``mesh``, or on the
    default device. Call it once; every method then runs without copying the variables.

    Example::

        split = jaxcam.place(jaxcam.Split(variables, features, head), jaxcam.data_mesh())
    """
    return split.replace(variables=replicate(split.variables, mesh))


def shard_batch(x, mesh: Mesh) -> jax.Array:
    """A batch (B, ...) split along B over ``mesh``'s devices; B must be a multiple of
    their number (see :func:`padded_size`)."""
    n = mesh.devices.size
    if np.shape(x)[0] % n:
        raise ValueError(f"a batch of {np.shape(x)[0]} images does not split over {n} "
                         f"devices: pad it to a multiple of {n} (jaxcam.padded_size)")
    return jax.device_put(x, NamedSharding(mesh, PartitionSpec(AXIS)))


def padded_size(batch_size: int, mesh: Mesh | None = None) -> int:
    """``batch_size`` rounded up to a multiple of the mesh's device count."""
    n = 1 if mesh is None else mesh.devices.size
    return -(-int(batch_size) // n) * n
