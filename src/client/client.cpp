// Connecting: the vhost-user start-up a front-end owes its back-end, then the public API's thin
// layer over Queue::Impl.
#include <linux/virtio_blk.h>
#include <linux/virtio_config.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>

#include "base/log.hpp"
#include "client/internal.hpp"
#include "vhost/message_io.hpp"

namespace vcp::client {
namespace {

using vhost::bit;

constexpr uint64_t f(unsigned b) { return uint64_t{1} << b; }

constexpr uint64_t kWantedFeatures =
    f(VIRTIO_F_VERSION_1) | f(VIRTIO_RING_F_EVENT_IDX) | f(VIRTIO_RING_F_INDIRECT_DESC) | f(VIRTIO_BLK_F_MQ) |
    f(VIRTIO_BLK_F_SEG_MAX) | f(VIRTIO_BLK_F_SIZE_MAX) | f(VIRTIO_BLK_F_BLK_SIZE) | f(VIRTIO_BLK_F_FLUSH) |
    f(VIRTIO_BLK_F_DISCARD) | f(VIRTIO_BLK_F_WRITE_ZEROES) | f(VIRTIO_BLK_F_RO) | f(VIRTIO_BLK_F_TOPOLOGY) |
    f(vhost::kFeatureProtocolFeatures);
constexpr uint64_t kWantedProtocol = bit(vhost::kProtoMq) | bit(vhost::kProtoReplyAck) | bit(vhost::kProtoConfig) |
                                     bit(vhost::kProtoInflightShmfd) | bit(vhost::kProtoBackendReq);

// The config bytes we read: everything up to write_zeroes_may_unmap and its padding (older
// back-ends refuse reads past their own structure).
constexpr uint32_t kConfigBytes = offsetof(virtio_blk_config, unused1) + sizeof(virtio_blk_config::unused1);

constexpr size_t round_up(size_t v, size_t a) { return (v + a - 1) / a * a; }

struct Failure {
  int rc;
  std::string what;
};

// A capacity (in 512-byte sectors, as the config says it) that is a whole number of blocks and
// does not overflow in bytes: the config is another domain's word.
bool capacity_fits(uint64_t sectors, uint32_t block_size) {
  return sectors <= (UINT64_MAX >> 9) && (sectors << 9) % block_size == 0;
}

void fill_info(const virtio_blk_config& c, uint64_t feats, DeviceInfo* d) {
  auto has = [&](unsigned b) { return (feats & f(b)) != 0; };
  d->features = feats;
  d->capacity_bytes = le64toh(c.capacity) << 9;
  d->block_size = has(VIRTIO_BLK_F_BLK_SIZE) ? le32toh(c.blk_size) : 512;
  // Advisory (what to align to): an exponent that makes no sense (past 1 GiB) is not taken.
  d->physical_block_size = d->block_size;
  if (has(VIRTIO_BLK_F_TOPOLOGY) && c.physical_block_exp < 32 &&
      (uint64_t{d->block_size} << c.physical_block_exp) <= (1u << 30))
    d->physical_block_size = d->block_size << c.physical_block_exp;
  d->seg_max = has(VIRTIO_BLK_F_SEG_MAX) ? le32toh(c.seg_max) : 0;
  d->size_max = has(VIRTIO_BLK_F_SIZE_MAX) ? le32toh(c.size_max) : 0;
  d->num_queues = has(VIRTIO_BLK_F_MQ) ? std::max<uint16_t>(1, le16toh(c.num_queues)) : 1;
  d->read_only = has(VIRTIO_BLK_F_RO);
  d->flush = has(VIRTIO_BLK_F_FLUSH);
  d->discard = has(VIRTIO_BLK_F_DISCARD);
  d->write_zeroes = has(VIRTIO_BLK_F_WRITE_ZEROES);
  d->max_discard_sectors = d->discard ? le32toh(c.max_discard_sectors) : 0;
  d->discard_sector_alignment = d->discard ? le32toh(c.discard_sector_alignment) : 0;
  d->max_write_zeroes_sectors = d->write_zeroes ? le32toh(c.max_write_zeroes_sectors) : 0;
  d->write_zeroes_may_unmap = d->write_zeroes && c.write_zeroes_may_unmap;
}

// Limits a range request by: at most 2^31 bytes per piece, whole blocks, whole alignment units.
uint32_t range_sectors(uint32_t max_sectors, uint32_t align_sectors, uint32_t block_size) {
  uint32_t m = max_sectors == 0 ? (1u << 22) : std::min(max_sectors, 1u << 22);
  const uint32_t unit = std::max<uint32_t>(block_size >> 9, align_sectors ? align_sectors : 1);
  return std::max(unit, m / unit * unit);
}

class Connector {
 public:
  Connector(Client::Impl& c, const ClientOptions& o) : c_(c), o_(o) {}

