#include "vhost/backend.hpp"

#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "base/log.hpp"
#include "base/result.hpp"

namespace vcp::vhost {
namespace {

constexpr bool is_pow2(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

// Requests with a reply of their own; REPLY_ACK adds nothing to them.
bool has_own_reply(Request r) {
  switch (r) {
    case Request::get_features:
    case Request::get_protocol_features:
    case Request::get_vring_base:
    case Request::get_queue_num:
    case Request::get_config:
    case Request::get_inflight_fd:
    case Request::get_max_mem_slots:
    case Request::set_log_base:  // answered whatever REPLY_ACK says: QEMU waits for it with LOG_SHMFD
      return true;
    default:
      return false;
  }
}

// What a front-end may send before SET_OWNER: the negotiation QEMU does first.
bool allowed_before_owner(Request r) {
  switch (r) {
    case Request::get_features:
    case Request::get_protocol_features:
    case Request::set_protocol_features:
    case Request::get_queue_num:
    case Request::get_max_mem_slots:
    case Request::set_backend_req_fd:  // QEMU sets up the channel in its back-end init, before SET_OWNER
    case Request::set_owner:
      return true;
    default:
      return false;
  }
}

// Makes sure the file `fd` can no longer shrink: an access to a mapped page past a new end of
// file raises SIGBUS, which would kill the VCP, so a frontend that truncated guest memory under
// us could crash it. A memfd that allows sealing gets F_SEAL_SHRINK (QEMU seals its own guest
// RAM memfds this way, memory-backend-memfd seal=on, and never shrinks them; punching holes and
// growing stay allowed). False when the file cannot be sealed (a memfd created without
// MFD_ALLOW_SEALING or already sealed with F_SEAL_SEAL but not F_SEAL_SHRINK, a tmpfs or
// hugetlbfs file that is not a memfd): the mapping is still made, and the caller puts a
// ShrinkGuard on it (an access past a new end then reads zeros and the frontend is dropped).
bool seal_against_shrinking(int fd) {
  const int seals = ::fcntl(fd, F_GET_SEALS);
  if (seals < 0) return false;
  if (seals & F_SEAL_SHRINK) return true;
  return !(seals & F_SEAL_SEAL) && ::fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK) == 0;
}

// Maps [offset, offset+len) of a regular file `fd`. The mapping starts at an offset aligned
// to the file's block size (hugetlbfs wants huge-page alignment); *start is the first byte asked
// for. A range past the end of the file is refused: touching it would raise SIGBUS; so is a
// later shrinking of the file, where it can be sealed (*sealed says whether it was; where it
// was not, the caller puts a ShrinkGuard on the mapping, made in granules of *granule bytes).
int map_file_range(int fd, uint64_t offset, uint64_t len, Mapping* out, uint8_t** start, bool* sealed,
                   uint64_t* granule) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return -errno;
  if (!S_ISREG(st.st_mode)) {
    VCP_LOG_ERROR("vhost-user: memory fd is not a regular file or memfd");
    return -EINVAL;
  }
  uint64_t end = 0;
  if (len == 0 || __builtin_add_overflow(offset, len, &end) || end > static_cast<uint64_t>(st.st_size)) {
    VCP_LOG_ERROR("vhost-user: range {:#x}+{:#x} is not inside the {}-byte file", offset, len, st.st_size);
    return -EINVAL;
  }
  uint64_t align = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  if (is_pow2(static_cast<uint64_t>(st.st_blksize)) && static_cast<uint64_t>(st.st_blksize) > align)
    align = static_cast<uint64_t>(st.st_blksize);
  const uint64_t map_off = offset & ~(align - 1);
  const uint64_t delta = offset - map_off;
  uint64_t map_len = 0;
  if (__builtin_add_overflow(len, delta + align - 1, &map_len)) return -EINVAL;
  map_len &= ~(align - 1);
  // Sealed first, then the size checked again: a shrink between the fstat above and the seal
  // would otherwise go unnoticed, and once sealed the check stays true.
  *sealed = seal_against_shrinking(fd);
  if (*sealed && ::fstat(fd, &st) == 0 && end > static_cast<uint64_t>(st.st_size)) {
    VCP_LOG_ERROR("vhost-user: the file shrank to {} bytes while being mapped", st.st_size);
    return -EINVAL;
  }
  auto m = Mapping::map_shared(fd, map_off, map_len);
  if (!m) {
    VCP_LOG_ERROR("vhost-user: mmap of {:#x} bytes at {:#x} failed: {}", map_len, map_off, errno_str(m.error()));
    return -m.error();
  }
  *out = std::move(*m);
  *start = out->data() + delta;
  *granule = align;
  return 0;
}

}  // namespace

