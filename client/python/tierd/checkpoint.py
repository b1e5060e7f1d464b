# SPDX-License-Identifier: MIT
"""A Hugging Face checkpoint directory read without the safetensors package.

    ck = Checkpoint(path)
    ck.config                       config.json as a dict
    ck.names()                      every tensor name
    ck.info(name)                   (dtype name, shape, file, offset, length)
    ck.load(name)                   a torch tensor in memory (a copy, writable)
    ck.read(name)                   the tensor's bytes, read from the file now

The tensor bytes are what tierd serves: tests and benchmarks compare the two.
"""
import json
import os
import struct

from .torch import from_bytes

__all__ = ["Checkpoint"]


class Checkpoint:
    def __init__(self, path):
        self.path = path
        with open(os.path.join(path, "config.json")) as f:
            self.config = json.load(f)
        index = os.path.join(path, "model.safetensors.index.json")
        if os.path.exists(index):
            with open(index) as f:
                files = sorted(set(json.load(f)["weight_map"].values()))
        else:
            files = ["model.safetensors"]
        self._info = {}
        for fname in files:
            fpath = os.path.join(path, fname)
            with open(fpath, "rb") as f:
                hlen = struct.unpack("<Q", f.read(8))[0]
                header = json.loads(f.read(hlen))
            for name, t in header.items():
                if name == "__metadata__":
                    continue
                a, b = t["data_offsets"]
                self._info[name] = (t["dtype"], tuple(t["shape"]), fpath, 8 + hlen + a, b - a)

    def names(self):
        return list(self._info)

    def __contains__(self, name):
        return name in self._info

    def info(self, name):
        try:
            return self._info[name]
        except KeyError:
            raise KeyError("%s: no tensor '%s' in the checkpoint" % (self.path, name)) from None

    def read(self, name, uncached=False):
        """The tensor's bytes, read from its file now; uncached: and dropped from the
        page cache after, as for a model larger than memory."""
        _, _, fpath, off, n = self.info(name)
        fd = os.open(fpath, os.O_RDONLY)
        try:
            buf = bytearray(n)
            view, done = memoryview(buf), 0
            while done < n:
                got = os.preadv(fd, [view[done:]], off + done)
                if got <= 0:
                    raise OSError("%s: short read of '%s' at byte %d" % (fpath, name, off + done))
                done += got
            if uncached:
                os.posix_fadvise(fd, off, n, os.POSIX_FADV_DONTNEED)
            return buf
        finally:
            os.close(fd)

    def load(self, name):
        """A writable tensor in memory, in the checkpoint's dtype (FP8: uint8 bytes)."""
        dtype, shape, _, _, _ = self.info(name)
        return from_bytes(self.read(name), dtype, shape)

    def load_as(self, name, dtype):
        """The tensor converted to dtype, FP8 weights dequantised with their block scales."""
        from .torch import weight_as
        scale = name.replace(".weight", ".weight_scale_inv")
        t = self.load(name)
        s = self.load(scale) if scale != name and scale in self else None
        return weight_as(t, self.info(name)[0], dtype, s)

