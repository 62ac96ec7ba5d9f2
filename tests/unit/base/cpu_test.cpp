#include "base/cpu.hpp"

#include <gtest/gtest.h>
#include <sched.h>

namespace vcp {
namespace {

TEST(CpuList, Parses) {
  EXPECT_EQ(*parse_cpu_list("0"), std::vector<int>({0}));
  EXPECT_EQ(*parse_cpu_list("0-3"), std::vector<int>({0, 1, 2, 3}));
  EXPECT_EQ(*parse_cpu_list("5,0-1,1"), std::vector<int>({0, 1, 5}));
}

TEST(CpuList, Refuses) {
  for (const char* s : {"", ",", "1,", "3-1", "a", "-1", "1-", "0-99999"}) EXPECT_FALSE(parse_cpu_list(s).ok()) << s;
}

TEST(Pin, PinsTheCallingThread) {
  ASSERT_EQ(pin_current_thread(0), 0);
  EXPECT_EQ(sched_getcpu(), 0);
  EXPECT_LT(pin_current_thread(CPU_SETSIZE - 1), 0);  // no such CPU here
  cpu_set_t all;
  CPU_ZERO(&all);
  for (int i = 0; i < online_cpus(); ++i) CPU_SET(i, &all);
  sched_setaffinity(0, sizeof(all), &all);
}

}  // namespace
}  // namespace vcp
