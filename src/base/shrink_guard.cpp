#include "base/shrink_guard.hpp"

#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <mutex>

namespace vcp {
namespace {

// One watched range. `state` says who may read the rest: the handler only reads a live slot,
// and a slot's fields are written only while it is busy (claimed, or being released).
struct Slot {
  static constexpr uint32_t kFree = 0, kBusy = 1, kLive = 2;
  std::atomic<uint32_t> state{kFree};
  std::atomic<uintptr_t> begin{0}, end{0}, granule{0};
  std::atomic<int> notify{-1};
  std::atomic<uint64_t> faults{0};
};
static_assert(std::atomic<uintptr_t>::is_always_lock_free && std::atomic<uint64_t>::is_always_lock_free &&
                  std::atomic<uint32_t>::is_always_lock_free && std::atomic<int>::is_always_lock_free,
              "the SIGBUS handler needs lock-free atomics");

Slot g_slots[ShrinkGuard::kMaxRanges];
struct sigaction g_previous {};  // written once, before our handler can run
std::once_flag g_install_once;
int g_install_error = 0;

// Hands the signal to whoever handled SIGBUS before us; with no one, the default action
// (the process dies with a core, as it would have without a guard).
void pass_on(int sig, siginfo_t* si, void* ctx) {
  if (g_previous.sa_handler != SIG_DFL && g_previous.sa_handler != SIG_IGN) {  // one union
    if (g_previous.sa_flags & SA_SIGINFO)
      g_previous.sa_sigaction(sig, si, ctx);
    else
      g_previous.sa_handler(sig);
    return;
  }
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  ::sigaction(SIGBUS, &dfl, nullptr);
  // Pending until this handler returns (SIGBUS is blocked while it runs), then fatal.
  ::raise(SIGBUS);
}

// Async-signal-safe: atomics and raw system calls only.
void on_sigbus(int sig, siginfo_t* si, void* ctx) {
  const int saved_errno = errno;
  // Only faults the kernel raised carry an address; a SIGBUS sent with kill() is not ours.
  if (si != nullptr && si->si_code > 0) {
    const auto addr = reinterpret_cast<uintptr_t>(si->si_addr);
    for (Slot& s : g_slots) {
      if (s.state.load(std::memory_order_acquire) != Slot::kLive) continue;
      if (addr < s.begin.load(std::memory_order_relaxed) || addr >= s.end.load(std::memory_order_relaxed)) continue;
      const uintptr_t g = s.granule.load(std::memory_order_relaxed);
      const uintptr_t base = addr & ~(g - 1);
      const long p = ::syscall(SYS_mmap, base, g, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
                               -1, 0);
      if (p == -1 || static_cast<uintptr_t>(p) != base) break;  // cannot repair: fatal as before
      s.faults.fetch_add(1, std::memory_order_relaxed);
      const int nfd = s.notify.load(std::memory_order_relaxed);
      if (nfd >= 0) {
        const uint64_t one = 1;
        (void)::syscall(SYS_write, nfd, &one, sizeof(one));
      }
      errno = saved_errno;
      return;  // the access runs again, on zeros
    }
  }
  errno = saved_errno;
  pass_on(sig, si, ctx);
}

void install() {
  struct sigaction sa {};
  sa.sa_sigaction = on_sigbus;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
  sigemptyset(&sa.sa_mask);
  if (::sigaction(SIGBUS, &sa, &g_previous) != 0) g_install_error = errno;
}

bool is_pow2(uintptr_t v) { return v != 0 && (v & (v - 1)) == 0; }

}  // namespace

Result<ShrinkGuard> ShrinkGuard::watch(void* addr, size_t len, size_t granule, int notify_fd) {
  const auto begin = reinterpret_cast<uintptr_t>(addr);
  uintptr_t end = 0;
  if (begin == 0 || len == 0 || !is_pow2(granule) || (begin & (granule - 1)) != 0 || (len & (granule - 1)) != 0 ||
      __builtin_add_overflow(begin, len, &end))
    return Err(EINVAL);
  std::call_once(g_install_once, install);
  if (g_install_error != 0) return Err(g_install_error);
  for (size_t i = 0; i < kMaxRanges; ++i) {
    Slot& s = g_slots[i];
    uint32_t expected = Slot::kFree;
    if (!s.state.compare_exchange_strong(expected, Slot::kBusy, std::memory_order_acquire)) continue;
    s.begin.store(begin, std::memory_order_relaxed);
    s.end.store(end, std::memory_order_relaxed);
    s.granule.store(granule, std::memory_order_relaxed);
    s.notify.store(notify_fd, std::memory_order_relaxed);
    s.faults.store(0, std::memory_order_relaxed);
    s.state.store(Slot::kLive, std::memory_order_release);
    return ShrinkGuard(static_cast<int>(i));
  }
  return Err(ENOSPC);
}

uint64_t ShrinkGuard::faults() const {
  return slot_ < 0 ? 0 : g_slots[slot_].faults.load(std::memory_order_relaxed);
}

void ShrinkGuard::reset() {
  if (slot_ < 0) return;
  Slot& s = g_slots[slot_];
  s.state.store(Slot::kBusy, std::memory_order_release);
  s.notify.store(-1, std::memory_order_relaxed);
  s.state.store(Slot::kFree, std::memory_order_release);
  slot_ = -1;
}

}  // namespace vcp
