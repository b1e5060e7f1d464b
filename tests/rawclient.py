# SPDX-License-Identifier: MIT
"""A raw SOCK_SEQPACKET client of tierd's wire protocol (tierd/proto/tierd-proto.h),
for tests that must send what the library never would, or count every answer
the daemon sends.  Used by tests/adversary.sh:

    rawclient.py SOCKET CASE [ARGS...]

prints what it saw and exits 0 when the case holds, 1 when not."""
import errno
import os
import socket
import struct
import sys

MAGIC = 0x44524954
MAJOR, MINOR = 1, 1
HDR = struct.Struct("<IHHHHIQ")
HELLO, WELCOME, ERROR, OK, PREFETCH, ACQUIRE, ACQUIRED, RELEASE = 1, 2, 3, 4, 5, 6, 7, 8
STATS, STATS_REPLY, EVICT, PIN, UNPIN = 11, 12, 13, 14, 15
NAMES = {1: "HELLO", 2: "WELCOME", 3: "ERROR", 4: "OK", 5: "PREFETCH", 6: "ACQUIRE",
         7: "ACQUIRED", 8: "RELEASE", 11: "STATS", 12: "STATS_REPLY", 13: "EVICT", 14: "PIN",
         15: "UNPIN"}


def pstr(s):
    b = s.encode()
    return struct.pack("<I", len(b)) + b + b"\0" * (4 - len(b) % 4)


