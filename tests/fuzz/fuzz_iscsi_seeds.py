#!/usr/bin/env python3
"""Writes the seed corpora of fuzz_iscsi_pdu and fuzz_iscsi_text (small valid inputs).

fuzz_iscsi_pdu input: 1 byte of digest flags (bit 0 header, bit 1 data), then one PDU.
fuzz_iscsi_text input: initiator text, 0xff, target text.
Run from anywhere: python3 tests/fuzz/fuzz_iscsi_seeds.py
"""
import os
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def bhs(op, flags, dsl=0, lun=0, itt=0, rest=b"", b2=0, b3=0, ahs=0):
    head = struct.pack(">BBBBB", op, flags, b2, b3, ahs) + dsl.to_bytes(3, "big")
    head += struct.pack(">QI", lun, itt) + rest
    return head.ljust(48, b"\0")


def pdu(header, data=b"", hd=False, dd=False, ahs=b""):
    out = header + ahs
    if hd:
        out += struct.pack("<I", crc32c(out))
    if data:
        padded = data + b"\0" * (-len(data) % 4)
        out += padded
        if dd:
            out += struct.pack("<I", crc32c(padded))
    return bytes([(1 if hd else 0) | (2 if dd else 0)]) + out


def text(*pairs):
    return b"".join(k.encode() + b"=" + v.encode() + b"\0" for k, v in pairs)


def write(name, seeds):
    d = os.path.join(HERE, "corpus", name)
    os.makedirs(d, exist_ok=True)
    for fname, blob in seeds.items():
        with open(os.path.join(d, fname), "wb") as f:
            f.write(blob)


assert crc32c(bytes(32)) == 0x8A9136AA
login_text = text(("InitiatorName", "iqn.2024-01.org.vcp:host"),
                  ("TargetName", "iqn.2024-01.org.vcp:disk0"),
                  ("SessionType", "Normal"), ("AuthMethod", "CHAP,None"))
read10 = bytes([0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0]).ljust(16, b"\0")
write("fuzz_iscsi_pdu", {
    "nop_out": pdu(bhs(0x40, 0x80, itt=1, rest=struct.pack(">III", 0xFFFFFFFF, 1, 1))),
    "login_request": pdu(bhs(0x43, 0x81, len(login_text), lun=0x80000000000100 << 8 >> 8,
                             itt=0, rest=struct.pack(">HHII", 0, 0, 1, 0)), login_text),
    "scsi_read": pdu(bhs(0x01, 0xC1, itt=7, lun=1 << 48,
                         rest=struct.pack(">III", 4096, 2, 3) + read10), hd=True),
    "scsi_write_imm": pdu(bhs(0x01, 0xA1, 512, itt=8, lun=1 << 48,
                              rest=struct.pack(">III", 512, 3, 3) + read10), b"\xab" * 512,
                          hd=True, dd=True),
    "scsi_cmd_ahs": pdu(bhs(0x01, 0xC1, itt=9, ahs=5,
                            rest=struct.pack(">III", 4096, 4, 3) + read10),
                        ahs=struct.pack(">HBB", 17, 1, 0) + bytes(range(16))),
    "data_in_status": pdu(bhs(0x25, 0x81, 5, itt=7, lun=1 << 48, b3=0,
                              rest=struct.pack(">IIIIIII", 0xFFFFFFFF, 10, 3, 40, 0, 0, 0)),
                          b"hello", dd=True),
    "r2t": pdu(bhs(0x31, 0x80, itt=8, rest=struct.pack(">IIIIIII", 0x10, 11, 4, 40, 0, 512,
                                                         4096))),
    "reject": pdu(bhs(0x3F, 0x80, 48, itt=0xFFFFFFFF, b2=0x09,
                      rest=struct.pack(">IIII", 0, 12, 4, 40)), bhs(0x1C, 0x80)),
    "text_sendtargets": pdu(bhs(0x04, 0x80, 16, itt=3, rest=struct.pack(">III", 0xFFFFFFFF, 5, 6)),
                            text(("SendTargets", "All"))),
    "logout": pdu(bhs(0x46, 0x80, itt=4, rest=struct.pack(">HHII", 0, 0, 6, 7))),
})
write("fuzz_iscsi_text", {
    "security": login_text + b"\xff" + text(("AuthMethod", "CHAP"), ("TargetPortalGroupTag", "1")),
    "operational": text(("HeaderDigest", "CRC32C,None"), ("DataDigest", "None"),
                        ("MaxRecvDataSegmentLength", "262144"), ("MaxBurstLength", "1048576"),
                        ("FirstBurstLength", "65536"), ("InitialR2T", "No"),
                        ("ImmediateData", "Yes"), ("ErrorRecoveryLevel", "0"),
                        ("DefaultTime2Wait", "2"), ("MaxConnections", "1")) + b"\xff" +
                   text(("HeaderDigest", "CRC32C"), ("MaxBurstLength", "262144"),
                        ("MaxRecvDataSegmentLength", "65536")),
    "chap": text(("CHAP_A", "5")) + b"\xff" +
            text(("CHAP_A", "5"), ("CHAP_I", "7"), ("CHAP_C", "0x" + "ab" * 16)),
    "chap_response": text(("CHAP_N", "user"), ("CHAP_R", "0x" + "00" * 16),
                          ("CHAP_I", "9"), ("CHAP_C", "0b" + "AAECAwQFBgcICQoLDA0ODw==")),
    "discovery": text(("InitiatorName", "iqn.x"), ("SessionType", "Discovery"),
                      ("AuthMethod", "None"), ("X-com.example", "1")),
    "markers": text(("IFMarker", "No"), ("OFMarkInt", "2048~8192"), ("MaxBurstLength", "0x10")),
})
