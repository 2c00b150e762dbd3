#!/usr/bin/env python3
"""A hostile local user of a shmxfer channel, for the tests: a process of its own that writes a
channel's SysV objects directly, as anyone allowed by the channel's mode can (`--mode 0666`).
Only the standard library (ctypes over libc), so it runs as any user.

    hostile_ipc.py gate KEY N             add N to the gate (GATE += N) once, then leave
    hostile_ipc.py forge-gate KEY SECS    for SECS, set the gate to 1 every millisecond
    hostile_ipc.py setval KEY NUM VALUE   set semaphore NUM of the channel's set to VALUE
    hostile_ipc.py tamper KEY LANE        rewrite the first byte of the chunk in slot 0 and the
                                          trailer's MD5 of file LANE's lane to match it

Offsets are docs/protocol.md's (version 6): they are the contract, and this helper reads it as
an outsider would.
"""
import ctypes
import hashlib
import struct
import sys
import time

libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
libc.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]

GATE = 0
SETVAL = 16
SLOTS_OFF = 1024
TRAILER_OFF = 9216
CONTROL_LEN = 53248


class SemBuf(ctypes.Structure):
    _fields_ = [("num", ctypes.c_ushort), ("op", ctypes.c_short), ("flg", ctypes.c_short)]


def check(r, what):
    if r == -1 or r is None:
        err = ctypes.get_errno()
        sys.exit(f"hostile_ipc: {what}: errno {err}")
    return r


def semid(key):
    return check(libc.semget(ctypes.c_int(key), 0, 0), f"semget {key:#x}")


def attach(key):
    shmid = check(libc.shmget(ctypes.c_int(key), ctypes.c_size_t(0), 0), f"shmget {key:#x}")
    addr = libc.shmat(shmid, None, 0)
    if addr is None or addr == ctypes.c_void_p(-1).value:
        sys.exit(f"hostile_ipc: shmat {key:#x}: errno {ctypes.get_errno()}")
    return addr


def gate(key, n):
    op = SemBuf(GATE, n, 0)
    check(libc.semop(semid(key), ctypes.byref(op), ctypes.c_size_t(1)), "semop")


def forge_gate(key, secs):
    sid = semid(key)
    end = time.monotonic() + secs
    while time.monotonic() < end:
        if libc.semctl(sid, GATE, SETVAL, ctypes.c_int(1)) == -1:
            return  # the channel went away
        time.sleep(0.001)


def tamper(key, lane):
    control = attach(key)
    content = attach(key + 1)
    desc = ctypes.string_at(control + SLOTS_OFF, 32)
    (length,) = struct.unpack_from("=Q", desc, 0)
    if length == 0:
        sys.exit("hostile_ipc: slot 0 holds no chunk")
    chunk = bytearray(ctypes.string_at(content, length))
    chunk[0] ^= 0xFF
    ctypes.memmove(content, bytes(chunk), length)
    digest = hashlib.md5(bytes(chunk)).digest()
    ctypes.memmove(control + TRAILER_OFF + 32 * lane + 16, digest, 16)
    print(digest.hex())


def main():
    cmd, key = sys.argv[1], int(sys.argv[2], 0)
    if cmd == "gate":
        gate(key, int(sys.argv[3]))
    elif cmd == "forge-gate":
        forge_gate(key, float(sys.argv[3]))
    elif cmd == "setval":
        check(libc.semctl(semid(key), int(sys.argv[3]), SETVAL, ctypes.c_int(int(sys.argv[4]))), "semctl")
    elif cmd == "tamper":
        tamper(key, int(sys.argv[3]))
    else:
        sys.exit(f"hostile_ipc: unknown command {cmd}")


if __name__ == "__main__":
    main()
