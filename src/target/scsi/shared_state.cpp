#include "target/scsi/shared_state.hpp"

#include <algorithm>

#include "base/log.hpp"
#include "target/scsi/sense.hpp"

namespace vcp::scsi {

// ---------------------------------------------------------------------------------------------
// Unit attention queue.

void UnitAttentions::add(Asc a) {
  for (unsigned i = 0; i < count; ++i)
    if (pending[i] == a) return;
  if (count < kMax) pending[count++] = a;
}

Asc UnitAttentions::take() {
  Asc a = pending[0];
  std::copy(pending + 1, pending + count, pending);
  --count;
  return a;
}

void UnitAttentions::remove(Asc a) {
  for (unsigned i = 0; i < count; ++i) {
    if (pending[i] != a) continue;
    std::copy(pending + i + 1, pending + count, pending + i);
    --count;
    return;
  }
}

// ---------------------------------------------------------------------------------------------
// Members and their mailboxes.

Mailbox* SharedLuState::join() {
  std::lock_guard g(mu_);
  auto m = std::make_unique<Mailbox>();
  m->id = next_member_id_++;
  members_.push_back(std::move(m));
  return members_.back().get();
}

void SharedLuState::leave(Mailbox* m) {
  std::lock_guard g(mu_);
  auto it = std::find_if(members_.begin(), members_.end(), [m](auto& p) { return p.get() == m; });
  if (it == members_.end()) return;
  std::unique_ptr<Mailbox> gone = std::move(*it);
  members_.erase(it);
  // Resets it never saw: it has no tasks left to abort, so they are done as far as it goes.
  for (const LunMessage& msg : gone->inbox)
    if (msg.kind == LunMessage::Kind::abort_all)
      for (auto& o : members_)
        if (o->id == msg.from) post_locked(o.get(), LunMessage{LunMessage::Kind::ack, gone->id, msg.seq, {}});
}

void SharedLuState::set_wake(Mailbox* m, std::function<void()> wake) {
  std::lock_guard g(mu_);
  m->wake = std::move(wake);
}

void SharedLuState::post_locked(Mailbox* to, const LunMessage& m) {
  to->inbox.push_back(m);
  to->pending.store(true, std::memory_order_release);  // pairs with the acquire in Lun::poll()
  if (to->wake) to->wake();
}

void SharedLuState::take_mail(Mailbox* m, std::vector<LunMessage>& out) {
  out.clear();
  std::lock_guard g(mu_);
  out.swap(m->inbox);
  m->pending.store(false, std::memory_order_relaxed);  // under mu_: a later post sets it again
}

void SharedLuState::post_ack(uint64_t to, uint64_t from, uint64_t seq) {
  std::lock_guard g(mu_);
  for (auto& o : members_)
    if (o->id == to) post_locked(o.get(), LunMessage{LunMessage::Kind::ack, from, seq, {}});
}

// ---------------------------------------------------------------------------------------------
// Unit attentions.

NexusRecord* SharedLuState::record_locked(const std::string& name, uint64_t isid, uint16_t port) {
  for (auto& r : nexuses_)
    if (r->is(name, isid, port)) return r.get();
  auto r = std::make_unique<NexusRecord>();
  r->initiator_name = name;
  r->isid = isid;
  r->target_port = port;
  nexuses_.push_back(std::move(r));
  return nexuses_.back().get();
}

NexusRecord* SharedLuState::nexus(const ItNexus& n) {
  std::lock_guard g(mu_);
  for (auto& r : nexuses_)
    if (r->is(n.initiator_name, n.isid, n.target_port)) return r.get();
  // First access through this I_T nexus: it has not seen the power-on yet.
  NexusRecord* r = record_locked(n.initiator_name, n.isid, n.target_port);
  r->ua.add(Asc::power_on_reset);
  r->publish();
  return r;
}

bool SharedLuState::take_ua(NexusRecord& r, Asc* out) {
  std::lock_guard g(mu_);
  if (!r.ua.has()) return false;
  *out = r.ua.take();
  r.publish();
  return true;
}

void SharedLuState::remove_ua(NexusRecord& r, Asc a) {
  if (r.ua_pending.load(std::memory_order_acquire) == 0) return;
  std::lock_guard g(mu_);
  r.ua.remove(a);
  r.publish();
}

void SharedLuState::ua_one(const ItNexus& n, Asc asc) {
  std::lock_guard g(mu_);
  NexusRecord* r = record_locked(n.initiator_name, n.isid, n.target_port);
  r->ua.add(asc);
  r->publish();
}

void SharedLuState::ua_all(Asc asc, const ItNexus* except) {
  std::lock_guard g(mu_);
  for (auto& r : nexuses_) {
    if (except && r->is(except->initiator_name, except->isid, except->target_port)) continue;
    r->ua.add(asc);
    r->publish();
  }
}

// ---------------------------------------------------------------------------------------------
// Reservations.

void SharedLuState::publish_access_locked() {
  // Only writers under mu_ change it, so load + store is an increment.
  const uint64_t next = access_gen_.load(std::memory_order_relaxed) + 1;
  access_gen_.store(next, std::memory_order_release);  // pairs with the acquire in access_gen()
}

bool SharedLuState::legacy_conflict_locked(const ItNexus& n) const {
  if (!legacy_reserved_) return false;
  return !(n.isid == legacy_isid_ && n.target_port == legacy_port_ && n.initiator_name == legacy_name_);
}

void SharedLuState::access_verdict(const ItNexus& n, AccessVerdict* v) {
  std::lock_guard g(mu_);
  v->gen = access_gen_.load(std::memory_order_relaxed);  // the state below is this generation's
  v->legacy_conflict = legacy_conflict_locked(n);
  v->read_conflict = pr_.conflicts(n, PrAccess::read);
  v->write_conflict = pr_.conflicts(n, PrAccess::write);
}

Outcome SharedLuState::pr_in(const uint8_t* cdb, std::vector<uint8_t>& out) {
  std::lock_guard g(mu_);
  return pr_.in(cdb, out);
}

// The side effects of a PR OUT on other nexuses, applied while mu_ is held.
class SharedLuState::PrEventSink final : public PrEvents {
 public:
  PrEventSink(SharedLuState& s, Mailbox* self, std::vector<Registration>& here) : s_(s), self_(self), here_(here) {}
  void pr_unit_attention(const Registration& who, Asc asc) override {
    NexusRecord* r = s_.record_locked(who.initiator_name, who.isid, who.target_port);
    r->ua.add(asc);
    r->publish();
  }
  void pr_abort_tasks(const Registration& who) override {
    here_.push_back(who);
    s_.post_to_others_locked(self_, LunMessage{LunMessage::Kind::abort_nexus, self_->id, 0, who});
  }

