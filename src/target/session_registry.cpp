#include "target/session_registry.hpp"

#include <algorithm>

namespace vcp::target {

uint16_t SessionRegistry::reserve_tsih() {
  std::lock_guard lock(mu_);
  for (int tries = 0; tries < 65536; ++tries) {
    uint16_t t = next_tsih_++;
    if (next_tsih_ == 0) next_tsih_ = 1;
    if (t == 0) continue;
    if (std::find(tsih_in_use_.begin(), tsih_in_use_.end(), t) == tsih_in_use_.end()) {
      tsih_in_use_.push_back(t);
      return t;
    }
  }
  return 0;  // 65535 sessions alive: the caller refuses the login
}

void SessionRegistry::release_tsih(uint16_t tsih) {
  std::lock_guard lock(mu_);
  auto it = std::find(tsih_in_use_.begin(), tsih_in_use_.end(), tsih);
  if (it != tsih_in_use_.end()) tsih_in_use_.erase(it);
}

std::shared_ptr<SessionRecord> SessionRegistry::add(std::string initiator, const iscsi::Isid& isid,
                                                    std::string target, uint16_t tsih, uint64_t nexus_id,
                                                    std::function<void()> wake,
                                                    std::vector<std::shared_ptr<SessionRecord>>* replaced) {
  auto rec = std::make_shared<SessionRecord>();
  rec->initiator = std::move(initiator);
  rec->target = std::move(target);
  rec->isid = isid;
  rec->tsih = tsih;
  rec->nexus_id = nexus_id;
  rec->wake = std::move(wake);
  replaced->clear();
  std::vector<std::function<void()>> to_wake;
  {
    std::lock_guard lock(mu_);
    for (auto& old : sessions_) {
      if (old->isid == rec->isid && old->initiator == rec->initiator && old->target == rec->target) {
        old->close_requested.store(true, std::memory_order_release);  // pairs with the owner's acquire load
        if (old->wake) to_wake.push_back(old->wake);
        if (rec->wake) old->on_end.push_back(rec->wake);
        replaced->push_back(old);
      }
    }
    sessions_.push_back(rec);
  }
  for (auto& w : to_wake) w();
  return rec;
}

void SessionRegistry::end(SessionRecord* s) {
  std::vector<std::function<void()>> to_wake;
  {
    std::lock_guard lock(mu_);
    for (auto it = sessions_.begin(); it != sessions_.end(); ++it) {
      if (it->get() == s) {
        sessions_.erase(it);
        break;
      }
    }
    s->ended.store(true, std::memory_order_release);  // pairs with the waiting login's acquire load
    to_wake.swap(s->on_end);
  }
  for (auto& w : to_wake) w();
}

size_t SessionRegistry::size() const {
  std::lock_guard lock(mu_);
  return sessions_.size();
}

}  // namespace vcp::target
