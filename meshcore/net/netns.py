"""Entering a pod's network namespace from a trio program, without leaking it into other work.

Why threads: ``setns(2)`` switches the namespace of the *calling thread* only, and a socket keeps the
namespace it was created in for its whole life. So ztunnel creates a pod's sockets in a worker thread
that has entered the pod's namespace, then hands them to trio, whose event loop thread never moves.

Why ``finally``: trio reuses worker threads. A thread that is not switched back would run the next
``trio.to_thread`` job (even a DNS lookup) inside the pod. Every entry here restores the thread's
original namespace before the thread is returned to the pool, and refuses to continue if it cannot.

Python 3.11 has no ``os.setns``, hence the ctypes call.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import trio

from meshcore.net.errors import NetnsError, NetnsRestoreError
from meshcore.net.sockopts import PROXY_MARK, set_freebind, set_mark, set_transparent

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = Path("/run/netns")

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.setns.restype = ctypes.c_int


def thread_netns_path() -> str:
    """The calling *thread's* namespace link (``/proc/self`` would name the main thread's)."""
    return "/proc/thread-self/ns/net"


def setns(fd: int, nstype: int = CLONE_NEWNET) -> None:
    """Move the calling thread into the namespace behind ``fd``."""
    if _libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns(fd={fd}): {os.strerror(err)}")


def netns_path(name_or_path: str) -> str:
    """Accept an ``ip netns`` name or a path (``/proc/PID/ns/net``, ``/run/netns/NAME``)."""
    return name_or_path if "/" in name_or_path else str(NETNS_RUN_DIR / name_or_path)


def open_netns(name_or_path: str) -> int:
    """An fd on a network namespace (close-on-exec); the caller owns and closes it."""
    path = netns_path(name_or_path)
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise NetnsError(f"cannot open network namespace {path}: {exc.strerror}", path=path) from exc


def netns_inode(fd: int | None = None) -> int:
    """The namespace's identity: the nsfs inode of ``fd``, or of the calling thread's namespace."""
    return os.fstat(fd).st_ino if fd is not None else os.stat(thread_netns_path()).st_ino


@contextlib.contextmanager
def entered_netns(netns_fd: int) -> Iterator[None]:
    """Run the body in the namespace behind ``netns_fd``; blocking code only (it moves the thread).

    Use it only inside a worker thread (see :func:`run_in_netns`), never on trio's own thread.
    """
    original = os.open(thread_netns_path(), os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            setns(netns_fd)
        except OSError as exc:
            raise NetnsError(
                f"cannot enter network namespace fd {netns_fd}: {exc}", path=f"fd {netns_fd}"
            ) from exc
        try:
            yield
        finally:
            try:
                setns(original)
            except OSError as exc:  # the thread is now unsafe to reuse: say so loudly
                raise NetnsRestoreError(
                    f"could not restore the worker thread's network namespace: {exc}"
                ) from exc
    finally:
        os.close(original)


def call_in_netns(netns_fd: int, fn: Callable[..., T], *args: object) -> T:
    """Blocking: ``fn(*args)`` inside the namespace, the thread restored afterwards."""
    with entered_netns(netns_fd):
        return fn(*args)


async def run_in_netns(netns_fd: int, fn: Callable[..., T], *args: object) -> T:
    """``fn(*args)`` in a trio worker thread that sits in the pod's namespace for the call only."""
    return await trio.to_thread.run_sync(call_in_netns, netns_fd, fn, *args)


def _tcp_listener(host: str, port: int, backlog: int, transparent: bool, family: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if transparent:
            set_transparent(sock)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _plain_socket(family: int, type: int, proto: int) -> socket.socket:
    sock = socket.socket(family, type, proto)
    sock.setblocking(False)
    return sock


async def listen_tcp_in_netns(
    netns_fd: int,
    host: str,
    port: int,
    *,
    backlog: int = 128,
    transparent: bool = False,
    family: int = socket.AF_INET,
) -> trio.socket.SocketType:
    """A listening TCP socket that lives in the pod's namespace, ready for ``trio.SocketListener``.

    ``transparent`` sets IP_TRANSPARENT before bind (needed by TPROXY targets and non-local binds).
    """
    sock = await run_in_netns(netns_fd, _tcp_listener, host, port, backlog, transparent, family)
    return trio.socket.from_stdlib_socket(sock)


async def socket_in_netns(
    netns_fd: int, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM, proto: int = 0
) -> trio.socket.SocketType:
    """An unbound socket made in the pod's namespace: set options (SO_MARK …), bind/connect in trio."""
    sock = await run_in_netns(netns_fd, _plain_socket, family, type, proto)
    return trio.socket.from_stdlib_socket(sock)


async def connect_tcp_from_netns(
    netns_fd: int,
    destination: tuple[str, int],
    *,
    mark: int | None = PROXY_MARK,
    source_ip: str | None = None,
) -> trio.SocketStream:
    """A proxy's own TCP connection made from inside the pod's namespace (TCP_NODELAY via SocketStream).

    ``mark`` (ztunnel's 0x539 by default) keeps the in-pod rules from capturing it again. With
    ``source_ip`` the socket is IP_TRANSPARENT + IP_FREEBIND and bound to that (foreign) address, so
    the app behind ``destination`` sees the original client as its peer (ztunnel's inbound leg).
    """
    sock = await socket_in_netns(netns_fd)
    try:
        if mark is not None:
            set_mark(sock, mark)
        if source_ip is not None:
            set_transparent(sock)
            set_freebind(sock)
            await sock.bind((source_ip, 0))
        await sock.connect(destination)
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)