 private:
  SharedLuState& s_;
  Mailbox* self_;
  std::vector<Registration>& here_;
};

// The side effects of a PR OUT whose new state must reach the disk first: held until it has.
class RecordedPrEvents final : public PrEvents {
 public:
  void pr_unit_attention(const Registration& who, Asc asc) override { events_.push_back({who, asc, false}); }
  void pr_abort_tasks(const Registration& who) override { events_.push_back({who, Asc{}, true}); }
  void replay(PrEvents& to) const {
    for (const auto& e : events_) e.abort ? to.pr_abort_tasks(e.who) : to.pr_unit_attention(e.who, e.asc);
  }

 private:
  struct Event {
    Registration who;
    Asc asc;
    bool abort;
  };
  std::vector<Event> events_;
};

bool SharedLuState::keep_reservations(std::unique_ptr<PrStore> store, std::string* error, std::string* note) {
  std::lock_guard g(mu_);
  PersistentReservations pr = pr_;
  pr.set_ptpl_capable(true);
  PrStore::Loaded what = PrStore::Loaded::nothing;
  std::string why;
  if (!store->load(&pr, &what, &why)) {
    *error = "persistent reservations cannot be restored: " + why + " (move the file away to start without them)";
    return false;
  }
  switch (what) {
    case PrStore::Loaded::nothing: note->clear(); break;
    case PrStore::Loaded::other_lu: *note = why + ": not restored"; break;
    case PrStore::Loaded::restored:
      *note = fmt::format("persistent reservations restored from {}: {} registrations, {}", store->path(),
                          pr.registrations(), pr.reserved() ? "reserved" : "no reservation");
      break;
  }
  pr_ = std::move(pr);
  store_ = std::move(store);
  publish_access_locked();
  return true;
}

Outcome SharedLuState::pr_out(Mailbox* self, const ItNexus& n, const uint8_t* cdb, const uint8_t* param,
                              uint32_t len, std::vector<Registration>& abort_here) {
  std::lock_guard g(mu_);
  PrEventSink sink(*this, self, abort_here);
  if (!store_) {
    Outcome o = pr_.out(n, cdb, param, len, sink);
    publish_access_locked();
    return o;
  }
  // With a store the new state is worked out on a copy, written (or its file removed when
  // APTPL is no longer active) and only then taken, with its side effects: a command whose
  // state cannot be kept changes nothing and fails.
  PersistentReservations next = pr_;
  RecordedPrEvents events;
  Outcome o = next.out(n, cdb, param, len, events);
  if (o.good() && (next.ptpl_active() || pr_.ptpl_active())) {
    std::string why;
    if (!(next.ptpl_active() ? store_->save(next, &why) : store_->erase(&why))) {
      VCP_LOG_ERROR("target: PERSISTENT RESERVE OUT from {} failed: its reservations cannot be kept: {}",
                    n.initiator_name, why);
      return check(sense(SenseKey::hardware_error, Asc::internal_target_failure));
    }
  }
  pr_ = std::move(next);
  events.replay(sink);
  publish_access_locked();
  return o;
}

Outcome SharedLuState::reserve6(const ItNexus& n) {
  std::lock_guard g(mu_);
  if (pr_.registrations() > 0 || pr_.reserved() || legacy_conflict_locked(n)) return conflict();
  legacy_reserved_ = true;
  legacy_name_ = n.initiator_name;
  legacy_isid_ = n.isid;
  legacy_port_ = n.target_port;
  publish_access_locked();
  return ok();
}

void SharedLuState::release6(const ItNexus& n) {
  std::lock_guard g(mu_);
  // Under persistent reservations, and from a nexus that holds nothing, RELEASE does nothing.
  if (pr_.registrations() == 0 && !pr_.reserved() && legacy_reserved_ && !legacy_conflict_locked(n)) {
    legacy_reserved_ = false;
    publish_access_locked();
  }
}

void SharedLuState::nexus_lost(const ItNexus& n) {
  std::lock_guard g(mu_);
  if (legacy_reserved_ && !legacy_conflict_locked(n)) {
    legacy_reserved_ = false;
    publish_access_locked();
  }
}

PersistentReservations SharedLuState::reservations_snapshot() {
  std::lock_guard g(mu_);
  return pr_;
}

std::string SharedLuState::reservations_summary() {
  std::lock_guard g(mu_);
  std::string out;
  if (pr_.registrations() > 0) {
    out = fmt::format("{} PR registration{}", pr_.registrations(), pr_.registrations() == 1 ? "" : "s");
    if (pr_.reserved()) {
      const bool all = pr_.type() == PrType::write_exclusive_all_registrants ||
                       pr_.type() == PrType::exclusive_access_all_registrants;
      out += fmt::format(", reserved ({}) by {}", to_string(pr_.type()),
                         all ? std::string("every registrant") : pr_.holder().initiator_name);
    }
    if (pr_.ptpl_active() && store_) out += ", kept in " + store_->path();
  }
  if (legacy_reserved_) out += (out.empty() ? "" : "; ") + ("RESERVE(6/10) held by " + legacy_name_);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Mode pages and resets.

ModePages SharedLuState::mode() { return ModePages{wce()}; }

void SharedLuState::set_mode(ModePages next, const ItNexus* changer) {
  std::lock_guard g(mu_);
  bool changed = next.wce != wce_.load(std::memory_order_relaxed);
  wce_.store(next.wce, std::memory_order_relaxed);
  if (!changed) return;
  for (auto& r : nexuses_) {
    if (changer && r->is(changer->initiator_name, changer->isid, changer->target_port)) continue;
    r->ua.add(Asc::mode_parameters_changed);
    r->publish();
  }
}

uint32_t SharedLuState::reset(Mailbox* self, ResetKind kind, uint64_t seq) {
  std::lock_guard g(mu_);
  legacy_reserved_ = false;
  publish_access_locked();
  Asc asc = kind == ResetKind::lun_reset ? Asc::bus_device_reset_function : Asc::power_on_reset;
  for (auto& r : nexuses_) {
    r->ua.clear();  // a reset outranks every other pending condition
    r->ua.add(asc);
    r->publish();
  }
  return post_to_others_locked(self, LunMessage{LunMessage::Kind::abort_all, self->id, seq, {}});
}

uint32_t SharedLuState::clear_everywhere(Mailbox* self, uint64_t seq, const ItNexus& issuer) {
  std::lock_guard g(mu_);
  return post_to_others_locked(self, LunMessage{LunMessage::Kind::clear_all, self->id, seq, Registration::of(issuer)});
}

uint32_t SharedLuState::post_to_others_locked(Mailbox* self, const LunMessage& m) {
  uint32_t posted = 0;
  for (auto& to : members_) {
    if (to.get() == self) continue;
    post_locked(to.get(), m);
    ++posted;
  }
  return posted;
}

}  // namespace vcp::scsi
