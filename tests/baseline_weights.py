"""Deterministic, library-independent weights for the backbone fixture.

``fill(module, seed)`` overwrites every floating tensor of ``module.state_dict()`` from numpy's
legacy ``RandomState`` (its stream is frozen by numpy's compatibility policy), seeded per key with
``(seed * 1000003 + crc32(key)) % 2**32`` so that a key's values do not depend on which other keys
the module has (the authors' ResNets carry an fc, the trunks do not): conv/linear weights
~ N(0, 2 / fan_in); BatchNorm weight ~ U(0.2, 0.6);
biases ~ N(0, 0.1^2); running_mean ~ N(0, 0.1^2); running_var ~ U(0.5, 1.5).
num_batches_tracked buffers are left alone.  Models with the same key names and shapes (the
authors' ResNets and torchvision's) therefore get identical weights, and a test can rebuild
them without the fixture storing 25 M parameters.
"""

import zlib

import numpy as np
import torch


def fill(module, seed):
    sd = module.state_dict()
    new = {}
    for key in sorted(sd):
        t = sd[key]
        if not t.is_floating_point():
            continue
        shape = tuple(t.shape)
        rs = np.random.RandomState((seed * 1000003 + zlib.crc32(key.encode())) % 2**32)
        if key.endswith("running_var"):
            a = rs.uniform(0.5, 1.5, shape)
        elif key.endswith("running_mean") or key.endswith("bias"):
            a = rs.normal(0.0, 0.1, shape)
        elif len(shape) == 1:  # BatchNorm weight
            a = rs.uniform(0.2, 0.6, shape)
        else:
            a = rs.normal(0.0, np.sqrt(2.0 / np.prod(shape[1:])), shape)
        new[key] = torch.from_numpy(a.astype(np.float32))
    module.load_state_dict(new, strict=False)
    return module


def backbone_input(seed, shape=(2, 3, 64, 64)):
    return torch.from_numpy(np.random.RandomState(seed).standard_normal(shape).astype(np.float32))