VhostUserBackend::VhostUserBackend(Device& device, UniqueFd conn, BackendOptions opts)
    : device_(device), conn_(std::move(conn)), opts_(opts), fault_fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  rings_.resize(device_.num_queues());
  inflight_.resize(device_.num_queues());
  if (!fault_fd_) VCP_LOG_WARN("vhost-user: no eventfd for memory faults ({}): they are survived, not reported",
                               errno_str(errno));
}

void VhostUserBackend::poll_fds(pollfd out[kPollFds]) const {
  out[0] = {conn_.get(), POLLIN, 0};
  out[1] = {fault_fd_.get(), POLLIN, 0};
}

int VhostUserBackend::on_ready(const pollfd ready[kPollFds]) {
  if (ready[1].revents != 0)
    if (int rc = on_fault(); rc < 0) return rc;
  return ready[0].revents != 0 ? on_readable() : 0;
}

int VhostUserBackend::on_fault() {
  uint64_t n = 0;
  if (!fault_fd_ || ::read(fault_fd_.get(), &n, sizeof(n)) != static_cast<ssize_t>(sizeof(n))) return 0;
  VCP_LOG_ERROR("vhost-user: the frontend shrank a memory file under this VCP's mapping: {} page{} past its new end "
                "replaced with zeros; its memory is no longer shared, so the frontend is dropped",
                n, n == 1 ? "" : "s");
  return -EFAULT;
}

VhostUserBackend::~VhostUserBackend() {
  // The connection is gone with this object: what the backend cannot answer soon is not waited for.
  device_.frontend_gone();
  for (unsigned i = 0; i < rings_.size(); ++i) stop_ring(i);
  drop_log();
}

int VhostUserBackend::on_readable() {
  FdList fds;
  int rc = recv_exact(conn_.get(), buf_, kHeaderSize, &fds, false, opts_.io_timeout_ms);
  if (rc == -EAGAIN) return 0;
  if (rc < 0) {
    if (rc != -ECONNRESET) VCP_LOG_ERROR("vhost-user: reading a message header: {}", errno_str(rc));
    return rc;
  }
  MsgHeader h;
  std::memcpy(&h, buf_, sizeof(h));
  if (rc = check_header(h); rc < 0) {
    VCP_LOG_ERROR("vhost-user: bad header (request {}, flags {:#x}, size {}): {}", h.request, h.flags, h.size,
                  errno_str(rc));
    return rc;
  }
  if (h.size > 0) {
    rc = recv_exact(conn_.get(), buf_ + kHeaderSize, h.size, &fds, true, opts_.io_timeout_ms);
    if (rc < 0) {
      if (rc == -ECONNRESET) rc = -EBADMSG;  // the header came, its payload did not
      VCP_LOG_ERROR("vhost-user: reading the {}-byte payload of {}: {}", h.size,
                    to_string(static_cast<Request>(h.request)), errno_str(rc));
      return rc;
    }
  }
  ParsedMessage m;
  rc = parse_message(buf_, kHeaderSize + h.size, fds.count_for_validation(), &m);
  if (rc < 0) {
    const auto req = static_cast<Request>(h.request);
    VCP_LOG_ERROR("vhost-user: malformed {} (size {}, {} fds): {}", to_string(req), h.size,
                  fds.count_for_validation(), errno_str(rc));
    if ((h.flags & kFlagNeedReply) && !has_own_reply(req)) return reply_u64(req, static_cast<uint64_t>(-rc));
    return rc;
  }
  return dispatch(m, fds);
}

int VhostUserBackend::dispatch(const ParsedMessage& m, FdList& fds) {
  const Request r = m.request;
  if (!m.known) {
    VCP_LOG_WARN("vhost-user: ignoring unsupported request {} ({})", static_cast<uint32_t>(r), to_string(r));
    return m.need_reply() ? reply_u64(r, ENOSYS) : 0;
  }
  int rc;
  if (!owner_ && !allowed_before_owner(r)) {
    VCP_LOG_ERROR("vhost-user: {} before SET_OWNER", to_string(r));
    rc = -EPERM;
  } else {
    rc = handle(m, fds);
  }
  if (has_own_reply(r)) {
    // Handlers answer these themselves; an error left over means no answer was possible.
    if (rc < 0) VCP_LOG_ERROR("vhost-user: {} failed: {}; dropping the connection", to_string(r), errno_str(rc));
    return rc;
  }
  if (m.need_reply()) {
    if (rc < 0) VCP_LOG_WARN("vhost-user: {} failed: {}", to_string(r), errno_str(rc));
    return reply_u64(r, rc < 0 ? static_cast<uint64_t>(-rc) : 0);
  }
  if (rc < 0) VCP_LOG_ERROR("vhost-user: {} failed: {}; dropping the connection", to_string(r), errno_str(rc));
  return rc;
}

