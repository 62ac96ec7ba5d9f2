#include "iscsi/seq.hpp"

#include <gtest/gtest.h>

namespace vcp::iscsi {
namespace {

TEST(Serial, ComparesAcrossWrap) {
  EXPECT_TRUE(serial_lt(0xfffffff0u, 5));
  EXPECT_TRUE(serial_gt(5, 0xfffffff0u));
  EXPECT_TRUE(serial_lt(1, 2));
  EXPECT_FALSE(serial_lt(2, 1));
  EXPECT_TRUE(serial_le(7, 7));
  EXPECT_FALSE(serial_lt(7, 7));
  EXPECT_EQ(serial_distance(0xfffffffeu, 1), 3u);
}

TEST(Serial, HalfWayIsIncomparable) {
  EXPECT_FALSE(serial_lt(0, kSerialHalf));
  EXPECT_FALSE(serial_gt(0, kSerialHalf));
  EXPECT_TRUE(serial_lt(0, kSerialHalf - 1));
  EXPECT_TRUE(serial_gt(0, kSerialHalf + 1));
}

TEST(CmdWindow, OpensAndCloses) {
  CmdWindow w;
  w.reset(10, 10, 12);
  EXPECT_EQ(w.room(), 3u);
  EXPECT_EQ(w.take(), 10u);
  EXPECT_EQ(w.take(), 11u);
  EXPECT_EQ(w.take(), 12u);
  EXPECT_FALSE(w.is_open());
  EXPECT_EQ(w.room(), 0u);
  EXPECT_EQ(w.peek(), 13u);  // immediate commands carry it without advancing
  EXPECT_TRUE(w.update(13, 20));
  EXPECT_TRUE(w.is_open());
  EXPECT_EQ(w.room(), 8u);
}

TEST(CmdWindow, IgnoresStaleAndInvalidUpdates) {
  CmdWindow w;
  w.reset(100, 100, 110);
  EXPECT_TRUE(w.update(99, 105));  // older values never move the window back
  EXPECT_EQ(w.exp_cmd_sn(), 100u);
  EXPECT_EQ(w.max_cmd_sn(), 110u);
  EXPECT_FALSE(w.update(120, 110));  // MaxCmdSN < ExpCmdSN - 1: ignored
  EXPECT_EQ(w.exp_cmd_sn(), 100u);
  EXPECT_TRUE(w.update(111, 110));  // MaxCmdSN = ExpCmdSN - 1: a closed window is valid
  EXPECT_EQ(w.exp_cmd_sn(), 111u);
}

TEST(CmdWindow, WrapsAround) {
  CmdWindow w;
  w.reset(0xfffffffeu, 0xfffffffeu, 2);
  EXPECT_EQ(w.room(), 5u);
  for (int i = 0; i < 5; ++i) w.take();
  EXPECT_FALSE(w.is_open());
  EXPECT_EQ(w.peek(), 3u);
}

TEST(TargetCmdWindow, AcceptsInWindowOnly) {
  TargetCmdWindow t;
  t.reset(0xffffffffu, 4);
  EXPECT_EQ(t.max_cmd_sn(), 2u);
  EXPECT_TRUE(t.in_window(0xffffffffu));
  EXPECT_TRUE(t.in_window(2));
  EXPECT_FALSE(t.in_window(3));
  EXPECT_FALSE(t.in_window(0xfffffffeu));
  EXPECT_FALSE(t.accept(0));
  EXPECT_TRUE(t.accept(0xffffffffu));
  EXPECT_EQ(t.exp_cmd_sn(), 0u);
  EXPECT_EQ(t.max_cmd_sn(), 3u);
}

TEST(SequenceCounter, NumbersAndChecks) {
  SequenceCounter data_sn;
  EXPECT_EQ(data_sn.take(), 0u);
  EXPECT_EQ(data_sn.take(), 1u);
  SequenceCounter expected;
  EXPECT_TRUE(expected.expect(0));
  EXPECT_FALSE(expected.expect(2));
  EXPECT_TRUE(expected.expect(1));
  SequenceCounter wrap(0xffffffffu);
  EXPECT_EQ(wrap.take(), 0xffffffffu);
  EXPECT_EQ(wrap.next(), 0u);
}

}  // namespace
}  // namespace vcp::iscsi
