# SPDX-License-Identifier: MIT
"""Python binding of libtierd-client (ctypes over the shared library).

    import tierd_client
    with tierd_client.Client("/run/tierd/tierd.sock") as c:
        m = c.model_index("mixtral")
        with c.acquire([(m, 3, e) for e in (1, 6)]) as acq:
            for expert in acq.experts:
                for t in expert.tensors:
                    t.array()      # numpy array (read-only), or t.data (memoryview)

Tensors are read-only views into tierd's shared pool: they stay valid and
unchanged while the acquisition is held, and must not be used after
release().  After a daemon restart the library re-acquires held experts
(acq.status() says whether it could); views taken before stay readable,
over the old pool, until release(): take the tensors again for the new
bytes.  Calls that wait for the daemon take timeout_ms (-1: no limit) and
raise TierdError(ETIMEDOUT) when it passes.  BF16 and FP8 tensors come back as uint16 / uint8 arrays (numpy has
no such dtypes); reinterpret them with torch.frombuffer(...).view(torch.bfloat16)
or similar.  Errors raise OSError with the errno and the daemon's reason.
Acquires of resident experts go without a system call through the library's
shared residency table; Client(..., fastpath=False), c.fastpath = False or
TIERD_NO_FASTPATH=1 send them all through the socket.
"""
import ctypes
import ctypes.util
import errno as _errno
import os
import weakref

__all__ = ["Client", "Acquisition", "Expert", "Tensor", "TierdError"]

_MAX_DIMS = 8
_F_SOCKET = 0x1     # TIERD_CLIENT_F_SOCKET


class _Key(ctypes.Structure):
    _fields_ = [("model", ctypes.c_uint32), ("layer", ctypes.c_uint32), ("expert", ctypes.c_uint32)]


class _Tensor(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("data", ctypes.c_void_p),
        ("length", ctypes.c_uint64),
        ("dtype", ctypes.c_uint32),
        ("ndim", ctypes.c_uint32),
        ("shape", ctypes.c_uint64 * _MAX_DIMS),
        ("pool", ctypes.c_uint32),
        ("offset", ctypes.c_uint64),
    ]


class _Expert(ctypes.Structure):
    _fields_ = [("key", _Key), ("ntensors", ctypes.c_uint32), ("tensors", ctypes.POINTER(_Tensor))]


class _ModelInfo(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("allowed", ctypes.c_int),
        ("nlayers", ctypes.c_uint32),
        ("experts_per_layer", ctypes.c_uint32),
        ("top_k", ctypes.c_uint32),
        ("nexperts", ctypes.c_uint64),
        ("slot_bytes", ctypes.c_uint64),
    ]


# enum tierd_dtype -> (name, numpy dtype string)
_DTYPES = [
    ("BOOL", "bool"), ("U8", "uint8"), ("I8", "int8"), ("F8_E4M3", "uint8"), ("F8_E5M2", "uint8"),
    ("I16", "int16"), ("U16", "uint16"), ("F16", "float16"), ("BF16", "uint16"), ("I32", "int32"),
    ("U32", "uint32"), ("F32", "float32"), ("I64", "int64"), ("U64", "uint64"), ("F64", "float64"),
    ("F8_E8M0", "uint8"),
]

# TIERD_CLIENT_DEFAULT_TIMEOUT_MS of tierd-client.h
DEFAULT_TIMEOUT_MS = 10000


class TierdError(OSError):
    """A libtierd-client call failed: errno plus tierd's reason."""