int VhostUserBackend::handle(const ParsedMessage& m, FdList& fds) {
  const auto& p = m.payload;
  switch (m.request) {
    case Request::get_features:
      return reply_u64(m.request, device_.features() | bit(kFeatureProtocolFeatures) | bit(kFeatureLogAll));
    case Request::set_features:
      return set_features(p.u64);
    case Request::get_protocol_features:
      return reply_u64(m.request, kBackendProtocolFeatures);
    case Request::set_protocol_features:
      return set_protocol_features(p.u64);
    case Request::set_owner:
      owner_ = true;
      return 0;
    case Request::reset_owner:
    case Request::reset_device:
      reset_rings();
      return 0;
    case Request::get_queue_num:
      return reply_u64(m.request, device_.num_queues());
    case Request::get_max_mem_slots:
      return reply_u64(m.request, virtio::GuestMemory::kMaxRegions);
    case Request::set_mem_table:
      return set_mem_table(p.mem, fds);
    case Request::add_mem_reg:
      return add_mem_reg(p.region.region, fds.get(0));
    case Request::rem_mem_reg:
      return rem_mem_reg(p.region.region);
    case Request::set_vring_num:
      return set_vring_num(p.state);
    case Request::set_vring_addr:
      return set_vring_addr(p.addr);
    case Request::set_vring_base:
      return set_vring_base(p.state);
    case Request::get_vring_base:
      return get_vring_base(p.state);
    case Request::set_vring_kick:
    case Request::set_vring_call:
    case Request::set_vring_err:
      return set_vring_fd(m.request, p.u64, fds);
    case Request::set_vring_enable:
      return set_vring_enable(p.state);
    case Request::get_config:
      return get_config(p.config);
    case Request::set_config:
      return set_config(p.config);
    case Request::get_inflight_fd:
      return get_inflight_fd(p.inflight);
    case Request::set_inflight_fd:
      return set_inflight_fd(p.inflight, fds.get(0));
    case Request::set_log_base:
      return set_log_base(p.log, fds.get(0));
    case Request::set_backend_req_fd:
      return set_backend_req_fd(fds);
    default:
      return -ENOSYS;  // parse_message marks only the requests above as known
  }
}

int VhostUserBackend::reply(Request r, const void* payload, size_t len, int fd) {
  MsgHeader h{static_cast<uint32_t>(r), kVersion | kFlagReply, static_cast<uint32_t>(len)};
  std::span<const int> fds;
  if (fd >= 0) fds = std::span<const int>(&fd, 1);
  int rc = send_message(conn_.get(), h, payload, len, fds, opts_.io_timeout_ms);
  if (rc < 0) VCP_LOG_ERROR("vhost-user: sending the reply to {}: {}", to_string(r), errno_str(rc));
  return rc;
}

// ---- features and ownership ----

int VhostUserBackend::set_features(uint64_t v) {
  const uint64_t offered = device_.features() | bit(kFeatureProtocolFeatures) | bit(kFeatureLogAll);
  if (v & ~offered) {
    VCP_LOG_ERROR("vhost-user: SET_FEATURES {:#x} acknowledges bits never offered ({:#x})", v, v & ~offered);
    return -EINVAL;
  }
  const uint64_t changed = v ^ acked_features_;
  if (changed == bit(kFeatureLogAll)) {
    // Live migration starts or ends: the one change allowed while rings run.
    acked_features_ = v;
    VCP_LOG_INFO("vhost-user: dirty page logging {}{}", (v & bit(kFeatureLogAll)) ? "on" : "off",
                 (v & bit(kFeatureLogAll)) && !log_ ? " (waiting for SET_LOG_BASE)" : "");
    update_dirty_log();
    return 0;
  }
  if (changed != 0 && any_ring_running()) {
    VCP_LOG_ERROR("vhost-user: SET_FEATURES changes features while a ring runs");
    return -EBUSY;
  }
  acked_features_ = v;
  device_.set_features(v & ~(bit(kFeatureProtocolFeatures) | bit(kFeatureLogAll)));
  update_dirty_log();
  return 0;
}

// ---- dirty page log (live migration) ----

DirtyLogState VhostUserBackend::dirty_state(unsigned index) const {
  DirtyLogState s;
  if (!log_ || !(acked_features_ & bit(kFeatureLogAll))) return s;
  const Ring& r = rings_[index];
  s.log = log_.get();
  s.log_used = (r.addr.flags & kVringFlagLog) != 0;
  s.used_gpa = r.addr.log_guest_addr;
  return s;
}

