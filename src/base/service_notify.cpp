#include "base/service_notify.hpp"

#include <sys/socket.h>
#include <sys/un.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <ctime>

#include "base/log.hpp"
#include "base/unique_fd.hpp"

namespace vcp {

int notify_service_manager(std::string_view state) {
  const char* where = std::getenv("NOTIFY_SOCKET");
  if (!where || !*where) return 0;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const size_t len = std::strlen(where);
  if ((where[0] != '/' && where[0] != '@') || len >= sizeof(addr.sun_path)) return -EAFNOSUPPORT;
  std::memcpy(addr.sun_path, where, len);
  if (where[0] == '@') addr.sun_path[0] = '\0';  // the abstract namespace: no trailing NUL counted
  const socklen_t alen = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + len + (where[0] == '/' ? 1 : 0));
  UniqueFd fd(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!fd) return -errno;
  const ssize_t n = ::sendto(fd.get(), state.data(), state.size(), MSG_NOSIGNAL, reinterpret_cast<sockaddr*>(&addr), alen);
  if (n < 0) return -errno;
  return static_cast<size_t>(n) == state.size() ? 0 : -EMSGSIZE;
}

void notify_service_manager_or_warn(std::string_view state, std::string_view who) {
  static std::atomic<bool> warned{false};
  const int rc = notify_service_manager(state);
  if (rc != 0 && !warned.exchange(true))
    VCP_LOG_WARN("{}: cannot notify the service manager at NOTIFY_SOCKET={}: {}", who, std::getenv("NOTIFY_SOCKET"),
                 std::strerror(-rc));
}

std::string reloading_state() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  const unsigned long long usec = static_cast<unsigned long long>(ts.tv_sec) * 1000000ull +
                                  static_cast<unsigned long long>(ts.tv_nsec) / 1000ull;
  return "RELOADING=1\nMONOTONIC_USEC=" + std::to_string(usec);
}

}  // namespace vcp
