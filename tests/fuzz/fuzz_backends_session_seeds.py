#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_backends_iscsi_session: target byte streams after login.

The fuzzer's session has three commands outstanding when the stream starts: ITT 0x400 READ of
80 KiB, 0x401 WRITE of 128 KiB (64 KiB immediate, the rest by R2T), 0x402 SYNCHRONIZE CACHE,
CmdSN 1..3; no digests. Each seed is a plausible exchange (what tgtd and vcp target send).
Run from anywhere: python3 tests/fuzz/fuzz_backends_session_seeds.py
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus", "fuzz_backends_iscsi_session")
RESERVED = 0xFFFFFFFF
READ, WRITE, FLUSH = 0x400, 0x401, 0x402
LUN1 = 0x0001000000000000
EXP, MAX = 4, 35


class Stream:
    def __init__(self):
        self.out = b""
        self.stat_sn = 2

    def pdu(self, op, flags, itt, b2=0, b3=0, lun=0, f20=RESERVED, sn=True, rest=b"", data=b""):
        stat = self.stat_sn
        if sn:
            self.stat_sn += 1
        head = struct.pack(">BBBBB", op, flags, b2, b3, 0) + len(data).to_bytes(3, "big")
        head += struct.pack(">QIIIII", lun, itt, f20, stat, EXP, MAX) + rest
        self.out += head.ljust(48, b"\0") + data + b"\0" * (-len(data) % 4)
        return self

    def data_in(self, itt, offset, data, data_sn, status=None):
        flags = 0x80 | 0x01 if status is not None else 0
        rest = struct.pack(">III", data_sn, offset, 0)
        return self.pdu(0x25, flags, itt, b3=status or 0, sn=status is not None, rest=rest, data=data)

    def response(self, itt, status=0, sense=b""):
        seg = struct.pack(">H", len(sense)) + sense if sense else b""
        return self.pdu(0x21, 0x80, itt, b3=status, f20=0, rest=struct.pack(">III", 0, 0, 0), data=seg)

    def r2t(self, itt, ttt, offset, length, r2t_sn=0):
        return self.pdu(0x31, 0x80, itt, lun=LUN1, f20=ttt, sn=False, rest=struct.pack(">III", r2t_sn, offset, length))

    def nop_in(self, ttt, data=b""):
        return self.pdu(0x20, 0x80, RESERVED, lun=LUN1, f20=ttt, sn=False, data=data)

    def async_msg(self, event, p1=0, p2=0, p3=0, data=b""):
        return self.pdu(0x32, 0x80, RESERVED, lun=LUN1, f20=0, rest=struct.pack(">BBHHH", event, 0, p1, p2, p3), data=data)

    def reject(self, itt, reason=0x09):
        bad = struct.pack(">BBBBB", 0x01, 0x80, 0, 0, 0) + b"\0\0\0" + struct.pack(">QI", LUN1, itt)
        return self.pdu(0x3F, 0x80, RESERVED, b2=reason, f20=0, data=bad.ljust(48, b"\0"))

    def tmf_response(self, itt, response=0):
        return self.pdu(0x22, 0x80, itt, b2=response, f20=0)


def pattern(n, seed):
    return bytes((seed + i * 7) & 0xFF for i in range(n))


def ua_sense():
    return bytes([0x70, 0, 0x06, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x29, 0x00, 0, 0, 0, 0])


def seeds():
    s = {}
    # The read in small Data-In PDUs (many per receive), status on the last.
    st = Stream()
    for k in range(10):
        st.data_in(READ, k * 8192, pattern(8192, k), k, status=0 if k == 9 else None)
    s["read-8k-pdus"] = st.out
    # The read as one 80 KiB Data-In: larger than the staging buffer, so received into the iovecs.
    s["read-one-pdu"] = Stream().data_in(READ, 0, pattern(80 * 1024, 1), 0, status=0).out
    # The write: one R2T for the non-immediate half, then GOOD; flush GOOD.
    s["write-r2t"] = Stream().r2t(WRITE, 0x10, 65536, 65536).response(WRITE).response(FLUSH).out
    # Two R2Ts queued behind each other, then the response.
    s["write-two-r2t"] = Stream().r2t(WRITE, 0x10, 65536, 32768).r2t(WRITE, 0x11, 98304, 32768, 1).response(WRITE).out
    # Unit attention on the flush (reissued), BUSY on the write (retried later).
    s["ua-busy"] = Stream().response(FLUSH, 0x02, ua_sense()).response(WRITE, 0x08).out
    # Target pings (answered), one with data.
    s["nop-in"] = Stream().nop_in(0x99).nop_in(0x9A, b"ping-data").out
    # Async: SCSI event, renegotiation, logout request, dropped connection.
    s["async-scsi-event"] = Stream().async_msg(0, data=struct.pack(">H", 18) + ua_sense()).out
    s["async-renegotiate"] = Stream().async_msg(4).out
    s["async-logout"] = Stream().async_msg(1, p3=2).out
    s["async-drop"] = Stream().async_msg(2, p2=0, p3=20).out
    # A Reject of the write's command; a TMF response nobody asked for.
    s["reject"] = Stream().reject(WRITE).tmf_response(0x41000001).out
    # Everything in one stream.
    st = Stream()
    st.nop_in(0x5)
    for k in range(10):
        st.data_in(READ, k * 8192, pattern(8192, k), k, status=0 if k == 9 else None)
    st.r2t(WRITE, 0x10, 65536, 65536).response(WRITE).response(FLUSH, 0x02, ua_sense()).async_msg(4)
    s["mixed"] = st.out
    return s


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, data in seeds().items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
    print(f"wrote {len(seeds())} seeds to {OUT}")


if __name__ == "__main__":
    main()
