#include "base/service_notify.hpp"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "base/unique_fd.hpp"

namespace vcp {
namespace {

// A datagram socket standing for the service manager's, at `name` ("/path" or "@abstract"),
// with $NOTIFY_SOCKET set to it for the test.
class Manager {
 public:
  explicit Manager(const std::string& name) {
    fd_.reset(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::memcpy(a.sun_path, name.data(), name.size());
    if (name[0] == '@') a.sun_path[0] = '\0';
    const socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size() + (name[0] == '/'));
    EXPECT_EQ(::bind(fd_.get(), reinterpret_cast<sockaddr*>(&a), len), 0) << std::strerror(errno);
    setenv("NOTIFY_SOCKET", name.c_str(), 1);
    if (name[0] == '/') path_ = name;
  }
  ~Manager() {
    unsetenv("NOTIFY_SOCKET");
    if (!path_.empty()) unlink(path_.c_str());
  }
  // The next datagram, or "" when none came.
  std::string next() {
    char buf[512];
    const ssize_t n = ::recv(fd_.get(), buf, sizeof buf, 0);
    return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
  }

 private:
  UniqueFd fd_;
  std::string path_;
};

TEST(ServiceNotify, WithoutASocketNothingIsSentAndNothingFails) {
  unsetenv("NOTIFY_SOCKET");
  EXPECT_EQ(notify_service_manager("READY=1"), 0);
}

TEST(ServiceNotify, ReachesASocketByPath) {
  const std::string path = "/tmp/vcp-notify-test." + std::to_string(getpid());
  Manager m(path);
  EXPECT_EQ(notify_service_manager("READY=1\nSTATUS=serving"), 0);
  EXPECT_EQ(m.next(), "READY=1\nSTATUS=serving");
  EXPECT_EQ(notify_service_manager("STOPPING=1"), 0);
  EXPECT_EQ(m.next(), "STOPPING=1");
}

TEST(ServiceNotify, ReachesAnAbstractSocket) {
  Manager m("@vcp-notify-test." + std::to_string(getpid()));
  EXPECT_EQ(notify_service_manager("READY=1"), 0);
  EXPECT_EQ(m.next(), "READY=1");
}

TEST(ServiceNotify, ASocketThatIsNotThereIsAnError) {
  setenv("NOTIFY_SOCKET", "/tmp/vcp-notify-test.nobody-listens", 1);
  EXPECT_EQ(notify_service_manager("READY=1"), -ENOENT);
  setenv("NOTIFY_SOCKET", "vsock:2:1234", 1);  // another transport: not ours
  EXPECT_EQ(notify_service_manager("READY=1"), -EAFNOSUPPORT);
  unsetenv("NOTIFY_SOCKET");
}

TEST(ServiceNotify, AReloadCarriesTheMonotonicClock) {
  const std::string s = reloading_state();
  ASSERT_EQ(s.rfind("RELOADING=1\nMONOTONIC_USEC=", 0), 0u) << s;
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  const unsigned long long now = static_cast<unsigned long long>(ts.tv_sec) * 1000000ull + ts.tv_nsec / 1000;
  const unsigned long long sent = std::stoull(s.substr(s.find('=', 12) + 1));
  EXPECT_LE(sent, now);
  EXPECT_GT(sent + 10000000ull, now);
}

}  // namespace
}  // namespace vcp
