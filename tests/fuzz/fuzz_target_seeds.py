#!/usr/bin/env python3
"""Writes seed inputs for fuzz_target_intake (tests/fuzz/corpus/fuzz_target_intake/).

Each seed: a flags byte (1 = log in first, 2/4 = header/data digests, 8 = discovery), a chunk
size byte, then initiator PDUs as they go on the wire (no digests: seeds use flags without them
except where the digest is what is being exercised, in which case the digest bytes are zero and
the target is expected to drop the connection).
"""
import os
import struct
import sys

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus", "fuzz_target_intake")


def pad(b):
    return b + b"\0" * ((4 - len(b) % 4) % 4)


def bhs(op, flags, data=b"", lun=0, itt=0, f20=0, f24=0, f28=0, f32=0, f36=0, f40=0, f44=0, imm=False, cdb=None):
    h = bytearray(48)
    h[0] = (0x40 if imm else 0) | op
    h[1] = flags
    h[5:8] = len(data).to_bytes(3, "big")
    h[8:16] = struct.pack(">Q", lun << 48)
    struct.pack_into(">IIIII", h, 16, itt, f20, f24, f28, f32)
    if cdb is not None:
        h[32:48] = cdb.ljust(16, b"\0")
    else:
        struct.pack_into(">III", h, 36, f36, f40, f44)
    return bytes(h) + pad(data)


def scsi(itt, cmd_sn, cdb, edtl=0, read=False, write=False, final=True, data=b""):
    flags = (0x80 if final else 0) | (0x40 if read else 0) | (0x20 if write else 0) | 1
    return bhs(0x01, flags, data, itt=itt, f20=edtl, f24=cmd_sn, cdb=cdb)


def rw16(op, lba, blocks):
    return bytes([op, 0]) + struct.pack(">QI", lba, blocks) + b"\0\0"


def data_out(itt, ttt, data_sn, offset, data, final=True):
    return bhs(0x05, 0x80 if final else 0, data, itt=itt, f20=ttt, f36=data_sn, f40=offset)


def nop(itt, cmd_sn, data=b""):
    return bhs(0x00, 0x80, data, itt=itt, f20=0xFFFFFFFF, f24=cmd_sn, imm=True)


def tmf(itt, cmd_sn, fn, ref_itt=0xFFFFFFFF, ref_cmd_sn=0):
    return bhs(0x02, 0x80 | fn, itt=itt, f20=ref_itt, f24=cmd_sn, f32=ref_cmd_sn, imm=True)


def text(itt, cmd_sn, kv):
    return bhs(0x04, 0x80, kv, itt=itt, f20=0xFFFFFFFF, f24=cmd_sn)


def logout(itt, cmd_sn, reason=0):
    return bhs(0x06, 0x80 | reason, itt=itt, f24=cmd_sn, imm=True)


def login_req(itt, kv):
    # CSG 1 -> NSG 3, T=1, immediate (the I bit is always set on Login)
    return bhs(0x03, 0x80 | (1 << 2) | 3, kv, itt=itt, imm=True)


tur = bytes([0, 0, 0, 0, 0, 0])
inquiry = bytes([0x12, 0, 0, 0, 96, 0])
blk = bytes(range(256)) * 2

seeds = {
    "inquiry_read": (1, 0, scsi(1, 1, inquiry, 96, read=True) + scsi(2, 2, tur) + scsi(3, 3, rw16(0x88, 0, 8), 4096, read=True)),
    "write_immediate_r2t": (1, 0, scsi(1, 1, tur) + scsi(2, 2, rw16(0x8A, 0, 4), 2048, write=True, data=blk)
                            + data_out(2, 1, 0, 512, blk * 3)),
    "write_unsolicited": (1, 0, scsi(1, 1, rw16(0x8A, 8, 2), 1024, write=True, final=False)
                          + data_out(1, 0xFFFFFFFF, 0, 0, blk) + data_out(1, 0xFFFFFFFF, 1, 512, blk)),
    "bad_datasn": (1, 0, scsi(1, 1, rw16(0x8A, 0, 2), 1024, write=True) + data_out(1, 1, 5, 0, blk * 2)),
    "nop_tmf_logout": (1, 0, nop(1, 1, b"ping") + tmf(2, 1, 5) + tmf(3, 1, 1, 0x77, 0) + tmf(4, 1, 6)
                       + logout(5, 1)),
    "cmdsn_window": (1, 0, scsi(1, 5, tur) + scsi(2, 0, tur) + scsi(3, 2, tur) + scsi(4, 1, tur)),
    "abort_waiting_write": (1, 0, scsi(1, 1, rw16(0x8A, 0, 64), 32768, write=True) + tmf(2, 2, 1, 1, 1)
                            + data_out(1, 1, 0, 0, blk)),
    "discovery": (9, 0, text(1, 1, b"SendTargets=All\0") + text(2, 2, b"X-vendor=1\0MaxBurstLength=512\0")
                  + scsi(3, 3, tur) + logout(4, 3)),
    "byte_stream": (1, 1, scsi(1, 1, inquiry, 96, read=True) + nop(2, 2)),
    "digests": (7, 0, scsi(1, 1, tur)),
    "login_raw": (0, 0, login_req(1, b"InitiatorName=iqn.x\0TargetName=iqn.2024-01.org.vcp:fuzz\0SessionType=Normal\0")
                  + scsi(2, 0, tur)),
    "unknown_opcode": (1, 0, bhs(0x1B, 0x80) + bhs(0x10, 0x80) + nop(1, 1)),
    "oversized_segment": (1, 0, bhs(0x00, 0x80, b"", itt=1)[:5] + b"\x10\0\0" + bytes(40)),
    # Delivered in 200-byte pieces: headers arrive before their data, so 8 KiB and larger
    # segments take the direct path into the task buffer.
    "direct_write_read": (1, 200, scsi(1, 1, rw16(0x8A, 0, 48), 24576, write=True, data=blk * 16)
                          + data_out(1, 1, 0, 8192, blk * 32) + scsi(2, 2, rw16(0x88, 0, 48), 24576, read=True)),
    # Two 512 KiB WRITEs fill the 1 MiB buffer room: the READ and the third WRITE wait; the
    # third is aborted while waiting; data for the first comes in.
    "buffer_room": (1, 0, scsi(1, 1, rw16(0x8A, 0, 1024), 524288, write=True)
                    + scsi(2, 2, rw16(0x8A, 1024, 1024), 524288, write=True)
                    + scsi(3, 3, rw16(0x88, 0, 1024), 524288, read=True)
                    + scsi(4, 4, rw16(0x8A, 0, 1024), 524288, write=True) + tmf(5, 5, 1, 4, 4)
                    + data_out(1, 1, 0, 0, blk * 32)),
    "direct_write_bad_offset": (1, 200, scsi(1, 1, rw16(0x8A, 0, 48), 24576, write=True, data=blk * 16)
                                + data_out(1, 1, 0, 4096, blk * 32)),
}

os.makedirs(OUT, exist_ok=True)
for name, (flags, chunk, stream) in seeds.items():
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(bytes([flags, chunk]) + stream)
print(f"wrote {len(seeds)} seeds to {OUT}")
