// The sessions of one target process, shared by its I/O threads (control path only: login and
// logout take a mutex, the data path never does).
//
// It hands out TSIHs and implements session reinstatement (RFC 7143 §6.3.5): a new session
// with the same initiator name, ISID and target as a live one replaces it; the old one is told
// to close (its thread is woken and sees close_requested) and its tasks are aborted there. A
// session stays here until its connection is gone and every task of it has ended (a write
// aborted at the backend included), so that a new login of its I_T nexus can wait for that:
// a command of the old session must not reach the storage after one of the new.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "iscsi/pdu.hpp"

namespace vcp::target {

struct SessionRecord {
  std::string initiator;
  std::string target;
  iscsi::Isid isid{};
  uint16_t tsih = 0;
  uint64_t nexus_id = 0;
  std::atomic<bool> close_requested{false};
  std::atomic<bool> ended{false};  // its connection is gone, every task of it has ended
  std::function<void()> wake;  // wakes the thread that owns the session
  std::vector<std::function<void()>> on_end;  // (the registry's lock) the waiting logins' wakes
};

class SessionRegistry {
 public:
  // A TSIH not used by any live session (never 0); returned through release_tsih().
  uint16_t reserve_tsih();
  void release_tsih(uint16_t tsih);
  // A process-wide unique I_T nexus id.
  uint64_t next_nexus_id() { return nexus_ids_.fetch_add(1, std::memory_order_relaxed); }

  // Records a session that reached Full Feature Phase. Older sessions of the same I_T nexus
  // (initiator, ISID, target), live or still ending, are asked to close and returned in
  // *replaced: the new session waits for each to have ended() before it takes commands; its
  // thread is woken (wake) when one does.
  std::shared_ptr<SessionRecord> add(std::string initiator, const iscsi::Isid& isid, std::string target,
                                     uint16_t tsih, uint64_t nexus_id, std::function<void()> wake,
                                     std::vector<std::shared_ptr<SessionRecord>>* replaced);
  // The session's connection is gone and every task of it has ended: it leaves the registry
  // and the logins waiting for it are woken.
  void end(SessionRecord* s);
  // Sessions recorded and not yet ended (those closing included).
  size_t size() const;

 private:
  mutable std::mutex mu_;
  std::vector<std::shared_ptr<SessionRecord>> sessions_;
  std::vector<uint16_t> tsih_in_use_;
  uint16_t next_tsih_ = 1;
  std::atomic<uint64_t> nexus_ids_{1};
};

}  // namespace vcp::target
