#!/usr/bin/env python3
"""A hostile local user of a shmxfer channel, for the tests: a process of its own that writes a
channel's SysV objects directly, as anyone allowed by the channel's mode can (`--mode 0666`).
Only the standard library (ctypes over libc), so it runs as any user.

    hostile_ipc.py gate KEY N             add N to the gate (GATE += N) once, then leave
    hostile_ipc.py forge-gate KEY SECS    for SECS, set the gate to 1 every millisecond
    hostile_ipc.py setval KEY NUM VALUE   set semaphore NUM of the channel's set to VALUE
    hostile_ipc.py hold KEY NUM VALUE SECS  for SECS, set semaphore NUM to VALUE every millisecond
    hostile_ipc.py tamper KEY             try to attach for writing the receiver's control segment
                                          and the sender's segment named at the rendezvous, and
                                          rewrite the slot, the trailer's MD5 and the answer's
                                          digest; print what the kernel allowed
    hostile_ipc.py scribble KEY           try to overwrite the header's version and the
                                          rendezvous id; scribble over the ticket and the segment
                                          id at the rendezvous; leave
    hostile_ipc.py steal KEY SECS         for SECS, make a segment of our own, stamped for the
                                          channel's current session, and name it at the
                                          rendezvous as fast as we can, taking any ticket

Offsets are docs/protocol.md's (version 7): they are the contract, and this helper reads it as
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
libc.shmctl.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
libc.shmget.argtypes = [ctypes.c_int, ctypes.c_size_t, ctypes.c_int]

SHM_RDONLY = 0o10000
IPC_PRIVATE = 0
IPC_CREAT = 0o1000
IPC_RMID = 0
RING_OFF = 53248

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


def try_attach(shmid, flags):
    """The address, or None and the errno."""
    addr = libc.shmat(shmid, None, flags)
    if addr is None or addr == ctypes.c_void_p(-1).value:
        return None, ctypes.get_errno()
    return addr, 0


def shmid_at(key):
    return check(libc.shmget(ctypes.c_int(key), ctypes.c_size_t(0), 0), f"shmget {key:#x}")


def u32(addr, off):
    return struct.unpack("=I", ctypes.string_at(addr + off, 4))[0]


def say(what, addr, err):
    print(f"{what}: {'attached for writing' if addr else f'denied (errno {err})'}")


def tamper(key):
    ctl, err = try_attach(shmid_at(key), 0)
    say("control", ctl, err)
    rdv = attach(key + 1)
    seg_id = struct.unpack("=i", ctypes.string_at(rdv + 4, 4))[0]
    seg, err = try_attach(seg_id, 0)
    say("segment", seg, err)
    ro, err = try_attach(seg_id, SHM_RDONLY)
    print(f"segment read: {'attached' if ro else f'denied (errno {err})'}")
    if seg:
        # The slot, the trailer of lane 1 and, if we may, the answer's digest.
        length = struct.unpack("=Q", ctypes.string_at(seg + SLOTS_OFF, 8))[0]
        chunk = bytearray(ctypes.string_at(seg + RING_OFF, length))
        if chunk:
            chunk[0] ^= 0xFF
        ctypes.memmove(seg + RING_OFF, bytes(chunk), length)
        digest = hashlib.md5(bytes(chunk)).digest()
        ctypes.memmove(seg + TRAILER_OFF + 32 + 16, digest, 16)
        if ctl:
            ctypes.memmove(ctl + 14336 + 512 + 8 + 264, digest, 16)


def scribble(key):
    ctl, err = try_attach(shmid_at(key), 0)
    say("control", ctl, err)
    if ctl:
        ctypes.memmove(ctl + 8, struct.pack("=I", 5), 4)
        ctypes.memmove(ctl + 36, struct.pack("=I", 999999), 4)
    rdv = attach(key + 1)
    ctypes.memmove(rdv, struct.pack("=Ii", 0x12345, 999999), 8)


def steal(key, secs):
    ctl_id = shmid_at(key)
    ctl, err = try_attach(ctl_id, SHM_RDONLY)
    if not ctl:
        sys.exit(f"hostile_ipc: cannot read the control segment: errno {err}")
    slot_size = struct.unpack("=Q", ctypes.string_at(ctl + 16, 8))[0]
    slots = u32(ctl, 24)
    size = RING_OFF + slot_size * slots
    own = check(libc.shmget(IPC_PRIVATE, size, IPC_CREAT | 0o644), "shmget private")
    seg, err = try_attach(own, 0)
    libc.shmctl(own, IPC_RMID, None)
    ctypes.memmove(seg, b"SHMXSND\0" + struct.pack("=Ii", 7, ctl_id), 16)
    rdv = attach(key + 1)
    end = time.monotonic() + secs
    while time.monotonic() < end:
        ctypes.memmove(seg + 16, struct.pack("=I", u32(ctl, 132)), 4)
        if u32(rdv, 0) != 0:
            ctypes.memmove(rdv, struct.pack("=I", 0), 4)
        if struct.unpack("=i", ctypes.string_at(rdv + 4, 4))[0] != own:
            ctypes.memmove(rdv + 4, struct.pack("=i", own), 4)
        time.sleep(0.0001)


def main():
    cmd, key = sys.argv[1], int(sys.argv[2], 0)
    if cmd == "gate":
        gate(key, int(sys.argv[3]))
    elif cmd == "forge-gate":
        forge_gate(key, float(sys.argv[3]))
    elif cmd == "setval":
        check(libc.semctl(semid(key), int(sys.argv[3]), SETVAL, ctypes.c_int(int(sys.argv[4]))), "semctl")
    elif cmd == "hold":
        sid, num, value = semid(key), int(sys.argv[3]), int(sys.argv[4])
        end = time.monotonic() + float(sys.argv[5])
        while time.monotonic() < end:
            if libc.semctl(sid, num, SETVAL, ctypes.c_int(value)) == -1:
                return
            time.sleep(0.001)
    elif cmd == "tamper":
        tamper(key)
    elif cmd == "scribble":
        scribble(key)
    elif cmd == "steal":
        steal(key, float(sys.argv[3]))
    else:
        sys.exit(f"hostile_ipc: unknown command {cmd}")


if __name__ == "__main__":
    main()