  std::optional<Failure> run() {
    auto& ch = *c_.chan;
    auto feats = ch.get_features();
    if (!feats) return Failure{-feats.error(), "GET_FEATURES"};
    if (!(*feats & f(VIRTIO_F_VERSION_1))) return Failure{-EPROTONOSUPPORT, "the device is not virtio 1.x"};
    acked_ = *feats & kWantedFeatures;
    if (acked_ & f(vhost::kFeatureProtocolFeatures)) {
      auto pf = ch.get_protocol_features();
      if (!pf) return Failure{-pf.error(), "GET_PROTOCOL_FEATURES"};
      proto_ = *pf & kWantedProtocol;
      if (int rc = ch.set_protocol_features(proto_); rc < 0) return Failure{rc, "SET_PROTOCOL_FEATURES"};
    }
    if (!(proto_ & bit(vhost::kProtoConfig))) return Failure{-EPROTONOSUPPORT, "the back-end offers no GET_CONFIG"};
    if (proto_ & bit(vhost::kProtoBackendReq)) {
      // The back-end's channel for its own requests (a config change), handed over before
      // SET_OWNER as QEMU does; our end is what config_fd() returns.
      int sv[2];
      if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return Failure{-errno, "socketpair"};
      UniqueFd theirs(sv[1]);
      c_.config_chan.reset(sv[0]);
      if (int rc = ch.set_backend_req_fd(theirs.get()); rc < 0) return Failure{rc, "SET_BACKEND_REQ_FD"};
    }
    if (int rc = ch.set_owner(); rc < 0) return Failure{rc, "SET_OWNER"};
    if (int rc = ch.set_features(acked_); rc < 0) return Failure{rc, "SET_FEATURES"};

    virtio_blk_config cfg{};
    if (int rc = ch.get_config(0, {reinterpret_cast<uint8_t*>(&cfg), kConfigBytes}); rc < 0)
      return Failure{rc, "GET_CONFIG"};
    DeviceInfo& d = c_.info;
    fill_info(cfg, acked_, &d);
    c_.capacity.store(d.capacity_bytes, std::memory_order_relaxed);
    d.protocol_features = proto_;
    // The config comes from another protection domain: sizes we allocate by are bounded here.
    if (d.block_size < 512 || d.block_size > kMaxBlockSize || (d.block_size & (d.block_size - 1)))
      return Failure{-EPROTO, "the device's block size (" + std::to_string(d.block_size) +
                                  ") is not a power of two from 512 to 64 KiB"};
    if (!capacity_fits(le64toh(cfg.capacity), d.block_size))
      return Failure{-EPROTO, "the device's capacity (" + std::to_string(le64toh(cfg.capacity)) +
                                  " sectors) is not a whole number of its blocks"};
    uint16_t dev_queues = d.num_queues;
    if (proto_ & bit(vhost::kProtoMq)) {
      auto qn = ch.get_queue_num();
      if (!qn) return Failure{-qn.error(), "GET_QUEUE_NUM"};
      dev_queues = static_cast<uint16_t>(std::min<uint64_t>(dev_queues, *qn));
    }
    d.num_queues = dev_queues;
    // Each queue costs a ring, its buffers and a share of the memory table: a device offering
    // thousands must not make "as many as it offers" take that much.
    nq_ = o_.num_queues == 0 ? std::min<uint16_t>(dev_queues, kMaxQueues) : o_.num_queues;
    if (nq_ > dev_queues) return Failure{-EINVAL, "more queues asked for than the device has"};
    if (nq_ > kMaxQueues) return Failure{-EINVAL, "at most " + std::to_string(kMaxQueues) + " queues"};
    if (o_.queue_size < 2 || (o_.queue_size & (o_.queue_size - 1)) || o_.queue_size > 32768)
      return Failure{-EINVAL, "queue size must be a power of two from 2 to 32768"};

    plan_limits();
    if (o_.use_inflight && (proto_ & bit(vhost::kProtoInflightShmfd))) {
      if (auto f = setup_inflight()) return f;
    }
    if (auto f = setup_memory()) return f;
    for (unsigned q = 0; q < nq_; ++q)
      if (auto f = start_queue(q)) return f;
    return std::nullopt;
  }