class Conn:
    def __init__(self, path, name="rawclient"):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.s.settimeout(30)
        self.s.connect(path)
        self.next = 1
        self.fds = []
        self.welcome = self.request(HELLO, struct.pack("<I", os.getpid()) + pstr(name))

    def fileno(self):
        return self.s.fileno()

    def send(self, mtype, payload=b"", rid=None):
        if rid is None:
            rid = self.next
            self.next += 1
        self.s.send(HDR.pack(MAGIC, MAJOR, MINOR, mtype, 0, len(payload), rid) + payload)
        return rid

    def recv(self):
        data, anc, _, _ = self.s.recvmsg(1 << 17, socket.CMSG_SPACE(16 * 4))
        for level, kind, fdata in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                self.fds += list(struct.unpack("<%di" % (len(fdata) // 4), fdata[:len(fdata) - len(fdata) % 4]))
        if not data:
            return None
        _, _, _, mtype, _, length, rid = HDR.unpack_from(data)
        body = data[HDR.size:HDR.size + length]
        if mtype == ERROR:
            err, n = struct.unpack_from("<iI", body)
            return (mtype, rid, err, body[8:8 + n].decode(errors="replace"))
        return (mtype, rid, body)

    def request(self, mtype, payload=b""):
        rid = self.send(mtype, payload)
        m = self.recv()
        if m is None:
            raise ConnectionError("closed by tierd")
        return m

    def keys(self, mtype, keys):
        return self.send(mtype, struct.pack("<II", len(keys), 0) +
                         b"".join(struct.pack("<III", *k) for k in keys))

    def stats(self):
        """Sends STATS; returns every message received until its answer, and the counters."""
        rid = self.send(STATS)
        seen = []
        while True:
            m = self.recv()
            if m is None:
                raise ConnectionError("closed by tierd")
            if m[0] == STATS_REPLY and m[1] == rid:
                n = struct.unpack_from("<I", m[2])[0]
                return seen, struct.unpack_from("<%dQ" % n, m[2], 8)
            seen.append(m)


def show(m):
    if m[0] == ERROR:
        return "ERROR %s %s" % (errno.errorcode.get(-m[2], m[2]), m[3])
    return NAMES.get(m[0], str(m[0]))


def refused_does_nothing(path, mtype, keys, want):
    """A refused request gets one ERROR with the expected errno, and nothing after it."""
    c = Conn(path)
    rid = c.keys(mtype, keys)
    first = c.recv()
    rest, _ = c.stats()
    print("answers:", show(first), [show(m) for m in rest])
    ok = first[0] == ERROR and first[1] == rid and errno.errorcode.get(-first[2]) == want
    return ok and not rest


def main():
    path, case, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    if case == "refused":
        # refused TYPE ERRNO MODEL LAYER EXPERT...
        mtype = {"acquire": ACQUIRE, "prefetch": PREFETCH}[args[0]]
        nums = [int(x) for x in args[2:]]
        keys = [tuple(nums[i:i + 3]) for i in range(0, len(nums), 3)]
        return refused_does_nothing(path, mtype, keys, args[1])
    if case == "duplicates":
        # duplicates MODEL LAYER: batches naming a key more than once.  A
        # RELEASE or UNPIN is refused whole when it names a key more often
        # than it is held, naming the batch's first such key; an EVICT
        # naming a key twice is refused, after the keys before it are
        # checked.  Experts 1, 2, 3, 5 and 9 of LAYER, not resident before.
        model, layer = int(args[0]), int(args[1])
        a, b, x, p, cold = ((model, layer, e) for e in (1, 2, 9, 3, 5))
        c = Conn(path)
        good = True

        def expect(what, mtype, keys, want, text=None):
            nonlocal good
            c.keys(mtype, keys)
            m = c.recv()
            print(what + ":", show(m))
            if want == "OK":
                good = good and m[0] == OK and struct.unpack_from("<Q", m[2])[0] == len(keys)
            elif want == "ACQUIRED":
                good = good and m[0] == ACQUIRED
            else:
                good = (good and m[0] == ERROR and errno.errorcode.get(-m[2]) == want and
                        text in m[3])
        expect("acquire a", ACQUIRE, [a], "ACQUIRED")
        expect("acquire a, b", ACQUIRE, [a, b], "ACQUIRED")
        # Held: a twice, b once.  The first bad key in the batch's order
        # is named, whatever order the keys sort in.
        expect("release x a a a", RELEASE, [x, a, a, a], "ENOENT", "layer %d expert 9:" % layer)
        expect("release a b a a", RELEASE, [a, b, a, a], "ENOENT", "layer %d expert 1:" % layer)
        expect("release b a a b", RELEASE, [b, a, a, b], "ENOENT", "layer %d expert 2:" % layer)
        # Nothing was released above: every hold is still there.
        expect("release a b a", RELEASE, [a, b, a], "OK")
        expect("release a", RELEASE, [a], "ENOENT", "layer %d expert 1: not pinned" % layer)
        expect("pin p p", PIN, [p, p], "OK")
        expect("unpin p p p", UNPIN, [p, p, p], "ENOENT", "expert 3: not pinned (operator pins)")
        expect("unpin p p", UNPIN, [p, p], "OK")
        expect("evict cold b b", EVICT, [cold, b, b], "ENOENT", "expert 5: not resident")
        expect("evict b a b cold", EVICT, [b, a, b, cold], "EINVAL", "expert 2: named twice")
        expect("evict a b", EVICT, [a, b], "OK")
        return good
    if case == "welcome":
        # welcome: prints the pools given and the allowed flag of each model
        c = Conn(path)
        print("npools", len(c.fds), "welcome", show(c.welcome))
        return c.welcome[0] == WELCOME
    if case == "hold-then-revoked":
        # Acquires MODEL LAYER EXPERT, says "held", waits for FILE, then
        # checks that the daemon has closed the connection (revoked) and
        # that a new connection gets no pool and is refused.
        model, layer, expert, flag = int(args[0]), int(args[1]), int(args[2]), args[3]
        c = Conn(path)
        npools = len(c.fds)
        c.keys(ACQUIRE, [(model, layer, expert)])
        m = c.recv()
        print("first connection: npools", npools, show(m))
        if m[0] != ACQUIRED or npools != 1:
            return False
        print("held", flush=True)
        while not os.path.exists(flag):
            import time
            time.sleep(0.05)
        try:
            c.keys(ACQUIRE, [(model, layer, (expert + 1) % 4)])
            m = c.recv()
        except OSError as e:
            m = None
            print("send/recv:", e)
        print("after the reload:", m if m is None else show(m))
        if m is not None:
            return False
        d = Conn(path)
        print("new connection: npools", len(d.fds))
        return len(d.fds) == 0 and refused_does_nothing(path, ACQUIRE, [(model, layer, expert)], "EACCES")
    if case == "conn-limit":
        # Opens N connections; the (N+1)th is refused with EUSERS and a reason.
        n = int(args[0])
        conns = [Conn(path) for _ in range(n)]
        for c in conns:
            if c.welcome[0] != WELCOME:
                print("connection refused early:", show(c.welcome))
                return False
        extra = Conn(path)
        print("connection %d: %s" % (n + 1, show(extra.welcome)))
        return extra.welcome[0] == ERROR and errno.errorcode.get(-extra.welcome[2]) == "EUSERS"
    if case == "flood-unread":
        # N connections each send M STATS and never read: the daemon bounds
        # what it queues for all of them together.  Sends as the sockets
        # take them; stops when all are sent or the daemon closed them all.
        import select
        import time
        n, m = int(args[0]), int(args[1])
        conns = [Conn(path) for _ in range(n)]
        left = {c: m for c in conns}
        for c in conns:
            c.s.setblocking(False)
        deadline = time.monotonic() + 60
        while left and time.monotonic() < deadline:
            _, w, _ = select.select([], list(left), [], 1)
            for c in w:
                try:
                    c.send(STATS)
                    left[c] -= 1
                    if not left[c]:
                        del left[c]
                except BlockingIOError:
                    pass
                except OSError:
                    del left[c]
        print("sent STATS without reading; %d connections not done" % len(left))
        return True
    if case == "prefetch-twice":
        # PREFETCH a full budget (MODEL LAYER E1..E4), then another: it is
        # accepted once the first ones have completed (the budget is given
        # back), retried a bounded number of times meanwhile.
        model, layer = int(args[0]), int(args[1])
        xs = [int(x) for x in args[2:]]
        c = Conn(path)
        c.keys(PREFETCH, [(model, layer, x) for x in xs[:4]])
        print("first batch:", show(c.recv()))
        import time
        for _ in range(200):
            c.keys(PREFETCH, [(model, layer, x) for x in xs[4:8]])
            m = c.recv()
            if m[0] == OK:
                print("second batch:", show(m), struct.unpack_from("<Q", m[2])[0], "started")
                return struct.unpack_from("<Q", m[2])[0] == 4
            time.sleep(0.05)
        print("second batch still refused:", show(m))
        return False
    if case == "acquire-until-full":
        # Acquires MODEL LAYER 0..E-1 one by one and holds them; prints the
        # first refusal.  Exits 0 if it was ENOSPC.
        model, layers, experts = int(args[0]), int(args[1]), int(args[2])
        c = Conn(path)
        for L in range(layers):
            for x in range(experts):
                c.keys(ACQUIRE, [(model, L, x)])
                m = c.recv()
                if m[0] == ERROR:
                    print("refused:", show(m), flush=True)
                    if len(args) > 3:
                        while not os.path.exists(args[3]):
                            import time
                            time.sleep(0.05)
                    return errno.errorcode.get(-m[2]) == "ENOSPC"
        print("never refused")
        return False
    print("unknown case", case)
    return False


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