void VhostUserBackend::update_dirty_log() {
  for (unsigned i = 0; i < rings_.size(); ++i)
    if (rings_[i].running) device_.set_dirty_log(i, dirty_state(i));
}

namespace {
// Said when a log goes (replaced, or the connection ends): pages it could not take.
void report_missed(const virtio::DirtyLog& log) {
  if (const uint64_t missed = log.missed(); missed > 0)
    VCP_LOG_ERROR("vhost-user: {} page{} written outside the dirty log (or outside guest memory) could not be "
                  "marked: a migration in progress may miss them",
                  missed, missed == 1 ? "" : "s");
}
}  // namespace

void VhostUserBackend::drop_log() {
  if (!log_) return;
  report_missed(*log_);
  log_.reset();
  log_guard_.reset();
  log_map_.reset();
}

int VhostUserBackend::set_log_base(const LogMsg& l, int fd) {
  if (!(protocol_features_ & bit(kProtoLogShmfd))) {
    VCP_LOG_ERROR("vhost-user: SET_LOG_BASE without the LOG_SHMFD protocol feature");
    return -EINVAL;
  }
  Mapping map;
  uint8_t* base = nullptr;
  bool sealed = false;
  uint64_t granule = 0;
  if (int rc = map_file_range(fd, l.mmap_offset, l.mmap_size, &map, &base, &sealed, &granule); rc < 0) return rc;
  ShrinkGuard guard;
  if (!sealed) guard = guard_unsealed(map, granule, "the dirty log");
  auto log = std::make_unique<virtio::DirtyLog>(base, l.mmap_size);
  VCP_LOG_INFO("vhost-user: dirty log of {} bytes (guest addresses up to {:#x})", l.mmap_size, log->covers());
  // The queues move to the new log before the old one is unmapped (QEMU resizes it while they run).
  std::unique_ptr<virtio::DirtyLog> old_log = std::move(log_);
  ShrinkGuard old_guard = std::move(log_guard_);
  Mapping old_map = std::move(log_map_);
  log_map_ = std::move(map);
  log_guard_ = std::move(guard);
  log_ = std::move(log);
  update_dirty_log();
  if (old_log) report_missed(*old_log);
  old_log.reset();
  old_guard.reset();
  old_map.reset();
  return reply_u64(Request::set_log_base, 0);
}

int VhostUserBackend::set_protocol_features(uint64_t v) {
  if (v & ~kBackendProtocolFeatures) {
    VCP_LOG_ERROR("vhost-user: SET_PROTOCOL_FEATURES {:#x} has bits never offered ({:#x})", v,
                  v & ~kBackendProtocolFeatures);
    return -EINVAL;
  }
  protocol_features_ = v;
  return 0;
}

void VhostUserBackend::reset_rings() {
  device_.reset();
  for (auto& r : rings_) r = Ring{};
  acked_features_ = 0;
}

// ---- memory table ----

ShrinkGuard VhostUserBackend::guard_unsealed(const Mapping& map, uint64_t granule, const char* what) {
  auto g = ShrinkGuard::watch(map.data(), map.size(), granule, fault_fd_.get());
  if (!g.ok()) {
    // Said every time: this mapping is the one a truncation would crash the VCP on.
    VCP_LOG_WARN("vhost-user: the file of {} cannot be sealed against shrinking, and cannot be guarded either "
                 "({}): a frontend that truncates it makes this VCP fault (SIGBUS). QEMU: use "
                 "memory-backend-memfd (seal=on, its default)",
                 what, errno_str(g.error()));
    return {};
  }
  if (!warned_unsealed_) {
    warned_unsealed_ = true;
    VCP_LOG_WARN("vhost-user: the file of {} cannot be sealed against shrinking (not a memfd that allows sealing): "
                 "if the frontend truncates it, the pages lost read as zeros here and the frontend is dropped. "
                 "QEMU: use memory-backend-memfd (seal=on, its default)",
                 what);
  }
  return std::move(*g);
}

int VhostUserBackend::map_region(const MemRegion& r, int fd, MappedRegion* out, virtio::MemoryRegion* mr) {
  uint64_t end = 0;
  if (r.size == 0 || __builtin_add_overflow(r.guest_addr, r.size, &end) ||
      __builtin_add_overflow(r.user_addr, r.size, &end)) {
    VCP_LOG_ERROR("vhost-user: region gpa {:#x} uva {:#x} size {:#x} is empty or wraps", r.guest_addr, r.user_addr,
                  r.size);
    return -EINVAL;
  }
  uint8_t* host = nullptr;
  bool sealed = false;
  uint64_t granule = 0;
  if (int rc = map_file_range(fd, r.mmap_offset, r.size, &out->map, &host, &sealed, &granule); rc < 0) return rc;
  if (!sealed) out->guard = guard_unsealed(out->map, granule, "guest memory");
  out->desc = r;
  *mr = {r.guest_addr, r.size, r.user_addr, host};
  return 0;
}