 private:
  void plan_limits() {
    DeviceInfo& d = c_.info;
    const bool indirect = (acked_ & f(VIRTIO_RING_F_INDIRECT_DESC)) != 0;
    uint32_t segs = d.seg_max ? std::min(d.seg_max, kMaxSegsPerPiece) : kMaxSegsPerPiece;
    if (!indirect) segs = std::min<uint32_t>(segs, o_.queue_size - 2u);
    segs = std::max<uint32_t>(segs, 1);
    base_.segs_per_piece = segs;
    base_.size_max = d.size_max ? d.size_max : kDefaultSizeMax;
    const uint64_t bs = d.block_size;
    uint64_t piece = std::min<uint64_t>(uint64_t{segs} * base_.size_max, kMaxPieceBytes) / bs * bs;
    base_.max_piece = static_cast<uint32_t>(std::max<uint64_t>(piece, bs));
    uint64_t bounce = std::max<uint64_t>(round_up(o_.bounce_bytes, bs), bs);
    base_.bounce_piece = static_cast<uint32_t>(std::min<uint64_t>(bounce, base_.max_piece));
    base_.max_indirect = indirect ? static_cast<uint16_t>(segs + 2) : 0;
    base_.event_idx = (acked_ & f(VIRTIO_RING_F_EVENT_IDX)) != 0;
    base_.size = o_.queue_size;
    d.max_transfer = base_.max_piece;
    d.max_discard_sectors = range_sectors(d.max_discard_sectors, d.discard_sector_alignment, d.block_size);
    d.max_write_zeroes_sectors = range_sectors(d.max_write_zeroes_sectors, 0, d.block_size);
  }

  std::optional<Failure> setup_inflight() {
    auto& ch = *c_.chan;
    auto r = ch.get_inflight_fd(static_cast<uint16_t>(nq_), o_.queue_size);
    if (!r) return Failure{-r.error(), "GET_INFLIGHT_FD"};
    if (!r->fd || r->mmap_size == 0) return std::nullopt;  // the back-end keeps none
    auto m = Mapping::map_shared(r->fd.get(), r->mmap_offset, r->mmap_size);
    if (!m) return Failure{-m.error(), "mapping the inflight region"};
    if (int rc = ch.set_inflight_fd(*r); rc < 0) return Failure{rc, "SET_INFLIGHT_FD"};
    c_.inflight_map = std::move(*m);
    c_.inflight_fd = std::move(r->fd);
    c_.info.inflight = true;
    return std::nullopt;
  }

  // Sizes of one queue's private part.
  size_t ring_part() const { return round_up(virtio::DriverQueue::ring_bytes(base_.size), Arena::kPage); }
  size_t indirect_part() const {
    return round_up(size_t{base_.size} * base_.max_indirect * sizeof(vring_desc), Arena::kPage);
  }
  size_t meta_part() const { return round_up(size_t{base_.size} * kMetaBytes, Arena::kPage); }
  size_t bounce_part() const { return round_up(size_t{base_.size} * base_.bounce_piece, Arena::kPage); }
  size_t queue_part() const { return ring_part() + indirect_part() + meta_part() + bounce_part(); }

  std::optional<Failure> setup_memory() {
    if (int rc = c_.arena.init(queue_part() * nq_, o_.buffer_bytes); rc < 0) return Failure{rc, "creating the arena"};
    vhost::FrontendChannel::RegionFd r{
        {Arena::kGpaBase, c_.arena.size(), reinterpret_cast<uint64_t>(c_.arena.base()), 0}, c_.arena.fd()};
    if (int rc = c_.chan->set_mem_table({&r, 1}); rc < 0) return Failure{rc, "SET_MEM_TABLE"};
    return std::nullopt;
  }