def _load(path=None):
    path = path or os.environ.get("TIERD_CLIENT_LIB") or ctypes.util.find_library("tierd-client") \
        or "libtierd-client.so.0"
    lib = ctypes.CDLL(path)
    P, c_int, c_size_t = ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t
    sig = {
        "tierd_client_connect": (c_int, [ctypes.POINTER(P), ctypes.c_char_p, ctypes.c_char_p]),
        "tierd_client_close": (None, [P]),
        "tierd_client_last_error": (None, [P, ctypes.c_char_p, c_size_t]),
        "tierd_client_model_count": (c_int, [P]),
        "tierd_client_model_find": (c_int, [P, ctypes.c_char_p]),
        "tierd_client_model_info": (c_int, [P, ctypes.c_uint, ctypes.POINTER(_ModelInfo)]),
        "tierd_client_pool_count": (c_int, [P]),
        "tierd_client_prefetch_timeout": (c_int, [P, ctypes.POINTER(_Key), c_size_t, c_int]),
        "tierd_client_acquire": (c_int, [P, ctypes.POINTER(_Key), c_size_t, c_int, ctypes.POINTER(P)]),
        "tierd_client_release": (c_int, [P, P]),
        "tierd_acquisition_count": (c_size_t, [P]),
        "tierd_acquisition_expert": (ctypes.POINTER(_Expert), [P, c_size_t]),
        "tierd_acquisition_status": (c_int, [P, P]),
        "tierd_client_routing_hint": (c_int, [P, ctypes.c_uint32, ctypes.c_uint32,
                                              ctypes.POINTER(ctypes.c_uint32),
                                              ctypes.POINTER(ctypes.c_float), c_size_t]),
        "tierd_client_report_tokens": (c_int, [P, ctypes.c_uint32, ctypes.c_uint64]),
        "tierd_client_stats_timeout": (c_int, [P, ctypes.POINTER(ctypes.c_uint64), c_size_t, c_int]),
        "tierd_client_stat_name": (ctypes.c_char_p, [ctypes.c_uint]),
        # c_void_p, not c_char_p: the text is malloc'd and must be freed.
        "tierd_client_metrics_timeout": (c_int, [P, ctypes.POINTER(P), ctypes.POINTER(c_size_t), c_int]),
        "tierd_dtype_name": (ctypes.c_char_p, [ctypes.c_uint32]),
        "tierd_client_set_flags": (None, [P, ctypes.c_uint]),
        "tierd_client_flags": (ctypes.c_uint, [P]),
    }
    for name, (res, args) in sig.items():
        fn = getattr(lib, name)
        fn.restype = res
        fn.argtypes = args
    return lib


# free() for what the library malloc'd (tierd_client_metrics' text): the
# process's C library, which the library itself links.
_libc = ctypes.CDLL(None)
_libc.free.restype = None
_libc.free.argtypes = [ctypes.c_void_p]


class Tensor:
    """One tensor of an acquired expert: a read-only view into the pool."""

    def __init__(self, t, keepalive):
        self.name = t.name.decode()
        self.dtype = _DTYPES[t.dtype][0] if t.dtype < len(_DTYPES) else "unknown"
        self._np_dtype = _DTYPES[t.dtype][1] if t.dtype < len(_DTYPES) else "uint8"
        self.shape = tuple(t.shape[i] for i in range(t.ndim))
        self.pool, self.offset, self.length = t.pool, t.offset, t.length
        raw = (ctypes.c_char * t.length).from_address(t.data)
        self.data = memoryview(raw).cast("B").toreadonly()
        self._keepalive = keepalive

    def array(self):
        """numpy array over the pool bytes (no copy, read-only); needs numpy."""
        import numpy as np
        return np.frombuffer(self.data, dtype=self._np_dtype).reshape(self.shape)


class Expert:
    def __init__(self, e, keepalive):
        self.model, self.layer, self.expert = e.key.model, e.key.layer, e.key.expert
        self.tensors = [Tensor(e.tensors[i], keepalive) for i in range(e.ntensors)]


class Acquisition:
    """Pinned experts; release() (or the with-block's end) unpins them."""

    def __init__(self, client, handle):
        self._client, self._handle = client, handle
        client._live.add(self)
        n = client._lib.tierd_acquisition_count(handle)
        self.experts = [Expert(client._lib.tierd_acquisition_expert(handle, i).contents, self)
                        for i in range(n)]

    def status(self):
        """0, or -ENOTCONN / -ENOLINK after a daemon restart (see tierd-client.h)."""
        return self._client._lib.tierd_acquisition_status(self._client._c, self._handle)

    def release(self):
        if self._handle:
            h, self._handle = self._handle, None
            self.experts = []
            self._client._check(self._client._lib.tierd_client_release(self._client._c, h), "release")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


