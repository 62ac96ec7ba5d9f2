// The zero-copy data path: Data-In sent from the task's buffer (headers and digests apart), and
// large Data-Out / immediate data received straight into it. Digests, data split over many
// PDUs, hostile Data-Out on the direct path, and the buffer lifetime when a connection drops or
// a task is aborted or reset while its data is still on the move.
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include "harness.hpp"
#include "iscsi/crc32c.hpp"

namespace vcp::target::test {
namespace {

using namespace vcp::iscsi;

// Target MaxRecvDataSegmentLength 8 KiB (every Data-Out of a large write is one direct-path
// candidate), initiator MaxRecvDataSegmentLength 12 KiB (many Data-In PDUs per read, each
// above the 8 KiB the target still copies).
TargetSettings small_segments() {
  TargetSettings s = TargetFixture::default_settings();
  s.limits.max_recv_data_segment_length = 8192;
  return s;
}

SessionOptions small_segments_with_digests() {
  SessionOptions o;
  o.limits.max_recv_data_segment_length = 12288;
  o.limits.header_digest = DigestPolicy::Require;
  o.limits.data_digest = DigestPolicy::Require;
  return o;
}

// Sends the first `part` bytes of a PDU; returns the rest.
std::vector<uint8_t> send_part(Initiator& ini, const Pdu& hdr, std::span<const uint8_t> data, size_t part) {
  std::vector<uint8_t> wire(pdu_length(total_ahs_length_of(hdr), data_segment_length_of(hdr), ini.digests));
  EXPECT_EQ(encode_pdu(hdr, {}, data, ini.digests, wire), wire.size());
  ini.send_raw(std::span(wire).first(part));
  return {wire.begin() + static_cast<ptrdiff_t>(part), wire.end()};
}

// A logged-in session past the power-on unit attention.
struct Session {
  TargetFixture f;
  Initiator ini;
  explicit Session(SessionOptions o = small_segments_with_digests(), TargetSettings s = TargetFixture::default_settings())
      : f(std::move(s)), ini(f, std::move(o)) {
    EXPECT_EQ(ini.login(), LoginState::FullFeature);
    ini.tur();
  }
  // WRITE(16) of data at lba; true if it ended GOOD.
  bool write(uint64_t lba, const std::vector<uint8_t>& data) {
    const auto n = static_cast<uint32_t>(data.size());
    return outcome_of(ini.run(cdb_rw16(0x8a, lba, n / 512), false, true, n, data)).status == 0;
  }
  uint32_t read_command(uint64_t lba, uint32_t len) { return ini.command(cdb_rw16(0x88, lba, len / 512), true, false, len); }
  // A write at LBA 0 without immediate data, and the first `part` bytes of the one Data-Out
  // answering its R2T; returns the rest of that PDU.
  std::vector<uint8_t> start_data_out(std::span<const uint8_t> data, size_t part) {
    const auto len = static_cast<uint32_t>(data.size());
    const uint32_t itt = ini.command(cdb_rw16(0x8a, 0, len / 512), false, true, len);
    auto got = ini.take();
    EXPECT_EQ(got.size(), 1u);
    if (got.empty() || !got[0].as<R2TPdu>()) return {};
    DataOutPdu d;
    d.final = true;
    d.itt = itt;
    d.ttt = got[0].as<R2TPdu>()->ttt;
    d.data_segment_length = len;
    return send_part(ini, d, data, part);
  }
};


std::vector<Received> decode_all(std::span<const uint8_t> bytes, Digests d) {
  std::vector<Received> out;
  size_t off = 0;
  while (off + kBhsSize <= bytes.size()) {
    Bhs bhs;
    std::memcpy(bhs.bytes.data(), &bytes[off], kBhsSize);
    const size_t len = pdu_length(bhs, d);
    if (off + len > bytes.size()) break;
    PduParts parts;
    EXPECT_EQ(decode_pdu(bytes.subspan(off, len), d, parts, {Direction::FromTarget, kMaxDataSegmentLength}),
              PduError::Ok);
    out.push_back({parts.header, std::vector<uint8_t>(parts.data.begin(), parts.data.end())});
    off += len;
  }
  EXPECT_EQ(off, bytes.size());
  return out;
}

// The Data-In of one ITT, reassembled.
std::vector<uint8_t> data_in_of(const std::vector<Received>& pdus, uint32_t itt) {
  std::vector<uint8_t> data;
  for (const auto& r : pdus)
    if (const auto* d = r.as<DataInPdu>(); d && d->itt == itt) {
      if (data.size() < d->buffer_offset + r.data.size()) data.resize(d->buffer_offset + r.data.size());
      std::memcpy(data.data() + d->buffer_offset, r.data.data(), r.data.size());
    }
  return data;
}

TEST(TargetZeroCopy, DigestsAndManySmallPdusBothWays) {
  Session s(small_segments_with_digests(), small_segments());
  Initiator& ini = s.ini;
  ASSERT_TRUE(ini.digests.header && ini.digests.data);
  ini.chunk = 1000;  // every PDU arrives header first, its data in pieces
  // 200 KiB: 8 KiB of immediate data, then R2Ts answered with 8 KiB Data-Out PDUs.
  const uint32_t len = 200 * 1024;
  auto data = pattern(len, 5);
  auto w = outcome_of(ini.run(cdb_rw16(0x8a, 40, len / 512), false, true, len, data));
  EXPECT_EQ(w.status, 0);
  EXPECT_EQ(ini.conn().stats().direct_rx_pdus, len / 8192);  // the immediate data and every Data-Out

  auto pr = ini.run(cdb_rw16(0x88, 40, len / 512), true, false, len);
  auto r = outcome_of(pr);
  EXPECT_EQ(r.status, 0);
  EXPECT_EQ(r.data, data);
  // Each 64 KiB burst: five 12 KiB segments from the task buffer, then 4 KiB (copied) up to
  // the burst's end; the last 8 KiB copied too.
  EXPECT_EQ(ini.conn().stats().zero_copy_data_in, 15u);
  int with_status = 0, pdus = 0;
  for (auto& p : pr)
    if (const auto* d = p.as<DataInPdu>()) {
      ++pdus;
      EXPECT_EQ(p.data.size(), (d->buffer_offset % 65536) < 61440 && d->buffer_offset + 12288 <= len ? 12288u
                               : d->buffer_offset + 8192 == len                                       ? 8192u
                                                                                                      : 4096u);
      with_status += d->has_status;
    }
  EXPECT_EQ(pdus, 19);
  EXPECT_EQ(with_status, 1);  // GOOD status still collapsed into the last Data-In
}

TEST(TargetZeroCopy, PaddedSegmentsKeepTheirDigests) {
  SessionOptions o = small_segments_with_digests();
  o.limits.initial_r2t = false;
  o.limits.immediate_data = false;
  Session s(o);
  Initiator& ini = s.ini;
  ini.chunk = 700;
  // Unsolicited Data-Out of 8193 + 8191 bytes: pads of 3 and 1 before the data digest.
  const uint32_t len = 16384;
  auto data = pattern(len, 11);
  uint32_t itt = ini.command(cdb_rw16(0x8a, 0, len / 512), false, true, len, {}, /*final=*/false);
  ini.data_out(itt, kReservedTag, 0, 0, std::span(data).first(8193), false);
  ini.data_out(itt, kReservedTag, 1, 8193, std::span(data).subspan(8193), true);
  EXPECT_EQ(outcome_of(ini.take()).status, 0);
  EXPECT_EQ(ini.conn().stats().direct_rx_pdus, 1u);  // 8191 bytes is below the direct threshold
  // A read whose EDTL cuts the data at 10001 bytes: one Data-In sent from the task buffer,
  // padded by 3 before its digest.
  const uint32_t edtl = 10001;
  auto r = outcome_of(ini.run(cdb_rw16(0x88, 0, len / 512), true, false, edtl));
  EXPECT_EQ(r.status, 0);
  EXPECT_TRUE(r.overflow);
  EXPECT_EQ(r.data, std::vector<uint8_t>(data.begin(), data.begin() + edtl));
  EXPECT_EQ(ini.conn().stats().zero_copy_data_in, 1u);
}

TEST(TargetZeroCopy, OutputSurvivesSendsThatStopAnywhere) {
  Session s;
  const uint32_t len = 64 * 1024;
  auto data = pattern(len, 3);
  EXPECT_TRUE(s.write(0, data));
  for (size_t step : {size_t{7}, size_t{4100}, size_t{1} << 20}) {
    const uint32_t itt = s.read_command(0, len);
    auto pdus = decode_all(drain_output(s.ini.conn(), step), s.ini.digests);
    EXPECT_EQ(data_in_of(pdus, itt), data) << "sends of " << step << " bytes";
  }
}

// Without a data digest, READs of a ram LUN go out from the LUN's memory itself (read_view):
// every segment, however small, by reference; the bytes the initiator gets are the LUN's, for
// sends that stop anywhere. With a data digest (computed here in user space) they do not.
TEST(TargetZeroCopy, DataInInPlaceWithoutDataDigest) {
  SessionOptions o = small_segments_with_digests();
  o.limits.data_digest = DigestPolicy::None;
  Session s(o);
  Initiator& ini = s.ini;
  ASSERT_TRUE(ini.digests.header && !ini.digests.data);
  const uint32_t len = 100 * 1024 + 512;  // 12 KiB segments, a 512-byte one among them
  auto data = pattern(len, 9);
  EXPECT_TRUE(s.write(64, data));
  const uint64_t zc_before = ini.conn().stats().zero_copy_data_in;
  for (size_t step : {size_t{5}, size_t{12000}, size_t{1} << 20}) {
    const uint32_t itt = s.read_command(64, len);
    auto pdus = decode_all(drain_output(ini.conn(), step), ini.digests);
    EXPECT_EQ(data_in_of(pdus, itt), data) << "sends of " << step << " bytes";
  }
  EXPECT_EQ(ini.conn().stats().in_place_reads, 3u);
  // 64 KiB bursts of 12 KiB segments: 6 + 3 PDUs per read (the last of each burst short).
  const uint64_t per_read = ini.conn().stats().zero_copy_data_in - zc_before;
  EXPECT_EQ(per_read % 3, 0u);
  EXPECT_GE(per_read / 3, (len + 12287) / 12288);

  Session d;  // data digest on: from the task's buffer, small segments copied
  ASSERT_TRUE(d.ini.digests.data);
  EXPECT_TRUE(d.write(64, data));
  const uint32_t itt = d.read_command(64, len);
  EXPECT_EQ(data_in_of(decode_all(drain_output(d.ini.conn(), 1 << 20), d.ini.digests), itt), data);
  EXPECT_EQ(d.ini.conn().stats().in_place_reads, 0u);
}

// A file LUN (buffered) whose READs of sendfile_min or more go out as ranges of its file, for
// sendfile(2): output_iov() gives the headers and stops before each range, output_file() gives
// the range, and the bytes are the file's, for sends that stop anywhere. Smaller READs, and
// every READ of a connection without set_sendfile(), go out from the mapping as before.
TEST(TargetZeroCopy, LargeFileLunReadsGoOutAsFileRanges) {
  char path[] = "/tmp/vcp-zero-copy-XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  constexpr uint32_t kDisk = 4u << 20;
  const auto disk = pattern(kDisk, 11);
  ASSERT_EQ(pwrite(fd, disk.data(), kDisk, 0), static_cast<ssize_t>(kDisk));
  ::close(fd);
  TargetSettings ts = TargetFixture::default_settings();
  ts.luns = {{0, std::string("file:path=") + path}};
  ts.sendfile_min = 65536;
  SessionOptions o = small_segments_with_digests();
  o.limits.data_digest = DigestPolicy::None;
  {
    Session s(o, ts);
    Initiator& ini = s.ini;
    ini.conn().set_sendfile(true);
    const auto expect = [&](uint64_t lba, uint32_t len) {
      return std::vector<uint8_t>(disk.begin() + static_cast<ptrdiff_t>(lba * 512),
                                  disk.begin() + static_cast<ptrdiff_t>(lba * 512 + len));
    };
    const uint32_t len = 100 * 1024 + 512;  // 12 KiB segments, a 512-byte one among them
    for (size_t step : {size_t{5}, size_t{12000}, size_t{1} << 20}) {
      const uint32_t itt = s.read_command(64, len);
      EXPECT_TRUE(ini.conn().file_output_queued());
      auto pdus = decode_all(drain_output(ini.conn(), step), ini.digests);
      EXPECT_EQ(data_in_of(pdus, itt), expect(64, len)) << "sends of " << step << " bytes";
      EXPECT_FALSE(ini.conn().file_output_queued());
    }
    EXPECT_EQ(ini.conn().stats().in_place_reads, 3u);
    const uint64_t ranges = ini.conn().stats().file_data_in;
    EXPECT_EQ(ranges % 3, 0u);
    EXPECT_GE(ranges / 3, (len + 12287) / 12288);  // every data segment a range

    // Piece by piece: the first Data-In's header (digest included) from memory, then its data
    // as a range at the READ's place in the file, then the next header.
    const uint32_t itt = s.read_command(200, 65536);
    iovec iov[8];
    ASSERT_EQ(ini.conn().output_iov(iov), 1u);
    EXPECT_EQ(iov[0].iov_len, kBhsSize + kDigestSize);
    ini.conn().output_sent(iov[0].iov_len);
    auto f = ini.conn().output_file();
    ASSERT_TRUE(f);
    EXPECT_EQ(f->offset, 200u * 512);
    EXPECT_EQ(f->len, 12288u);
    EXPECT_EQ(ini.conn().output_iov(iov), 0u);  // nothing from memory before the range
    ini.conn().output_sent(100);
    f = ini.conn().output_file();
    ASSERT_TRUE(f);
    EXPECT_EQ(f->offset, 200u * 512 + 100);
    EXPECT_EQ(f->len, 12188u);
    ini.conn().output_sent(f->len);
    EXPECT_FALSE(ini.conn().output_file());
    EXPECT_EQ(ini.conn().output_iov(iov), 1u);  // the second header
    std::vector<uint8_t> rest = drain_output(ini.conn());
    EXPECT_GT(rest.size(), 65536u - 12288u);
    (void)itt;

    // Below sendfile_min: in place from the mapping, no range.
    const uint64_t before = ini.conn().stats().file_data_in;
    const uint32_t small = s.read_command(8, 32768);
    EXPECT_FALSE(ini.conn().file_output_queued());
    EXPECT_EQ(data_in_of(decode_all(drain_output(ini.conn()), ini.digests), small), expect(8, 32768));
    EXPECT_EQ(ini.conn().stats().file_data_in, before);
    EXPECT_EQ(ini.conn().stats().in_place_reads, 5u);
  }
  {
    Session s(o, ts);  // set_sendfile() not called: from the mapping
    const uint32_t itt = s.read_command(64, 262144);
    EXPECT_FALSE(s.ini.conn().file_output_queued());
    EXPECT_EQ(data_in_of(decode_all(drain_output(s.ini.conn()), s.ini.digests), itt),
              std::vector<uint8_t>(disk.begin() + 64 * 512, disk.begin() + 64 * 512 + 262144));
    EXPECT_EQ(s.ini.conn().stats().in_place_reads, 1u);
    EXPECT_EQ(s.ini.conn().stats().file_data_in, 0u);
  }
  ::unlink(path);
}

// A task whose Data-In is still queued is not reused by the next command, even after it has
// completed and a LUN reset went by: the queued data is the first read's, not the second's.
TEST(TargetZeroCopy, QueuedDataInPinsItsTask) {
  Session s;
  Initiator& ini = s.ini;
  const uint32_t len = 32 * 1024;
  auto a = pattern(len, 1), b = pattern(len, 2);
  EXPECT_TRUE(s.write(0, a));
  EXPECT_TRUE(s.write(1000, b));
  // Nothing drained in between: each read completes inline (ram LUN) and queues its Data-In;
  // the second would reuse the first's task (and buffer) were it not pinned.
  const uint32_t ra = s.read_command(0, len);
  const uint32_t rb = s.read_command(1000, len);
  TaskMgmtRequestPdu reset;
  reset.immediate = true;
  reset.function = TmfFunction::LogicalUnitReset;
  reset.lun = *Lun::from_number(0);
  reset.itt = ini.next_itt();
  reset.cmd_sn = ini.cmd_sn();
  ini.send(reset);
  const uint32_t rc = s.read_command(0, len);
  auto pdus = decode_all(drain_output(ini.conn(), 1 << 20), ini.digests);
  EXPECT_EQ(data_in_of(pdus, ra), a);
  EXPECT_EQ(data_in_of(pdus, rb), b);
  EXPECT_TRUE(data_in_of(pdus, rc).empty());  // UNIT ATTENTION after the reset: no data
}

// A LUN removed while the target runs (TargetServer::remove_luns): its I/O thread takes it out
// of the target and calls forget_lun(), then keeps its Lun until no connection uses_lun() it.
// Data-In read in place from it and still queued keeps it; a WRITE still collecting its data
// lets go at once and, its data in, fails with LOGICAL UNIT NOT SUPPORTED.
TEST(TargetZeroCopy, ARemovedLunStaysWhileItsDataIsQueued) {
  SessionOptions o = small_segments_with_digests();
  o.limits.data_digest = DigestPolicy::None;  // Data-In in place from the ram LUN
  Session s(o);
  Initiator& ini = s.ini;
  scsi::Lun* lu = s.f.lun.get();
  const uint32_t len = 32 * 1024;
  auto a = pattern(len, 4), b = pattern(len, 5);
  EXPECT_TRUE(s.write(0, a));
  EXPECT_FALSE(ini.conn().uses_lun(lu));
  // A write without immediate data: the target asks for it with an R2T and waits.
  const uint32_t wb = ini.command(cdb_rw16(0x8a, 64, len / 512), false, true, len);
  auto r2t = ini.take();
  ASSERT_EQ(r2t.size(), 1u);
  ASSERT_TRUE(r2t[0].as<R2TPdu>());
  EXPECT_TRUE(ini.conn().uses_lun(lu));
  const uint32_t ra = s.read_command(0, len);  // completes inline; its Data-In stays queued
  // The removal, as the I/O thread makes it.
  ThreadContext::Target& tt = s.f.ctx.served[0];
  std::erase_if(tt.luns, [&](const auto& e) { return e.lun == lu; });
  std::erase(tt.lun_numbers, uint64_t{0});
  ini.conn().forget_lun(lu);
  EXPECT_TRUE(ini.conn().uses_lun(lu));  // the read's data is still to be sent
  auto pdus = decode_all(drain_output(ini.conn(), 5000), ini.digests);
  EXPECT_EQ(data_in_of(pdus, ra), a);
  EXPECT_FALSE(ini.conn().uses_lun(lu));
  // The write's data: it runs with no LUN.
  ini.data_out(wb, r2t[0].as<R2TPdu>()->ttt, 0, 0, b, true);
  Outcome w = outcome_of(ini.take());
  EXPECT_EQ(w.status, 2);  // CHECK CONDITION
  ASSERT_GE(w.sense.size(), 14u);
  EXPECT_EQ(w.sense[2] & 0x0f, 5);  // ILLEGAL REQUEST
  EXPECT_EQ(w.sense[12], 0x25);     // LOGICAL UNIT NOT SUPPORTED
  EXPECT_EQ(w.sense[13], 0x00);
  EXPECT_FALSE(ini.conn().uses_lun(lu));
  // New commands to LUN 0 find none; the LUN's own data is as the first write left it.
  Outcome r = outcome_of(ini.run(cdb_rw16(0x88, 64, len / 512), true, false, len));
  EXPECT_EQ(r.status, 2);
  EXPECT_TRUE(r.data.empty());
  std::vector<uint8_t> at64(len);
  ASSERT_EQ(s.f.backend->info().block_size, 512u);
  const uint8_t* view = s.f.queue->read_view(64 * 512, len);
  ASSERT_NE(view, nullptr);
  std::memcpy(at64.data(), view, len);
  EXPECT_NE(at64, b);
}

// The connection drops while a send of Data-In is in flight: the iovecs handed out stay
// readable (ASan checks) until the send completes.
TEST(TargetZeroCopy, ConnectionDropsWithDataInInFlight) {
  Session s;
  Initiator& ini = s.ini;
  const uint32_t len = 64 * 1024;
  auto data = pattern(len, 7);
  EXPECT_TRUE(s.write(8, data));
  const uint32_t itt = s.read_command(8, len);
  iovec iov[64];
  const size_t n = ini.conn().output_iov(iov);
  ASSERT_GT(n, 2u);
  ini.conn().shutdown();
  EXPECT_TRUE(ini.conn().finished());
  std::vector<uint8_t> bytes;
  for (size_t i = 0; i < n; ++i) {
    const auto* p = static_cast<const uint8_t*>(iov[i].iov_base);
    bytes.insert(bytes.end(), p, p + iov[i].iov_len);
  }
  ini.conn().output_sent(bytes.size());
  EXPECT_EQ(data_in_of(decode_all(bytes, ini.digests), itt), data);
}

// A receive into a task's buffer is in flight when the connection drops (a Data-Out answering
// an R2T, and a command's immediate data): the region stays writable, what lands is dropped.
TEST(TargetZeroCopy, ConnectionDropsDuringDirectReceive) {
  for (bool immediate : {false, true}) {
    Session s(SessionOptions{});
    Initiator& ini = s.ini;
    const uint32_t len = 16384;
    auto data = pattern(len, 4);
    std::vector<uint8_t> rest;
    if (immediate) {
      ScsiCommandPdu c;
      c.write = true;
      c.final = true;
      c.lun = *Lun::from_number(0);
      c.itt = ini.next_itt();
      c.expected_data_transfer_length = len;
      c.cmd_sn = ini.next_cmd_sn();
      c.data_segment_length = len;
      auto cdb = cdb_rw16(0x8a, 0, len / 512);
      std::memcpy(c.cdb.data(), cdb.data(), 16);
      rest = send_part(ini, c, data, kBhsSize + 100);
    } else {
      rest = s.start_data_out(data, kBhsSize + 100);
    }
    EXPECT_EQ(ini.conn().stats().direct_rx_pdus, 1u);
    iovec iov[TargetConnection::kRxIov];
    ASSERT_EQ(ini.conn().rx_iov(iov), 2u);
    EXPECT_EQ(iov[0].iov_len, len - 100);
    ini.conn().shutdown();
    EXPECT_TRUE(ini.conn().finished());
    // The receive that was in flight completes into the region after all.
    std::memcpy(iov[0].iov_base, rest.data(), iov[0].iov_len);
    ini.conn().rx_commit(iov[0].iov_len, ini.now);
    EXPECT_TRUE(ini.take().empty());
    EXPECT_TRUE(ini.conn().finished());
  }
}

// AbortTask between two Data-Out PDUs of a burst received in place: the rest of the burst is
// dropped quietly, and the next write (which may reuse the task) lands whole.
TEST(TargetZeroCopy, AbortBetweenDirectDataOuts) {
  Session s(SessionOptions{}, small_segments());
  Initiator& ini = s.ini;
  ini.chunk = 512;
  const uint32_t len = 32768;
  auto data = pattern(len, 6);
  uint32_t itt = ini.command(cdb_rw16(0x8a, 0, len / 512), false, true, len);
  auto got = ini.take();
  ASSERT_EQ(got.size(), 1u);
  const uint32_t ttt = got[0].as<R2TPdu>()->ttt;
  ini.data_out(itt, ttt, 0, 0, std::span(data).first(8192), false);
  EXPECT_EQ(ini.conn().stats().direct_rx_pdus, 1u);
  EXPECT_EQ(ini.tmf(TmfFunction::AbortTask, 0, itt, ini.cmd_sn() - 1), TmfResponse::Complete);
  ini.data_out(itt, ttt, 1, 8192, std::span(data).subspan(8192, 8192), false);
  EXPECT_EQ(ini.conn().stats().direct_rx_pdus, 1u);  // no task for it: staging, then dropped
  EXPECT_TRUE(ini.take().empty());
  EXPECT_FALSE(ini.conn().closing());

  auto other = pattern(len, 8);
  EXPECT_EQ(outcome_of(ini.run(cdb_rw16(0x8a, 0, len / 512), false, true, len, other)).status, 0);
  EXPECT_EQ(outcome_of(ini.run(cdb_rw16(0x88, 0, len / 512), true, false, len)).data, other);
}

// Hostile Data-Out whose header arrives before its data: none is received in place; each is
// refused exactly as on the staging path (Reject, then the connection closes).
TEST(TargetZeroCopy, HostileDataOutNeverTakesTheDirectPath) {
  enum Case { WrongOffset, BeyondR2t, WrongDataSn, UnknownTtt, UnsolicitedNotExpected, EndsEarly };
  for (Case k : {WrongOffset, BeyondR2t, WrongDataSn, UnknownTtt, UnsolicitedNotExpected, EndsEarly}) {
    Session s(SessionOptions{});
    Initiator& ini = s.ini;
    ini.chunk = 256;
    const uint32_t len = 65536;
    uint32_t itt = ini.command(cdb_rw16(0x8a, 0, len / 512), false, true, len);
    auto got = ini.take();
    ASSERT_EQ(got.size(), 1u);
    const R2TPdu r2t = *got[0].as<R2TPdu>();
    ASSERT_EQ(r2t.desired_data_transfer_length, len);
    uint32_t ttt = r2t.ttt, sn = 0, off = 0, n = 16384;
    bool final = false;
    switch (k) {
      case WrongOffset: off = 0x7fff0000; break;
      case BeyondR2t: n = len + 8192; break;  // more than the R2T (and EDTL) asked for
      case WrongDataSn: sn = 5; break;
      case UnknownTtt: ttt = 0x4242; break;
      case UnsolicitedNotExpected: ttt = kReservedTag; break;
      case EndsEarly: final = true; break;
    }
    auto data = pattern(n, 1);
    ini.data_out(itt, ttt, sn, off, data, final);
    got = ini.take();
    ASSERT_EQ(got.size(), 1u) << "case " << k;
    ASSERT_TRUE(got[0].as<RejectPdu>()) << "case " << k;
    EXPECT_EQ(got[0].as<RejectPdu>()->reason, RejectReason::ProtocolError);
    EXPECT_TRUE(ini.conn().closing());
    EXPECT_EQ(ini.conn().stats().direct_rx_pdus, 0u) << "case " << k;
  }
}

// A data digest error on a segment received in place: Reject and close, as on the staging path.
TEST(TargetZeroCopy, DataDigestErrorOnTheDirectPath) {
  SessionOptions o;
  o.limits.data_digest = DigestPolicy::Require;
  Session s(o);
  Initiator& ini = s.ini;
  const uint32_t len = 16384;
  auto data = pattern(len, 2);
  auto rest = s.start_data_out(data, kBhsSize + 10);
  ASSERT_FALSE(rest.empty());
  rest.back() ^= 0x80;  // the digest
  ini.send_raw(rest);
  EXPECT_EQ(ini.conn().stats().direct_rx_pdus, 1u);
  auto got = ini.take();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].as<RejectPdu>()->reason, RejectReason::DataDigestError);
  EXPECT_TRUE(ini.conn().closing());
}

}  // namespace
}  // namespace vcp::target::test