  std::optional<Failure> start_queue(unsigned q) {
    auto& ch = *c_.chan;
    QueueSetup s = base_;
    s.index = q;
    s.ring = c_.arena.base() + q * queue_part();
    s.indirect = s.ring + ring_part();
    s.meta = s.indirect + indirect_part();
    s.bounce = s.meta + meta_part();
    UniqueFd kick(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)), call(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!kick || !call) return Failure{-errno, "eventfd"};

    auto impl = std::make_unique<Queue::Impl>(&c_, s, std::move(kick), std::move(call), o_.poll, o_.spin_us);
    virtio::DriverQueue& dq = impl->dq;
    if (int rc = dq.init(s.ring, c_.arena.gpa(s.ring), s.size, s.event_idx, s.max_indirect ? s.indirect : nullptr,
                         c_.arena.gpa(s.indirect), s.max_indirect);
        rc < 0)
      return Failure{rc, "laying out a ring"};
    // SET_VRING_ADDR names our own addresses (user_addr space of the region).
    auto host = [&](uint64_t gpa) { return reinterpret_cast<uint64_t>(c_.arena.base() + (gpa - Arena::kGpaBase)); };
    vhost_vring_addr a{q, 0, host(dq.desc_addr()), host(dq.used_addr()), host(dq.avail_addr()), 0};
    if (int rc = ch.set_vring_num(q, s.size); rc < 0) return Failure{rc, "SET_VRING_NUM"};
    if (int rc = ch.set_vring_base(q, 0); rc < 0) return Failure{rc, "SET_VRING_BASE"};
    if (int rc = ch.set_vring_addr(a); rc < 0) return Failure{rc, "SET_VRING_ADDR"};
    if (int rc = ch.set_vring_kick(q, impl->kick_fd.get()); rc < 0) return Failure{rc, "SET_VRING_KICK"};
    // A call fd even when polling always: "no fd" is in the protocol, but libvhost-user
    // (qemu-storage-daemon) panics on it. Suppressing interrupts in the ring keeps it quiet.
    if (int rc = ch.set_vring_call(q, impl->call_fd.get()); rc < 0) return Failure{rc, "SET_VRING_CALL"};
    if (acked_ & f(vhost::kFeatureProtocolFeatures))
      if (int rc = ch.set_vring_enable(q, true); rc < 0) return Failure{rc, "SET_VRING_ENABLE"};
    impl->interrupts_on = o_.poll == PollMode::never;
    if (impl->interrupts_on)
      dq.enable_interrupts(true);
    else
      impl->suppress_interrupts();
    c_.queues.push_back(Client::Impl::make_queue(std::move(impl)));
    return std::nullopt;
  }

  Client::Impl& c_;
  const ClientOptions& o_;
  uint64_t acked_ = 0;
  uint64_t proto_ = 0;
  unsigned nq_ = 1;
  QueueSetup base_;
};

struct SyncState {
  bool done = false;
  int result = 0;
};
void sync_done(void* user, int result) {
  auto* s = static_cast<SyncState*>(user);
  s->done = true;
  s->result = result;
}

}  // namespace

// ---- Client ----

void Client::Impl::fail(int err) {
  int expected = 0;
  if (fatal.compare_exchange_strong(expected, err, std::memory_order_relaxed)) {
    VCP_LOG_WARN("libvcp: connection failed: {}", errno_str(err));
    if (chan) ::shutdown(chan->fd(), SHUT_RDWR);
  }
}