class Client:
    """A connection to tierd.  path None: $TIERD_SOCKET or /run/tierd/tierd.sock."""

    def __init__(self, path=None, name="python", library=None, fastpath=True):
        self._lib = _load(library)
        self._live = weakref.WeakSet()
        self._c = ctypes.c_void_p()
        r = self._lib.tierd_client_connect(ctypes.byref(self._c),
                                           path.encode() if path else None, name.encode())
        if r < 0:
            self._c = None
            raise TierdError(-r, "cannot connect to tierd: " + os.strerror(-r))
        if not fastpath:
            self.fastpath = False

    @property
    def fastpath(self):
        """Whether acquires of resident experts may go without a system call
        (the library's default; TIERD_NO_FASTPATH=1 in the environment turns
        it off).  Set False to send every acquire through the socket."""
        return not self._lib.tierd_client_flags(self._c) & _F_SOCKET

    @fastpath.setter
    def fastpath(self, on):
        f = self._lib.tierd_client_flags(self._c)
        self._lib.tierd_client_set_flags(self._c, (f & ~_F_SOCKET) if on else (f | _F_SOCKET))

    def _check(self, r, what):
        if r < 0:
            buf = ctypes.create_string_buffer(512)
            self._lib.tierd_client_last_error(self._c, buf, len(buf))
            raise TierdError(-r, "%s: %s: %s" % (what, os.strerror(-r), buf.value.decode(errors="replace")))
        return r

    @staticmethod
    def _keys(keys):
        keys = list(keys)
        arr = (_Key * len(keys))()
        for i, (m, l, e) in enumerate(keys):
            arr[i] = _Key(m, l, e)
        return arr, len(keys)

    def models(self):
        out = []
        for i in range(self._lib.tierd_client_model_count(self._c)):
            mi = _ModelInfo()
            self._check(self._lib.tierd_client_model_info(self._c, i, ctypes.byref(mi)), "model_info")
            out.append({"index": i, "name": mi.name.decode(), "allowed": bool(mi.allowed),
                        "layers": mi.nlayers, "experts_per_layer": mi.experts_per_layer,
                        "top_k": mi.top_k, "experts": mi.nexperts, "slot_bytes": mi.slot_bytes})
        return out

    def model_index(self, name):
        return self._check(self._lib.tierd_client_model_find(self._c, name.encode()), "model " + name)

    def prefetch(self, keys, timeout_ms=DEFAULT_TIMEOUT_MS):
        arr, n = self._keys(keys)
        self._check(self._lib.tierd_client_prefetch_timeout(self._c, arr, n, timeout_ms), "prefetch")

    def acquire(self, keys, timeout_ms=-1):
        arr, n = self._keys(keys)
        h = ctypes.c_void_p()
        self._check(self._lib.tierd_client_acquire(self._c, arr, n, timeout_ms, ctypes.byref(h)), "acquire")
        return Acquisition(self, h)

    def routing_hint(self, model, layer, experts, weights):
        n = len(experts)
        e = (ctypes.c_uint32 * n)(*experts)
        w = (ctypes.c_float * n)(*weights)
        self._check(self._lib.tierd_client_routing_hint(self._c, model, layer, e, w, n), "routing_hint")

    def report_tokens(self, model, tokens):
        self._check(self._lib.tierd_client_report_tokens(self._c, model, tokens), "report_tokens")

    def stats(self, timeout_ms=DEFAULT_TIMEOUT_MS):
        vals = (ctypes.c_uint64 * 256)()
        n = self._check(self._lib.tierd_client_stats_timeout(self._c, vals, 256, timeout_ms), "stats")
        return {self._lib.tierd_client_stat_name(i).decode(): vals[i] for i in range(n)}

    def metrics(self, timeout_ms=DEFAULT_TIMEOUT_MS):
        """The daemon's metrics now, as Prometheus exposition text (str)."""
        text, n = ctypes.c_void_p(), ctypes.c_size_t()
        self._check(self._lib.tierd_client_metrics_timeout(self._c, ctypes.byref(text), ctypes.byref(n),
                                                           timeout_ms), "metrics")
        try:
            return ctypes.string_at(text, n.value).decode()
        finally:
            _libc.free(text)

    def close(self):
        """Closes the connection; every acquisition is released with it."""
        for a in list(getattr(self, "_live", ())):
            a._handle, a.experts = None, []
        if getattr(self, "_c", None):
            self._lib.tierd_client_close(self._c)
            self._c = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self.close()
