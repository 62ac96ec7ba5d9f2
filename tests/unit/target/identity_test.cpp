// No two disks of one target process go by one identity: TargetServer refuses a LUN whose
// serial (VPD 0x80; the 0x83 designators are made from it) is another disk's, at start and when
// LUNs or targets come while it runs; two LUNs on one file or device are one disk, and may.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include "target/server.hpp"

namespace vcp::target {
namespace {

constexpr const char* kIqn = "iqn.2024-01.org.vcp.test:identity";
constexpr const char* kOtherIqn = "iqn.2024-01.org.vcp.test:identity2";

TargetSettings settings_with(std::vector<LunSpec> luns) {
  TargetSettings s;
  s.iqn = kIqn;
  s.host = "127.0.0.1";
  s.port = 0;
  s.luns = std::move(luns);
  return s;
}

// A file of 4 MiB in a directory of the test's own, removed at the end.
class Files {
 public:
  Files() {
    char tmpl[] = "/tmp/vcp-identity.XXXXXX";
    dir_ = ::mkdtemp(tmpl) ? tmpl : "";
  }
  ~Files() {
    for (const auto& p : made_) std::remove(p.c_str());
    ::rmdir(dir_.c_str());
  }
  std::string file(const std::string& name) {
    std::string p = dir_ + "/" + name;
    FILE* f = std::fopen(p.c_str(), "w");
    if (f) {
      (void)!::ftruncate(fileno(f), 4 << 20);
      std::fclose(f);
    }
    made_.push_back(p);
    return p;
  }
  std::string link(const std::string& to, const std::string& name) {
    std::string p = dir_ + "/" + name;
    (void)!::symlink(to.c_str(), p.c_str());
    made_.push_back(p);
    return p;
  }
  bool ok() const { return !dir_.empty(); }

 private:
  std::string dir_;
  std::vector<std::string> made_;
};

TEST(TargetIdentity, TwoDisksUnderOneSerialAreRefusedAtStart) {
  std::string error;
  EXPECT_FALSE(TargetServer::create(settings_with({{0, "ram:size=4M,serial=dup"}, {1, "ram:size=4M,serial=dup"}}),
                                    &error));
  EXPECT_NE(error.find("LUN 1 'ram:size=4M,serial=dup': serial 'dup' is already that of LUN 0 "
                       "'ram:size=4M,serial=dup', another disk"),
            std::string::npos)
      << error;
  EXPECT_NE(error.find("give it a serial= of its own"), std::string::npos) << error;

  // In another target too: the unit serial and the T10 designator would be the same.
  Files files;
  ASSERT_TRUE(files.ok());
  const std::string a = files.file("a.img"), b = files.file("b.img");
  TargetSettings s = settings_with({{0, "file:path=" + a + ",serial=same"}});
  s.more_targets.push_back(TargetSpec{kOtherIqn, "", {{3, "file:path=" + b + ",serial=same"}}, {}, {}, {}});
  error.clear();
  EXPECT_FALSE(TargetServer::create(s, &error));
  EXPECT_NE(error.find("LUN 3 of " + std::string(kOtherIqn)), std::string::npos) << error;
  EXPECT_NE(error.find("already that of LUN 0 'file:path=" + a + ",serial=same'"), std::string::npos) << error;
}

TEST(TargetIdentity, TwoLunsOnOneFileAreOneDisk) {
  Files files;
  ASSERT_TRUE(files.ok());
  const std::string a = files.file("a.img");
  const std::string l = files.link(a, "link.img");
  std::string error;
  // Default serials (named after the file's real path): the same, and so is the file.
  EXPECT_TRUE(TargetServer::create(settings_with({{0, "file:path=" + a}, {1, "file:path=" + l}}), &error)) << error;
  // One serial given to both: the same file still.
  EXPECT_TRUE(TargetServer::create(settings_with({{0, "file:path=" + a + ",serial=x"}, {1, "file:path=" + l + ",serial=x"}}),
                                   &error))
      << error;
  // Different serials for one file are the user's to give.
  EXPECT_TRUE(TargetServer::create(settings_with({{0, "file:path=" + a + ",serial=x"}, {1, "file:path=" + l + ",serial=y"}}),
                                   &error))
      << error;
  // Default serials of ram disks are random: any number of them.
  EXPECT_TRUE(TargetServer::create(settings_with({{0, "ram:size=4M"}, {1, "ram:size=4M"}, {2, "null:size=4M"}}), &error))
      << error;
}

TEST(TargetIdentity, LunsAndTargetsAddedWhileRunningMayNotTakeAnotherDisksIdentity) {
  std::string error;
  auto server = TargetServer::create(settings_with({{0, "ram:size=4M,serial=first"}}), &error);
  ASSERT_TRUE(server) << error;
  std::thread runner([&] { server->run(); });
  // add_luns() needs the I/O threads: until run() has them it says the target is not running.
  bool added = false;
  for (int i = 0; i < 200; ++i) {
    error.clear();
    added = server->add_luns(0, {{1, "ram:size=4M,serial=first"}}, &error);
    if (added || error.find("not running") == std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_FALSE(added);
  EXPECT_NE(error.find("LUN 1 'ram:size=4M,serial=first': serial 'first' is already that of LUN 0"), std::string::npos)
      << error;
  // The disk a LUN is replaced with may take the serial of the one it replaces.
  EXPECT_TRUE(server->replace_luns(0, {{0, "ram:size=8M,serial=first"}}, &error)) << error;
  // A new target with a LUN under that serial: refused, nothing added.
  error.clear();
  EXPECT_FALSE(server->add_target(TargetSpec{kOtherIqn, "", {{0, "ram:size=4M,serial=first"}}, {}, {}, {}}, &error));
  EXPECT_NE(error.find("already that of LUN 0 'ram:size=8M,serial=first'"), std::string::npos) << error;
  // Two new LUNs under one serial in one change: refused.
  error.clear();
  EXPECT_FALSE(server->add_luns(0, {{1, "ram:size=4M,serial=twin"}, {2, "null:size=4M,serial=twin"}}, &error));
  EXPECT_NE(error.find("LUN 2 'null:size=4M,serial=twin': serial 'twin' is already that of LUN 1"), std::string::npos)
      << error;
  // A serial of its own: added; then that target, as it was refused before, with its own.
  EXPECT_TRUE(server->add_luns(0, {{1, "ram:size=4M,serial=second"}}, &error)) << error;
  EXPECT_TRUE(server->add_target(TargetSpec{kOtherIqn, "", {{0, "ram:size=4M,serial=third"}}, {}, {}, {}}, &error))
      << error;
  // A removed LUN's serial is free again.
  EXPECT_TRUE(server->remove_luns(0, {1}, &error)) << error;
  EXPECT_TRUE(server->add_luns(0, {{2, "ram:size=4M,serial=second"}}, &error)) << error;
  server->stop();
  runner.join();
}

}  // namespace
}  // namespace vcp::target
