#include "base/acceptor.hpp"
#include "base/log.hpp"
#include "base/result.hpp"

#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include <gtest/gtest.h>

namespace vcp {
namespace {

// A listening unix socket in the abstract namespace (nothing to clean up).
UniqueFd listen_abstract(const std::string& name, sockaddr_un* addr, socklen_t* len) {
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  std::memset(addr, 0, sizeof(*addr));
  addr->sun_family = AF_UNIX;
  std::memcpy(addr->sun_path + 1, name.data(), name.size());
  *len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  if (bind(fd.get(), reinterpret_cast<sockaddr*>(addr), *len) != 0 || listen(fd.get(), 16) != 0) return UniqueFd();
  return fd;
}

TEST(Acceptor, TakesConnections) {
  sockaddr_un addr;
  socklen_t len;
  UniqueFd lfd = listen_abstract("vcp-acceptor-" + std::to_string(getpid()), &addr, &len);
  ASSERT_TRUE(lfd);
  Acceptor a(lfd.get(), "test");
  UniqueFd c(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_EQ(connect(c.get(), reinterpret_cast<sockaddr*>(&addr), len), 0);
  UniqueFd s = a.accept();
  EXPECT_TRUE(s);
  EXPECT_EQ(a.shed(), 0u);
}

// Out of descriptors (in a child, so the limit stays there): every connection waiting is closed
// at once instead of staying in the backlog, and accept() says EMFILE.
TEST(Acceptor, OutOfDescriptorsShedsConnections) {
  sockaddr_un addr;
  socklen_t len;
  UniqueFd lfd = listen_abstract("vcp-acceptor-shed-" + std::to_string(getpid()), &addr, &len);
  ASSERT_TRUE(lfd);
  int ready[2], go[2];
  ASSERT_EQ(pipe(ready), 0);
  ASSERT_EQ(pipe(go), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    Acceptor a(lfd.get(), "test");
    // Sanitizers (UBSan's vptr check) need descriptors of their own the first time they see a
    // type; the log line the Acceptor writes is written once while some are left, so that out of
    // them only the Acceptor's own work is under test.
    VCP_LOG_WARN("{}: acceptor test warms the log up: {} ({} so far)", std::string("test"), errno_str(EMFILE), a.shed());
    rlimit lim{};
    getrlimit(RLIMIT_NOFILE, &lim);
    lim.rlim_cur = 64;  // a few to fill, whatever the limit was
    if (setrlimit(RLIMIT_NOFILE, &lim) != 0) _exit(9);
    std::vector<int> filler;  // every descriptor left, taken
    for (int fd; (fd = dup(0)) >= 0;) filler.push_back(fd);
    if (errno != EMFILE) _exit(10);
    char b = 0;
    if (write(ready[1], &b, 1) != 1 || read(go[0], &b, 1) != 1) _exit(11);
    for (int i = 0; i < 3; ++i) {
      UniqueFd s = a.accept();
      if (s || errno != EMFILE) _exit(12 + i);
    }
    _exit(a.shed() == 3 ? 0 : 20);
  }
  close(ready[1]);
  close(go[0]);
  char b = 0;
  ASSERT_EQ(read(ready[0], &b, 1), 1);
  std::vector<UniqueFd> clients;
  for (int i = 0; i < 3; ++i) {
    clients.emplace_back(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    ASSERT_EQ(connect(clients.back().get(), reinterpret_cast<sockaddr*>(&addr), len), 0);
  }
  ASSERT_EQ(write(go[1], &b, 1), 1);
  for (auto& c : clients) {
    pollfd p{c.get(), POLLIN, 0};
    ASSERT_EQ(poll(&p, 1, 10000), 1) << "a connection was left waiting";
    EXPECT_LE(read(c.get(), &b, 1), 0);  // closed by the other end
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  close(ready[0]);
  close(go[1]);
}

}  // namespace
}  // namespace vcp