Client::Client(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Client::~Client() = default;

int Client::connect(const std::string& socket_path, const ClientOptions& opts, std::unique_ptr<Client>* out,
                    std::string* why) {
  auto ch = vhost::FrontendChannel::connect(socket_path, opts.control_timeout_ms);
  if (!ch) {
    if (why) *why = "cannot connect to " + socket_path + ": " + errno_str(ch.error());
    return -ch.error();
  }
  // The channel keeps its own descriptor; connect_fd takes over a duplicate.
  return connect_fd(::dup(ch->fd()), opts, out, why);
}

int Client::connect_fd(int fd, const ClientOptions& opts, std::unique_ptr<Client>* out, std::string* why) {
  if (fd < 0) return -EBADF;
  auto impl = std::make_unique<Impl>();
  impl->opts = opts;
  impl->chan.emplace(UniqueFd(fd), opts.control_timeout_ms);
  if (auto failure = Connector(*impl, opts).run()) {
    if (why) *why = failure->what + ": " + errno_str(failure->rc);
    return failure->rc < 0 ? failure->rc : -EIO;
  }
  out->reset(new Client(std::move(impl)));
  return 0;
}

const DeviceInfo& Client::info() const { return impl_->info; }
uint64_t Client::capacity_bytes() const { return impl_->capacity.load(std::memory_order_relaxed); }
int Client::config_fd() const { return impl_->config_chan ? impl_->config_chan.get() : -1; }

int Client::update_config() { return impl_->update_config(); }

int Client::Impl::update_config() {
  std::lock_guard lk(control_mu);
  if (int e = fatal.load(std::memory_order_relaxed)) return e;
  // The notices first: each is a header (and a payload we do not need); one that asks for a
  // reply gets one (0 for a config change, ENOSYS for what we do not know). At most 64 per
  // call, so a back-end that never stops sending cannot keep the caller here; any left keep
  // config_fd() readable.
  constexpr int kMaxNotices = 64;
  pollfd p{config_chan.get(), POLLIN, 0};
  for (int n = 0; n < kMaxNotices && config_chan && ::poll(&p, 1, 0) == 1; ++n) {
    vhost::MsgHeader h{};
    uint8_t payload[vhost::kMaxPayloadSize];
    int rc = vhost::FrontendChannel::receive_backend_request(config_chan.get(), &h, payload, opts.control_timeout_ms);
    if (rc < 0) {
      // The back-end closed its channel (it went away, or gave up on it): no more notices.
      VCP_LOG_WARN("libvcp: the back-end channel failed: {}", errno_str(rc));
      config_chan.reset();
      break;
    }
    if (h.flags & vhost::kFlagNeedReply) {
      const bool known = h.request == static_cast<uint32_t>(vhost::BackendRequest::config_change_msg);
      const uint64_t v = known ? 0 : ENOSYS;
      const vhost::MsgHeader r{h.request, vhost::kVersion | vhost::kFlagReply, sizeof v};
      if (vhost::send_message(config_chan.get(), r, &v, sizeof v, {}, opts.control_timeout_ms) < 0) config_chan.reset();
    }
  }
  virtio_blk_config cfg{};
  if (int rc = chan->get_config(0, {reinterpret_cast<uint8_t*>(&cfg), kConfigBytes}); rc < 0) {
    fail(rc);
    return rc;
  }
  const uint64_t sectors = le64toh(cfg.capacity);
  if (!capacity_fits(sectors, info.block_size)) {
    VCP_LOG_ERROR("libvcp: the device's new capacity ({} sectors) is not a whole number of its blocks", sectors);
    fail(-EPROTO);
    return -EPROTO;
  }
  const uint64_t before = capacity.exchange(sectors << 9, std::memory_order_relaxed);
  return before != (sectors << 9) ? 1 : 0;
}
unsigned Client::num_queues() const { return static_cast<unsigned>(impl_->queues.size()); }
Queue& Client::queue(unsigned index) { return *impl_->queues.at(index); }
void* Client::alloc(size_t len, size_t align) { return impl_->arena.alloc(len, align); }
void Client::free(void* p) { impl_->arena.free(p); }
bool Client::is_zero_copy(const void* p, size_t len) const { return impl_->arena.in_buffers(p, len); }
int Client::error() const { return impl_->fatal.load(std::memory_order_relaxed); }
void Client::disconnect() { impl_->fail(-ECONNRESET); }
int Client::inflight_fd() const { return impl_->inflight_fd.get(); }
const void* Client::inflight_region() const { return impl_->inflight_map.data(); }
size_t Client::inflight_size() const { return impl_->inflight_map.size(); }

// ---- Queue ----

Queue::Queue(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Queue::~Queue() = default;

int Queue::read(uint64_t offset, void* buf, size_t len, void* user, Callback cb) {
  return impl_->submit(VIRTIO_BLK_T_IN, offset, static_cast<uint8_t*>(buf), len, false, user, cb);
}
int Queue::write(uint64_t offset, const void* buf, size_t len, void* user, Callback cb) {
  // The device only reads a write's data; the slot keeps one pointer type for both directions.
  return impl_->submit(VIRTIO_BLK_T_OUT, offset, const_cast<uint8_t*>(static_cast<const uint8_t*>(buf)), len, false,
                       user, cb);
}
int Queue::flush(void* user, Callback cb) { return impl_->submit(VIRTIO_BLK_T_FLUSH, 0, nullptr, 0, false, user, cb); }
int Queue::discard(uint64_t offset, uint64_t len, void* user, Callback cb) {
  return impl_->submit(VIRTIO_BLK_T_DISCARD, offset, nullptr, len, false, user, cb);
}
int Queue::write_zeroes(uint64_t offset, uint64_t len, bool may_unmap, void* user, Callback cb) {
  return impl_->submit(VIRTIO_BLK_T_WRITE_ZEROES, offset, nullptr, len, may_unmap, user, cb);
}
int Queue::get_id(char* buf, void* user, Callback cb) {
  return impl_->submit(VIRTIO_BLK_T_GET_ID, 0, reinterpret_cast<uint8_t*>(buf), kGetIdBytes, false, user, cb);
}
int Queue::commit() { return impl_->commit(); }
int Queue::poll(Completion* out, unsigned max) { return impl_->poll(out, max); }
int Queue::wait(Completion* out, unsigned max, unsigned min, int timeout_ms) {
  return impl_->wait(out, max, min, timeout_ms);
}

int Queue::Impl::run_sync(int submit_rc, const bool* done, const int* result) {
  if (submit_rc < 0) return submit_rc;
  const int timeout = client->opts.sync_timeout_ms;
  while (!*done) {
    const int rc = wait(nullptr, 0, 1, timeout);
    if (rc == -ETIMEDOUT) {
      // The device still owns the request's buffers: the connection cannot be trusted again.
      fail(-ETIMEDOUT);
    } else if (rc < 0 && !*done) {
      return rc;
    }
  }
  return *result;
}

#define VCP_SYNC(call)                                      \
  SyncState st;                                             \
  return impl_->run_sync(call, &st.done, &st.result)

int Queue::read_sync(uint64_t offset, void* buf, size_t len) { VCP_SYNC(read(offset, buf, len, &st, sync_done)); }
int Queue::write_sync(uint64_t offset, const void* buf, size_t len) {
  VCP_SYNC(write(offset, buf, len, &st, sync_done));
}
int Queue::flush_sync() { VCP_SYNC(flush(&st, sync_done)); }
int Queue::discard_sync(uint64_t offset, uint64_t len) { VCP_SYNC(discard(offset, len, &st, sync_done)); }
int Queue::write_zeroes_sync(uint64_t offset, uint64_t len, bool may_unmap) {
  VCP_SYNC(write_zeroes(offset, len, may_unmap, &st, sync_done));
}
int Queue::get_id_sync(char* buf) { VCP_SYNC(get_id(buf, &st, sync_done)); }
#undef VCP_SYNC

unsigned Queue::index() const { return impl_->setup.index; }
unsigned Queue::capacity() const { return impl_->nslots; }
unsigned Queue::outstanding() const { return impl_->outstanding; }
int Queue::error() const { return impl_->error; }

namespace {
constexpr const char* kPollModeNames[] = {"always", "adaptive", "never"};  // in PollMode's order
}  // namespace

const char* to_string(PollMode m) {
  const auto i = static_cast<size_t>(m);
  return i < std::size(kPollModeNames) ? kPollModeNames[i] : "?";
}

bool parse_poll_mode(const std::string& s, PollMode* out) {
  for (size_t i = 0; i < std::size(kPollModeNames); ++i) {
    if (s != kPollModeNames[i]) continue;
    *out = static_cast<PollMode>(i);
    return true;
  }
  return false;
}

}  // namespace vcp::client