int VhostUserBackend::set_mem_table(const MemTable& t, FdList& fds) {
  virtio::GuestMemory next;
  std::vector<MappedRegion> next_regions(t.nregions);
  for (uint32_t i = 0; i < t.nregions; ++i) {
    virtio::MemoryRegion mr;
    if (int rc = map_region(t.regions[i], fds.get(i), &next_regions[i], &mr); rc < 0) return rc;
    if (int rc = next.add(mr); rc < 0) {
      VCP_LOG_ERROR("vhost-user: region {} (gpa {:#x} size {:#x}) overlaps another", i, mr.guest_addr, mr.size);
      return rc;
    }
  }
  return commit_memory(next, next_regions);
}

int VhostUserBackend::add_mem_reg(const MemRegion& r, int fd) {
  virtio::GuestMemory next = memory_;
  MappedRegion added;
  virtio::MemoryRegion mr;
  if (int rc = map_region(r, fd, &added, &mr); rc < 0) return rc;
  if (int rc = next.add(mr); rc < 0) {
    VCP_LOG_ERROR("vhost-user: ADD_MEM_REG gpa {:#x} size {:#x}: {}", r.guest_addr, r.size,
                  rc == -ENOSPC ? "no free slot" : "overlaps a region");
    return rc;
  }
  std::vector<MappedRegion> next_regions;
  next_regions.reserve(regions_.size() + 1);
  for (auto& old : regions_) next_regions.push_back(std::move(old));
  next_regions.push_back(std::move(added));
  return commit_memory(next, next_regions);
}

int VhostUserBackend::rem_mem_reg(const MemRegion& r) {
  size_t found = regions_.size();
  for (size_t i = 0; i < regions_.size(); ++i) {
    const MemRegion& d = regions_[i].desc;
    if (d.guest_addr == r.guest_addr && d.size == r.size && d.user_addr == r.user_addr) found = i;
  }
  if (found == regions_.size()) {
    VCP_LOG_ERROR("vhost-user: REM_MEM_REG gpa {:#x} size {:#x}: no such region", r.guest_addr, r.size);
    return -ENOENT;
  }
  virtio::GuestMemory next = memory_;
  if (int rc = next.remove(r.guest_addr, r.size); rc < 0) return rc;
  std::vector<MappedRegion> next_regions;
  next_regions.reserve(regions_.size());
  for (size_t i = 0; i < regions_.size(); ++i)
    if (i != found) next_regions.push_back(std::move(regions_[i]));
  // regions_[found] keeps its mapping until commit_memory has stopped every user of it.
  std::vector<MappedRegion> keep;
  keep.push_back(std::move(regions_[found]));
  regions_ = std::move(keep);
  return commit_memory(next, next_regions);
}

// Installs a new table: running rings hold pointers into the old mappings, so they are stopped
// (with the device paused) and started again on the new one. The old mappings go only after.
int VhostUserBackend::commit_memory(const virtio::GuestMemory& next, std::vector<MappedRegion>& next_regions) {
  device_.pause();
  std::vector<bool> restart(rings_.size(), false);
  for (unsigned i = 0; i < rings_.size(); ++i) {
    restart[i] = rings_[i].running;
    stop_ring(i);
  }
  memory_ = next;
  regions_.swap(next_regions);
  next_regions.clear();  // unmaps what left the table; no queue touches it now
  int result = 0;
  for (unsigned i = 0; i < rings_.size(); ++i) {
    int rc = try_start(i);
    if (rc < 0 && restart[i]) VCP_LOG_ERROR("vhost-user: ring {} cannot run on the new memory table", i);
    if (rc < 0 && result == 0) result = rc;
  }
  device_.resume();
  return result;
}

// ---- rings ----

int VhostUserBackend::check_index(uint32_t index, const char* what) const {
  if (index < rings_.size()) return 0;
  VCP_LOG_ERROR("vhost-user: {} names ring {}; the device has {}", what, index, rings_.size());
  return -EINVAL;
}

int VhostUserBackend::check_stopped(uint32_t index, const char* what) const {
  if (int rc = check_index(index, what); rc < 0) return rc;
  if (!rings_[index].running) return 0;
  VCP_LOG_ERROR("vhost-user: {} on running ring {}", what, index);
  return -EBUSY;
}

bool VhostUserBackend::any_ring_running() const {
  for (const auto& r : rings_)
    if (r.running) return true;
  return false;
}

