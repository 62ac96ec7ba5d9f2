"""A bare iSCSI initiator for target tests that need what no real initiator does (send commands
and not read the answers): login, READ(16), TEST UNIT READY and reading answers, over a plain
socket to 127.0.0.1. Used by target_tools.sh (modes noread, limits, fdlimit and targets)."""
import socket
import struct
import sys


def rss(pid):
    """The process's resident set size in kB."""
    return int([l.split()[1] for l in open("/proc/%s/status" % pid) if l.startswith("VmRSS")][0])


def login(port, iqn, name, isid):
    """A Normal session straight into Full Feature Phase (no digests, 1 MiB segments);
    returns the socket and the CmdSN to use next. Exits on a refusal."""
    keys = b"\0".join([b"InitiatorName=iqn.2024-01.org.vcp:" + name, b"TargetName=" + iqn, b"SessionType=Normal",
                       b"HeaderDigest=None", b"DataDigest=None", b"MaxRecvDataSegmentLength=1048576",
                       b"ErrorRecoveryLevel=0"]) + b"\0"
    s = socket.create_connection(("127.0.0.1", port))
    bhs = bytearray(48)
    bhs[0] = 0x43
    bhs[1] = 0x80 | (1 << 2) | 3  # immediate Login Request, T, CSG 1 -> NSG 3
    bhs[5:8] = len(keys).to_bytes(3, "big")
    bhs[8:14] = bytes([0x80, 0, 0, 0, 0, isid])
    struct.pack_into(">IHHII", bhs, 16, 1, 0, 0, 1, 0)  # ITT, CID, reserved, CmdSN, ExpStatSN
    s.sendall(bytes(bhs) + keys + b"\0" * (-len(keys) % 4))
    rsp = s.recv(48, socket.MSG_WAITALL)
    if len(rsp) < 48:
        sys.exit("login: the connection closed without an answer")
    text = s.recv((int.from_bytes(rsp[5:8], "big") + 3) // 4 * 4, socket.MSG_WAITALL)
    if rsp[36] != 0:
        sys.exit("login refused: class %d detail %d" % (rsp[36], rsp[37]))
    # The keys the target answered with (TargetAlias, ...), for who wants them.
    login.keys = dict(kv.split(b"=", 1) for kv in text.split(b"\0") if b"=" in kv)
    return s, struct.unpack(">I", rsp[24:28])[0]


def read16(itt, cmd_sn, lba, blocks, lun=2):
    """A READ(16) SCSI Command PDU."""
    c = bytearray(48)
    c[0] = 0x01
    c[1] = 0x80 | 0x40 | 1  # SCSI Command: F, R, SIMPLE
    c[9] = lun
    struct.pack_into(">IIII", c, 16, itt, blocks * 512, cmd_sn, 0)
    c[32] = 0x88
    struct.pack_into(">QI", c, 34, lba, blocks)
    return bytes(c)


def tur_status(s, cmd_sn, lun=2):
    """TEST UNIT READY and its answer: (status, ASC, ASCQ of the sense data, or None)."""
    c = bytearray(48)
    c[0] = 0x01
    c[1] = 0x80 | 1
    c[9] = lun
    struct.pack_into(">IIII", c, 16, 1, 0, cmd_sn, 0)
    s.sendall(bytes(c))
    h = s.recv(48, socket.MSG_WAITALL)
    dsl = int.from_bytes(h[5:8], "big")
    data = s.recv((dsl + 3) // 4 * 4, socket.MSG_WAITALL) if dsl else b""
    sense = data[2:]  # after SenseLength
    return h[3], (sense[12] if len(sense) > 13 else None), (sense[13] if len(sense) > 13 else None)


def command(s, itt, cmd_sn, cdb, lun, data_out=b"", data_in=0):
    """One SCSI command (data_out sent as immediate data, data_in bytes of room) and its answer:
    (status, sense key or None, ASC, ASCQ, data in)."""
    c = bytearray(48)
    c[0] = 0x01
    c[1] = 0x80 | (0x40 if data_in else 0) | (0x20 if data_out else 0) | 1  # F, R, W, SIMPLE
    c[9] = lun
    c[5:8] = len(data_out).to_bytes(3, "big")
    struct.pack_into(">IIII", c, 16, itt, data_in or len(data_out), cmd_sn, 0)
    c[32:32 + len(cdb)] = cdb
    s.sendall(bytes(c) + data_out + b"\0" * (-len(data_out) % 4))
    got = b""
    while True:
        h = s.recv(48, socket.MSG_WAITALL)
        if len(h) < 48:
            sys.exit("connection closed")
        dsl = int.from_bytes(h[5:8], "big")
        data = s.recv((dsl + 3) // 4 * 4, socket.MSG_WAITALL)[:dsl] if dsl else b""
        if h[0] & 0x3f == 0x25:  # Data-In
            got += data
            if h[1] & 1:
                return h[3], None, None, None, got
        elif h[0] & 0x3f == 0x21:  # SCSI Response
            sense = data[2:]
            if len(sense) > 13:
                return h[3], sense[2] & 0x0f, sense[12], sense[13], got
            return h[3], None, None, None, got


def pr_out(s, itt, cmd_sn, action, key, sa_key, pr_type=0, aptpl=False, lun=0):
    """PERSISTENT RESERVE OUT (SPC-4): returns command()'s answer."""
    cdb = bytes([0x5f, action, pr_type, 0, 0, 0, 0, 0, 24, 0])
    param = struct.pack(">QQ", key, sa_key) + bytes([0, 0, 0, 0, 1 if aptpl else 0, 0, 0, 0])
    return command(s, itt, cmd_sn, cdb, lun, data_out=param)


def pr_in(s, itt, cmd_sn, action, lun=0):
    """PERSISTENT RESERVE IN: READ KEYS (0) gives (generation, [keys]); READ RESERVATION (1)
    (generation, key, type) or (generation, None, None); REPORT CAPABILITIES (2) the raw 8 bytes."""
    status, _, _, _, data = command(s, itt, cmd_sn, bytes([0x5e, action, 0, 0, 0, 0, 0, 4, 0, 0]), lun, data_in=1024)
    if status != 0:
        sys.exit("PERSISTENT RESERVE IN %d: status %d" % (action, status))
    if action == 2:
        return data
    gen, length = struct.unpack(">II", data[:8])
    if action == 0:
        return gen, [struct.unpack(">Q", data[8 + i:16 + i])[0] for i in range(0, length, 8)]
    if length == 0:
        return gen, None, None
    return gen, struct.unpack(">Q", data[8:16])[0], data[21] & 0x0f


def tur(s, cmd_sn, lun=2):
    """TEST UNIT READY, its answer read (the power-on unit attention); returns the next CmdSN."""
    tur_status(s, cmd_sn, lun)
    return cmd_sn + 1


def unit_attention_across(port, iqn, name, isid, lun, pid, log, marker, change):
    """A bare session on `lun` past its power-on unit attention; then change() and a SIGHUP to
    `pid`, and once `marker` shows in the log file, two TEST UNIT READYs: prints their
    (status, ASC, ASCQ) as "after: ... then: ..." (a unit attention the reload raised, then
    GOOD)."""
    import os, signal, time
    s, cmd_sn = login(port, iqn, name, isid)
    tur_status(s, cmd_sn, lun)
    if tur_status(s, cmd_sn + 1, lun)[0] != 0:
        sys.exit("LUN %d not ready" % lun)
    change()
    os.kill(pid, signal.SIGHUP)
    for _ in range(100):
        if marker in open(log).read():
            break
        time.sleep(0.05)
    print("after:", tur_status(s, cmd_sn + 2, lun), "then:", tur_status(s, cmd_sn + 3, lun))


def answers(s, n):
    """Reads until n commands have their status (GOOD, or exits); returns data bytes per ITT."""
    got, done = {}, 0
    while done < n:
        h = s.recv(48, socket.MSG_WAITALL)
        if len(h) < 48:
            sys.exit("connection closed")
        dsl = int.from_bytes(h[5:8], "big")
        if dsl:
            s.recv((dsl + 3) // 4 * 4, socket.MSG_WAITALL)
        itt = struct.unpack(">I", h[16:20])[0]
        if h[0] & 0x3f == 0x25:  # Data-In
            got[itt] = got.get(itt, 0) + dsl
            if h[1] & 1:  # S: status with it
                if h[3] != 0:
                    sys.exit("status %d" % h[3])
                done += 1
        elif h[0] & 0x3f == 0x21:  # SCSI Response
            if h[3] != 0:
                sys.exit("status %d" % h[3])
            done += 1
    return got


def connect(port, n):
    """n TCP connections to the target, nothing sent on them."""
    return [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]


def closed_by_peer(conns):
    """How many of the connections the target has closed (EOF or reset), without waiting."""
    closed = 0
    for c in conns:
        c.setblocking(False)
        try:
            closed += c.recv(1) == b""
        except BlockingIOError:
            pass
        except ConnectionResetError:
            closed += 1
    return closed
