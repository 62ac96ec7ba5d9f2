#include "base/parse.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <string>

namespace vcp {
namespace {

TEST(ParseSize, AcceptsSuffixes) {
  EXPECT_EQ(*parse_size("512"), 512u);
  EXPECT_EQ(*parse_size("4k"), 4096u);
  EXPECT_EQ(*parse_size("4K"), 4096u);
  EXPECT_EQ(*parse_size("4KiB"), 4096u);
  EXPECT_EQ(*parse_size("4kb"), 4096u);
  EXPECT_EQ(*parse_size("256M"), 256ull << 20);
  EXPECT_EQ(*parse_size("1G"), 1ull << 30);
  EXPECT_EQ(*parse_size("2T"), 2ull << 40);
  EXPECT_EQ(*parse_size("7b"), 7u);
}

TEST(ParseSize, RefusesJunkAndOverflow) {
  for (const char* s : {"", "k", "-1", "4x", "4kk", "1.5G", " 4k", "4 k"}) EXPECT_FALSE(parse_size(s).ok()) << s;
  EXPECT_EQ(parse_size("99999999999999T").error(), ERANGE);
  EXPECT_EQ(parse_size("99999999999999999999999").error(), EINVAL);
}

TEST(ParseBool, KnownWordsOnly) {
  EXPECT_TRUE(*parse_bool("on"));
  EXPECT_TRUE(*parse_bool("yes"));
  EXPECT_FALSE(*parse_bool("off"));
  EXPECT_FALSE(*parse_bool("0"));
  EXPECT_FALSE(parse_bool("maybe").ok());
}

TEST(ParseSpec, KindAndOptions) {
  std::string err;
  auto s = parse_spec("file:path=/tmp/x,direct=on,ro", &err);
  ASSERT_TRUE(s) << err;
  EXPECT_EQ(s->kind, "file");
  EXPECT_EQ(*s->get("path"), "/tmp/x");
  EXPECT_EQ(*s->get("direct"), "on");
  EXPECT_EQ(*s->get("ro"), "");
  EXPECT_FALSE(s->get("size"));
  EXPECT_EQ(*s->take("path"), "/tmp/x");
  EXPECT_FALSE(s->get("path"));

  auto bare = parse_spec("null", &err);
  ASSERT_TRUE(bare);
  EXPECT_EQ(bare->kind, "null");
  EXPECT_TRUE(bare->options.empty());
}

TEST(ParseSpec, Errors) {
  std::string err;
  EXPECT_FALSE(parse_spec(":size=1", &err));
  EXPECT_NE(err.find("kind"), std::string::npos);
  EXPECT_FALSE(parse_spec("ram:size=1,size=2", &err));
  EXPECT_NE(err.find("twice"), std::string::npos);
  EXPECT_FALSE(parse_spec("ram:=3", &err));
  EXPECT_FALSE(parse_spec("ram:size=1,,x=2", &err));
}

TEST(ReadSmallFile, ReadsUpToTheBound) {
  char path[] = "/tmp/vcp-parse-test-XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  const std::string text = "line one\nline two\n";
  ASSERT_EQ(write(fd, text.data(), text.size()), static_cast<ssize_t>(text.size()));
  close(fd);
  auto r = read_small_file(path, text.size());
  ASSERT_TRUE(r) << errno_str(r.error());
  EXPECT_EQ(*r, text);
  auto over = read_small_file(path, text.size() - 1);
  EXPECT_FALSE(over);
  EXPECT_EQ(over.error(), EFBIG);
  std::remove(path);
}

TEST(ReadSmallFile, EndlessAndMissingFilesAreErrors) {
  auto zero = read_small_file("/dev/zero", 64 * 1024);  // never ends: refused at the bound
  EXPECT_FALSE(zero);
  EXPECT_EQ(zero.error(), EFBIG);
  auto none = read_small_file("/nonexistent/vcp-file", 1024);
  EXPECT_FALSE(none);
  EXPECT_EQ(none.error(), ENOENT);
  auto dir = read_small_file("/tmp", 1024);
  EXPECT_FALSE(dir);
  EXPECT_EQ(dir.error(), EISDIR);
}

TEST(ReadSmallFile, ReadsAPipeByItsDescriptor) {
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  ASSERT_EQ(write(p[1], "secret\n", 7), 7);
  close(p[1]);
  auto r = read_small_file("/dev/fd/" + std::to_string(p[0]), 1024);
  close(p[0]);
  ASSERT_TRUE(r) << errno_str(r.error());
  EXPECT_EQ(*r, "secret\n");
}

}  // namespace
}  // namespace vcp
