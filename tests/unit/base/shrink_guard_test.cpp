#include "base/shrink_guard.hpp"

#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <vector>

#include "base/unique_fd.hpp"

namespace vcp {
namespace {

const size_t kPage = static_cast<size_t>(sysconf(_SC_PAGESIZE));

// A file that cannot be sealed (a memfd without MFD_ALLOW_SEALING), mapped shared, the way an
// unsealable guest memory file reaches a VCP.
struct ShrinkableFile {
  explicit ShrinkableFile(size_t pages) : size(pages * kPage) {
    fd.reset(memfd_create("shrink-guard-test", MFD_CLOEXEC));
    if (!fd || ftruncate(fd.get(), static_cast<off_t>(size)) != 0) return;
    void* m = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
    if (m != MAP_FAILED) p = static_cast<volatile uint8_t*>(m);
  }
  ~ShrinkableFile() {
    if (p) munmap(const_cast<uint8_t*>(p), size);
  }
  UniqueFd fd;
  volatile uint8_t* p = nullptr;
  size_t size;
};

// Dies of the SIGBUS itself, or of a sanitizer's report of it (which exits non-zero); a
// child that lived on to _exit(0) does not match.
bool died_of_the_fault(int status) {
  if (WIFSIGNALED(status)) return WTERMSIG(status) == SIGBUS;
  return WIFEXITED(status) && WEXITSTATUS(status) != 0;
}

class ShrinkGuardTest : public ::testing::Test {
 protected:
  void SetUp() override { GTEST_FLAG_SET(death_test_style, "threadsafe"); }
};

TEST_F(ShrinkGuardTest, PagesPastANewEndOfFileReadAsZerosAndAreCounted) {
  ShrinkableFile f(4);
  ASSERT_NE(f.p, nullptr);
  for (size_t i = 0; i < f.size; ++i) f.p[i] = 0xa5;
  UniqueFd note(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  auto g = ShrinkGuard::watch(const_cast<uint8_t*>(f.p), f.size, kPage, note.get());
  ASSERT_TRUE(g.ok()) << g.error();
  EXPECT_TRUE(g->active());
  EXPECT_EQ(g->faults(), 0u);

  ASSERT_EQ(ftruncate(f.fd.get(), static_cast<off_t>(kPage)), 0);  // pages 1-3 are gone
  EXPECT_EQ(f.p[2 * kPage + 17], 0) << "a page past the end reads as zeros";
  f.p[3 * kPage] = 7;  // a write past the end lands in private memory
  EXPECT_EQ(f.p[3 * kPage], 7);
  EXPECT_EQ(f.p[2 * kPage + 18], 0) << "the replaced page faults once";
  EXPECT_EQ(g->faults(), 2u);
  uint64_t n = 0;
  ASSERT_EQ(read(note.get(), &n, sizeof(n)), static_cast<ssize_t>(sizeof(n)));
  EXPECT_EQ(n, 2u) << "one note per replaced page";

  // The page still inside the file is still shared with it.
  EXPECT_EQ(f.p[kPage - 1], 0xa5);
  const uint8_t b = 0x3c;
  ASSERT_EQ(pwrite(f.fd.get(), &b, 1, 5), 1);
  EXPECT_EQ(f.p[5], 0x3c);
  // Page 1 was never touched: it is still the file's mapping and faults when touched.
  EXPECT_EQ(f.p[kPage], 0);
  EXPECT_EQ(g->faults(), 3u);
}

TEST_F(ShrinkGuardTest, WithoutANotifyFdFaultsAreStillCounted) {
  ShrinkableFile f(2);
  ASSERT_NE(f.p, nullptr);
  auto g = ShrinkGuard::watch(const_cast<uint8_t*>(f.p), f.size, kPage, -1);
  ASSERT_TRUE(g.ok());
  ASSERT_EQ(ftruncate(f.fd.get(), 0), 0);
  EXPECT_EQ(f.p[0], 0);
  EXPECT_EQ(f.p[kPage + 1], 0);
  EXPECT_EQ(g->faults(), 2u);
}

TEST_F(ShrinkGuardTest, AFaultOutsideEveryGuardStaysFatal) {
  ShrinkableFile watched(2), other(2);
  ASSERT_NE(watched.p, nullptr);
  ASSERT_NE(other.p, nullptr);
  auto g = ShrinkGuard::watch(const_cast<uint8_t*>(watched.p), watched.size, kPage, -1);
  ASSERT_TRUE(g.ok());
  EXPECT_EXIT(
      {
        if (ftruncate(other.fd.get(), 0) != 0) _exit(3);
        (void)other.p[0];
        _exit(0);
      },
      died_of_the_fault, "");
  // The same fault inside the guarded range is survived.
  EXPECT_EXIT(
      {
        if (ftruncate(watched.fd.get(), 0) != 0) _exit(3);
        (void)watched.p[0];
        _exit(0);
      },
      ::testing::ExitedWithCode(0), "");
}

TEST_F(ShrinkGuardTest, AReleasedGuardNoLongerCatches) {
  ShrinkableFile f(1);
  ASSERT_NE(f.p, nullptr);
  auto g = ShrinkGuard::watch(const_cast<uint8_t*>(f.p), f.size, kPage, -1);
  ASSERT_TRUE(g.ok());
  ShrinkGuard moved = std::move(*g);
  EXPECT_FALSE(g->active());
  EXPECT_TRUE(moved.active());
  moved.reset();
  EXPECT_FALSE(moved.active());
  EXPECT_EQ(moved.faults(), 0u);
  EXPECT_EXIT(
      {
        if (ftruncate(f.fd.get(), 0) != 0) _exit(3);
        (void)f.p[0];
        _exit(0);
      },
      died_of_the_fault, "");
}

TEST_F(ShrinkGuardTest, ASigbusSentByKillIsNotTakenForAFault) {
  ShrinkableFile f(1);
  ASSERT_NE(f.p, nullptr);
  auto g = ShrinkGuard::watch(const_cast<uint8_t*>(f.p), f.size, kPage, -1);
  ASSERT_TRUE(g.ok());
  EXPECT_EXIT(
      {
        kill(getpid(), SIGBUS);
        _exit(0);
      },
      died_of_the_fault, "");
}

TEST_F(ShrinkGuardTest, BadRangesAndAFullTableAreRefused) {
  ShrinkableFile f(2);
  ASSERT_NE(f.p, nullptr);
  auto* p = const_cast<uint8_t*>(f.p);
  EXPECT_EQ(ShrinkGuard::watch(nullptr, kPage, kPage, -1).error(), EINVAL);
  EXPECT_EQ(ShrinkGuard::watch(p, 0, kPage, -1).error(), EINVAL);
  EXPECT_EQ(ShrinkGuard::watch(p + 1, kPage, kPage, -1).error(), EINVAL) << "start not on a granule";
  EXPECT_EQ(ShrinkGuard::watch(p, kPage + 1, kPage, -1).error(), EINVAL) << "length not in granules";
  EXPECT_EQ(ShrinkGuard::watch(p, kPage, 3000, -1).error(), EINVAL) << "granule not a power of two";
  EXPECT_EQ(ShrinkGuard::watch(p, kPage, 2 * kPage, -1).error(), EINVAL);

  std::vector<ShrinkGuard> all;
  for (;;) {
    auto g = ShrinkGuard::watch(p, f.size, kPage, -1);
    if (!g.ok()) {
      EXPECT_EQ(g.error(), ENOSPC);
      break;
    }
    all.push_back(std::move(*g));
    ASSERT_LE(all.size(), ShrinkGuard::kMaxRanges);
  }
  EXPECT_EQ(all.size(), ShrinkGuard::kMaxRanges);
  all.pop_back();
  auto again = ShrinkGuard::watch(p, f.size, kPage, -1);
  EXPECT_TRUE(again.ok()) << "a released slot is used again";
}

}  // namespace
}  // namespace vcp
