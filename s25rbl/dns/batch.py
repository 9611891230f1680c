"""UDP in batches: ``recvmmsg(2)`` and ``sendmmsg(2)`` through ``ctypes``, no compiler needed.

Python's ``socket`` has neither call, so each datagram costs a ``recvfrom`` and a
``sendto``: two system calls and two Python calls, most of what a cached answer costs. Here
one ``recvmmsg`` reads up to ``size`` datagrams into fixed buffers, each is answered, and one
``sendmmsg`` sends the answers, each to the address its question came from.

Memory: every slot is 64 KiB (the largest UDP payload fits, so no datagram is ever cut short,
as with ``recvfrom(65535)``), in anonymous maps whose pages the kernel provides only when
touched: a slot that only ever holds DNS questions costs one page, not 64 KiB, and the pages
a datagram larger than a page took are given back (``MADV_DONTNEED``) once it is read.

Where this cannot work (not Linux, not a 64-bit C library, no ``recvmmsg`` in it)
``UdpBatch.create`` returns None and the caller keeps ``recvfrom``/``sendto``; an error that
says the calls are not supported at run time raises ``BatchUnsupported`` for the same.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import mmap
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)

SLOT = 65536  # octets per datagram buffer: more than any UDP payload over IPv4 or IPv6
NAME = 128  # octets per address buffer (sockaddr_storage)
MSG_TRUNC = 0x20
_PAGE = mmap.PAGESIZE

# An error of one datagram, or of the socket once (an ICMP error left on it): drop, go on.
_TRANSIENT = frozenset(
    {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EACCES, errno.EPERM, errno.EMSGSIZE}
)
_WOULD_BLOCK = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR, errno.ENOBUFS, errno.ENOMEM})

Cached = Callable[[bytes, bool], bytes | None]
Handle = Callable[[bytes, bool, str | None], bytes | Awaitable[bytes | None] | None]
Later = Callable[[Awaitable[bytes | None], Any], None]


class BatchUnsupported(OSError):
    """The batched calls do not work on this socket or system: use ``recvfrom``/``sendto``."""


class _IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.c_void_p),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _MsgHdr), ("msg_len", ctypes.c_uint)]


# Where the fields are, in 32- and 64-bit words of one mmsghdr (64 octets on 64-bit Linux).
_STRIDE32 = ctypes.sizeof(_MMsgHdr) // 4
_NAME64 = _MsgHdr.msg_name.offset // 8
_NAMELEN32 = _MsgHdr.msg_namelen.offset // 4
_FLAGS32 = _MsgHdr.msg_flags.offset // 4
_LEN32 = _MMsgHdr.msg_len.offset // 4


def _libc() -> Any | None:
    """The C library's two calls, or None where they are not to be used."""
    if not sys.platform.startswith("linux") or ctypes.sizeof(ctypes.c_void_p) != 8:
        return None  # the layout above is 64-bit Linux's
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        for name in ("recvmmsg", "sendmmsg"):
            call = getattr(libc, name)
            call.restype = ctypes.c_int
            call.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _libc()


def available() -> bool:
    """Whether batched UDP can be used here at all."""
    return _LIBC is not None


class _Region:
    """An anonymous map and its address, for the C calls to read and write."""

    def __init__(self, size: int) -> None:
        self.map = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE)  # private: pages can be given back
        self._anchor: Any = ctypes.c_char.from_buffer(self.map)
        self.address = ctypes.addressof(self._anchor)

    def close(self) -> None:
        self._anchor = None  # the map cannot close while a ctypes view of it exists
        self.map.close()