int VhostUserBackend::translate_ring(const Ring& r, virtio::QueueLayout* out) const {
  const uint64_t n = r.num;
  // Sizes and alignments of virtio 1.x split rings, the event index fields included.
  const uint64_t desc_len = 16 * n, avail_len = 6 + 2 * n, used_len = 6 + 8 * n;
  uint8_t* desc = memory_.translate_user(r.addr.desc_user_addr, desc_len);
  uint8_t* avail = memory_.translate_user(r.addr.avail_user_addr, avail_len);
  uint8_t* used = memory_.translate_user(r.addr.used_user_addr, used_len);
  if (!desc || !avail || !used) {
    VCP_LOG_ERROR("vhost-user: ring {} (size {}) desc {:#x} avail {:#x} used {:#x} is not inside guest memory",
                  r.addr.index, n, r.addr.desc_user_addr, r.addr.avail_user_addr, r.addr.used_user_addr);
    return -EFAULT;
  }
  if ((reinterpret_cast<uintptr_t>(desc) & 15) || (reinterpret_cast<uintptr_t>(avail) & 1) ||
      (reinterpret_cast<uintptr_t>(used) & 3)) {
    VCP_LOG_ERROR("vhost-user: ring {} maps to misaligned host addresses (region mmap offset)", r.addr.index);
    return -EINVAL;
  }
  out->size = static_cast<uint16_t>(n);
  out->desc = reinterpret_cast<vring_desc*>(desc);
  out->avail = reinterpret_cast<vring_avail*>(avail);
  out->used = reinterpret_cast<vring_used*>(used);
  return 0;
}

int VhostUserBackend::try_start(unsigned index) {
  Ring& r = rings_[index];
  if (r.running || r.num == 0 || !r.addr_set || !r.kick_set) return 0;
  if (protocol_features_negotiated() && !r.enabled) return 0;
  if (memory_.size() == 0) return 0;  // addresses are translated once memory arrives
  QueueStart q;
  q.index = index;
  if (int rc = translate_ring(r, &q.layout); rc < 0) return rc;
  q.last_avail_idx = r.base;
  q.event_idx = (acked_features_ & bit(VIRTIO_RING_F_EVENT_IDX)) != 0;
  q.kick_fd = r.kick.get();
  q.call_fd = r.call.get();
  q.memory = &memory_;
  q.dirty = dirty_state(index);
  if (inflight_[index].region != nullptr) {
    if (r.num > inflight_queue_size_) {
      VCP_LOG_ERROR("vhost-user: ring {} size {} exceeds the inflight region's {}", index, r.num,
                    inflight_queue_size_);
      return -EINVAL;
    }
    q.inflight = &inflight_[index];
  }
  if (int rc = device_.start_queue(q); rc < 0) {
    VCP_LOG_ERROR("vhost-user: the device refused to start ring {}: {}", index, errno_str(rc));
    return rc;
  }
  r.running = true;
  VCP_LOG_DEBUG("vhost-user: ring {} started (size {}, base {})", index, r.num, r.base);
  return 0;
}

void VhostUserBackend::stop_ring(unsigned index) {
  Ring& r = rings_[index];
  if (!r.running) return;
  r.base = device_.stop_queue(index);
  r.running = false;
}

int VhostUserBackend::set_vring_num(const vhost_vring_state& s) {
  if (int rc = check_stopped(s.index, "SET_VRING_NUM"); rc < 0) return rc;
  Ring& r = rings_[s.index];
  if (!is_pow2(s.num) || s.num > device_.max_queue_size()) {
    VCP_LOG_ERROR("vhost-user: ring {} size {} is not a power of two up to {}", s.index, s.num,
                  device_.max_queue_size());
    return -EINVAL;
  }
  r.num = s.num;
  return try_start(s.index);
}