class UdpBatch:
    """Buffers and message headers for up to ``size`` datagrams in and out of one socket."""

    def __init__(self, sock: socket.socket, size: int, slot: int = SLOT) -> None:
        if _LIBC is None:
            raise BatchUnsupported(errno.ENOSYS, "recvmmsg/sendmmsg are not available here")
        self._sock = sock
        self._fd = sock.fileno()
        self._v6 = sock.family == socket.AF_INET6
        self.size = size
        self.slot = slot
        self.dropped = 0  # answers the socket did not take
        self.truncated = 0  # datagrams larger than a slot (never, with the default slot)
        self.calls = 0  # recvmmsg calls that read at least one datagram
        self.received = 0  # datagrams they read
        self._in = _Region(size * slot)
        self._out = _Region(size * slot)
        self._names = _Region(max(mmap.PAGESIZE, size * NAME))
        self._iov_in = (_IoVec * size)()
        self._iov_out = (_IoVec * size)()
        self._msgs_in = (_MMsgHdr * size)()
        self._msgs_out = (_MMsgHdr * size)()
        iov_size = ctypes.sizeof(_IoVec)
        for i in range(size):
            self._iov_in[i].iov_base = self._in.address + i * slot
            self._iov_in[i].iov_len = slot
            self._iov_out[i].iov_base = self._out.address + i * slot
            for msgs, iov in ((self._msgs_in, self._iov_in), (self._msgs_out, self._iov_out)):
                header = msgs[i].msg_hdr
                header.msg_name = self._names.address + i * NAME
                header.msg_namelen = NAME
                header.msg_iov = ctypes.addressof(iov) + i * iov_size
                header.msg_iovlen = 1
        self._in32 = memoryview(self._msgs_in).cast("B").cast("I")
        self._out32 = memoryview(self._msgs_out).cast("B").cast("I")
        self._out64 = memoryview(self._msgs_out).cast("B").cast("Q")
        self._iov_out64 = memoryview(self._iov_out).cast("B").cast("Q")
        address = ctypes.addressof
        self._recv_args = (self._fd, address(self._msgs_in), size, 0, None)
        self._send_base = address(self._msgs_out)

    @classmethod
    def create(cls, sock: socket.socket, size: int) -> UdpBatch | None:
        """A batch for ``sock``, or None (logged) where the batched calls cannot be used."""
        if size < 2:
            return None
        if _LIBC is None:
            log.info("batched UDP (recvmmsg/sendmmsg) not available here: one datagram per call")
            return None
        try:
            return cls(sock, size)
        except (OSError, ValueError, MemoryError) as exc:
            log.warning("batched UDP not used (%s): one datagram per call", exc)
            return None

    def close(self) -> None:
        for view in (self._in32, self._out32, self._out64, self._iov_out64):
            view.release()
        for region in (self._in, self._out, self._names):
            region.close()

    # --- the work of one readiness event --------------------------------------------------

    def serve(self, cached: Cached | None, handle: Handle, later: Later) -> int:
        """Read what is waiting (up to ``size`` datagrams), answer each and send the answers
        in one call. An answer comes from ``cached(data, False)`` (the answer cache) if it
        gives one, else from ``handle(data, False, client address)``; an awaitable result
        goes to ``later`` with the client's address, for ``sendto`` when it is done. Returns
        how many datagrams were read (0: none was waiting)."""
        assert _LIBC is not None
        received: int = _LIBC.recvmmsg(*self._recv_args)
        if received < 0:
            code = ctypes.get_errno()
            if code in _WOULD_BLOCK or code in _TRANSIENT:
                return 0
            raise BatchUnsupported(code, f"recvmmsg: {errno.errorcode.get(code, code)}")
        self.calls += 1
        self.received += received
        in32, data_in, data_out = self._in32, self._in.map, self._out.map
        iov_out64, out32, out64 = self._iov_out64, self._out32, self._out64
        slot, names, stride, page = self.slot, self._names.address, _STRIDE32, _PAGE
        queued = 0
        for i in range(received):
            base = i * stride
            if in32[base + _FLAGS32] & MSG_TRUNC:
                self.truncated += 1
                continue
            start = i * slot
            length = in32[base + _LEN32]
            data = data_in[start : start + length]
            if length > page:  # a large one (padding, an attack): give its pages back
                data_in.madvise(mmap.MADV_DONTNEED, start, slot)
            answer = None if cached is None else cached(data, False)
            if answer is None:
                result = handle(data, False, self._client(i))
                if result is None:
                    continue
                if not isinstance(result, bytes):
                    later(result, self.address(i))
                    continue
                answer = result
            length = len(answer)
            if length > slot:  # not an answer over UDP, ever: sent on its own all the same
                self._send_one(answer, self.address(i))
                continue
            offset = queued * slot
            data_out[offset : offset + length] = answer
            iov_out64[queued * 2 + 1] = length
            out64[queued * stride // 2 + _NAME64] = names + i * NAME
            out32[queued * stride + _NAMELEN32] = in32[base + _NAMELEN32]
            queued += 1
        if queued:
            self._send(queued)
        return received

    def _send(self, count: int) -> None:
        """Send the first ``count`` queued answers; one the socket refuses is dropped (as a
        failed ``sendto`` would be) and the rest are sent after it."""
        assert _LIBC is not None
        done = 0
        stride = ctypes.sizeof(_MMsgHdr)
        while done < count:
            sent = _LIBC.sendmmsg(self._fd, self._send_base + done * stride, count - done, 0, None)
            if sent > 0:
                done += sent
                continue
            code = ctypes.get_errno()
            if sent < 0 and code not in _WOULD_BLOCK and code not in _TRANSIENT:
                raise BatchUnsupported(code, f"sendmmsg: {errno.errorcode.get(code, code)}")
            self.dropped += 1  # this one failed (or nothing was sent): drop it, go on
            done += 1

    def _send_one(self, response: bytes, address: Any) -> None:
        try:
            self._sock.sendto(response, address)
        except OSError:
            self.dropped += 1

    # --- addresses -------------------------------------------------------------------------

    def _name(self, i: int) -> bytes:
        return self._names.map[i * NAME : i * NAME + 28]

    def _client(self, i: int) -> str:
        return client_text(self._name(i), self._v6)

    def address(self, i: int) -> Any:
        """Datagram ``i``'s source address as ``recvfrom`` returns it, for ``sendto``."""
        return address_of(self._name(i), self._v6)


def client_text(raw: bytes, v6: bool) -> str:
    """The client's address in a raw sockaddr as ``recvfrom`` gives it (scoped IPv6 ones with
    their zone)."""
    if not v6:
        return socket.inet_ntop(socket.AF_INET, raw[4:8])
    text = socket.inet_ntop(socket.AF_INET6, raw[8:24])
    scope = int.from_bytes(raw[24:28], sys.byteorder)
    if scope:  # with the zone's name, as getnameinfo gives it
        port = int.from_bytes(raw[2:4], "big")
        return socket.getnameinfo((text, port, 0, scope), socket.NI_NUMERICHOST)[0]
    return text


def address_of(raw: bytes, v6: bool) -> Any:
    """A raw sockaddr as ``recvfrom`` returns it, for ``sendto``."""
    port = int.from_bytes(raw[2:4], "big")
    if not v6:
        return (socket.inet_ntop(socket.AF_INET, raw[4:8]), port)
    host = socket.inet_ntop(socket.AF_INET6, raw[8:24])
    return (host, port, int.from_bytes(raw[4:8], "big"), int.from_bytes(raw[24:28], sys.byteorder))