int VhostUserBackend::set_vring_addr(const vhost_vring_addr& a) {
  if (int rc = check_index(a.index, "SET_VRING_ADDR"); rc < 0) return rc;
  Ring& r = rings_[a.index];
  if (a.flags & ~kVringFlagLog) {
    VCP_LOG_ERROR("vhost-user: ring {} flags {:#x}: only VHOST_VRING_F_LOG is known", a.index, a.flags);
    return -EINVAL;
  }
  if (r.running) {
    // Live migration turns the used ring's logging on or off on a running ring (QEMU's
    // vhost_dev_set_log): allowed when the ring stays where it is.
    if (a.desc_user_addr != r.addr.desc_user_addr || a.avail_user_addr != r.addr.avail_user_addr ||
        a.used_user_addr != r.addr.used_user_addr) {
      VCP_LOG_ERROR("vhost-user: SET_VRING_ADDR moves running ring {}", a.index);
      return -EBUSY;
    }
    r.addr.flags = a.flags;
    r.addr.log_guest_addr = a.log_guest_addr;
    device_.set_dirty_log(a.index, dirty_state(a.index));
    return 0;
  }
  if ((a.desc_user_addr & 15) || (a.avail_user_addr & 1) || (a.used_user_addr & 3)) {
    VCP_LOG_ERROR("vhost-user: ring {} addresses misaligned (desc {:#x} avail {:#x} used {:#x})", a.index,
                  a.desc_user_addr, a.avail_user_addr, a.used_user_addr);
    return -EINVAL;
  }
  Ring candidate;
  candidate.num = r.num;
  candidate.addr = a;
  if (memory_.size() > 0 && r.num > 0) {
    virtio::QueueLayout layout;
    if (int rc = translate_ring(candidate, &layout); rc < 0) return rc;
  }
  r.addr = a;
  r.addr_set = true;
  return try_start(a.index);
}

int VhostUserBackend::set_vring_base(const vhost_vring_state& s) {
  if (int rc = check_stopped(s.index, "SET_VRING_BASE"); rc < 0) return rc;
  Ring& r = rings_[s.index];
  if (s.num > 0xffff) {
    VCP_LOG_ERROR("vhost-user: ring {} base {} does not fit 16 bits", s.index, s.num);
    return -EINVAL;
  }
  r.base = static_cast<uint16_t>(s.num);
  return 0;
}

int VhostUserBackend::get_vring_base(const vhost_vring_state& s) {
  if (int rc = check_index(s.index, "GET_VRING_BASE"); rc < 0) return rc;
  stop_ring(s.index);
  Ring& r = rings_[s.index];
  // A stopped ring starts again only after a new SET_VRING_KICK.
  r.kick.reset();
  r.kick_set = false;
  vhost_vring_state out{s.index, r.base};
  return reply(Request::get_vring_base, &out, sizeof(out));
}

int VhostUserBackend::set_vring_fd(Request req, uint64_t v, FdList& fds) {
  const auto index = static_cast<uint32_t>(v & kVringIndexMask);
  if (int rc = check_index(index, to_string(req)); rc < 0) return rc;
  Ring& r = rings_[index];
  UniqueFd fd = (v & kVringNofdMask) ? UniqueFd() : fds.take(0);
  switch (req) {
    case Request::set_vring_kick:
      stop_ring(index);  // the device holds the old kick fd until it stops
      r.kick = std::move(fd);
      r.kick_set = true;
      return try_start(index);
    case Request::set_vring_call:
      if (r.running) device_.set_call_fd(index, fd.get());
      r.call = std::move(fd);  // the old one closes after the device let go of it
      return 0;
    default:
      r.err = std::move(fd);
      return 0;
  }
}

int VhostUserBackend::set_vring_enable(const vhost_vring_state& s) {
  if (int rc = check_index(s.index, "SET_VRING_ENABLE"); rc < 0) return rc;
  if (s.num > 1) {
    VCP_LOG_ERROR("vhost-user: SET_VRING_ENABLE ring {} with {}", s.index, s.num);
    return -EINVAL;
  }
  rings_[s.index].enabled = s.num == 1;
  if (s.num == 1) return try_start(s.index);
  stop_ring(s.index);
  return 0;
}

// ---- config space ----

// ---- the back-end channel ----

int VhostUserBackend::set_backend_req_fd(FdList& fds) {
  if (!(protocol_features_ & bit(kProtoBackendReq))) {
    VCP_LOG_ERROR("vhost-user: SET_BACKEND_REQ_FD without the BACKEND_REQ protocol feature");
    return -EINVAL;
  }
  struct stat st {};
  if (::fstat(fds.get(0), &st) != 0 || !S_ISSOCK(st.st_mode)) {
    VCP_LOG_ERROR("vhost-user: SET_BACKEND_REQ_FD with a descriptor that is not a socket");
    return -EINVAL;
  }
  backend_req_ = fds.take(0);
  return 0;
}

int VhostUserBackend::config_changed() {
  if (!backend_req_ || !(protocol_features_ & bit(kProtoConfig))) return -ENOTCONN;
  MsgHeader h{static_cast<uint32_t>(BackendRequest::config_change_msg), kVersion, 0};
  int rc = send_message(backend_req_.get(), h, nullptr, 0, {}, opts_.io_timeout_ms);
  if (rc < 0) {
    VCP_LOG_WARN("vhost-user: telling the front-end its config changed: {}; closing the back-end channel",
                 errno_str(rc));
    backend_req_.reset();
  }
  return rc;
}

int VhostUserBackend::get_config(const ConfigMsg& c) {
  ConfigMsg out = c;
  int rc = device_.read_config(c.offset, std::span<uint8_t>(out.data, c.size));
  if (rc < 0) {
    // The spec's error answer: the same request with an empty payload.
    VCP_LOG_WARN("vhost-user: GET_CONFIG offset {} size {}: {}", c.offset, c.size, errno_str(rc));
    return reply(Request::get_config, nullptr, 0);
  }
  return reply(Request::get_config, &out, kConfigHeaderSize + c.size);
}

int VhostUserBackend::set_config(const ConfigMsg& c) {
  if (c.flags > kConfigFlagMigration) {
    VCP_LOG_ERROR("vhost-user: SET_CONFIG flags {:#x}", c.flags);
    return -EINVAL;
  }
  return device_.write_config(c.offset, std::span<const uint8_t>(c.data, c.size));
}

// ---- inflight region ----

bool VhostUserBackend::inflight_shape_ok(const InflightMsg& in, const char* what) const {
  if (in.num_queues != 0 && in.num_queues <= device_.num_queues() && is_pow2(in.queue_size) &&
      in.queue_size <= device_.max_queue_size())
    return true;
  VCP_LOG_ERROR("vhost-user: {} for {} queues of {}: the device has {} of at most {}", what, in.num_queues,
                in.queue_size, device_.num_queues(), device_.max_queue_size());
  return false;
}

int VhostUserBackend::get_inflight_fd(const InflightMsg& in) {
  InflightMsg out{};
  out.num_queues = in.num_queues;
  out.queue_size = in.queue_size;
  // mmap_size 0 tells the front-end to go on without inflight tracking.
  if (!inflight_shape_ok(in, "GET_INFLIGHT_FD")) return reply(Request::get_inflight_fd, &out, sizeof(out));
  const uint64_t bytes = uint64_t{in.num_queues} * virtio::inflight_queue_bytes(in.queue_size);
  UniqueFd fd(::memfd_create("vcp-inflight", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!fd || ::ftruncate(fd.get(), static_cast<off_t>(bytes)) != 0 ||
      ::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_SEAL) != 0) {
    VCP_LOG_ERROR("vhost-user: creating the {}-byte inflight region: {}", bytes, errno_str(errno));
    return reply(Request::get_inflight_fd, &out, sizeof(out));
  }
  // A fresh memfd reads as zeroes: every queue region starts uninitialised (version 0).
  out.mmap_size = bytes;
  out.mmap_offset = 0;
  return reply(Request::get_inflight_fd, &out, sizeof(out), fd.get());
}

int VhostUserBackend::set_inflight_fd(const InflightMsg& in, int fd) {
  if (any_ring_running()) {
    VCP_LOG_ERROR("vhost-user: SET_INFLIGHT_FD while a ring runs");
    return -EBUSY;
  }
  if (!inflight_shape_ok(in, "SET_INFLIGHT_FD")) return -EINVAL;
  const size_t per_queue = virtio::inflight_queue_bytes(in.queue_size);
  const uint64_t need = uint64_t{in.num_queues} * per_queue;
  if (in.mmap_size < need) {
    VCP_LOG_ERROR("vhost-user: inflight region of {} bytes; {} queues of {} need {}", in.mmap_size, in.num_queues,
                  in.queue_size, need);
    return -EINVAL;
  }
  Mapping map;
  uint8_t* base = nullptr;
  bool sealed = false;
  uint64_t granule = 0;
  if (int rc = map_file_range(fd, in.mmap_offset, need, &map, &base, &sealed, &granule); rc < 0) return rc;
  ShrinkGuard guard;  // before the first read below: the file could shrink from now on
  if (!sealed) guard = guard_unsealed(map, granule, "the inflight region");
  std::vector<virtio::InflightQueue> queues(rings_.size());
  for (uint16_t i = 0; i < in.num_queues; ++i) {
    auto* q = reinterpret_cast<virtio::InflightQueueSplit*>(base + i * per_queue);
    // The queue side records desc_num = its ring size; more than the slice holds is corrupt.
    if (q->version != 0 && q->desc_num > in.queue_size) {
      VCP_LOG_ERROR("vhost-user: inflight queue {} records {} descriptors in a slice for {}", i, q->desc_num,
                    in.queue_size);
      return -EINVAL;
    }
    queues[i].region = q;  // the queue continues the fetch order from what it finds recorded
  }
  inflight_guard_.reset();  // the old mapping's guard goes before the mapping
  inflight_map_ = std::move(map);
  inflight_guard_ = std::move(guard);
  inflight_ = std::move(queues);
  inflight_queue_size_ = in.queue_size;
  return 0;
}

}  // namespace vcp::vhost
