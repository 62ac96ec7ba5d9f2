// The state of one logical unit that every I/O thread's Lun of that LUN shares (SPC-4 keeps it
// per logical unit, not per path): persistent reservations, the RESERVE(6/10) reservation, the
// unit attentions pending for each I_T nexus, the mode pages, and the mailboxes through which a
// LOGICAL UNIT RESET, a TARGET RESET or a PREEMPT AND ABORT issued on one thread reaches the
// tasks of the others.
//
// Threading: the Luns that share it run on different threads. Everything marked "guarded"
// is read and written under mu_ only. The data path takes no lock: it reads three atomics
// (access_gen(), NexusRecord::ua_pending, wce()) and goes to mu_ only when one says there is
// something new (the reservations changed since this nexus's verdict was cached on this
// thread, a unit attention is pending). A reservation that stays in place costs nothing after
// the first command of each nexus on each thread.
//
// Memory ordering: access_gen_ and ua_pending are stored while mu_ is held, right after the
// guarded state they describe changed, with memory_order_release; the data path loads them
// with memory_order_acquire (the pairs: publish_access_locked() <-> access_gen(),
// NexusRecord::publish() <-> the ua_pending loads in Lun). A changed value only sends the
// reader to mu_, which orders the guarded state itself; an unchanged one lets it use what it
// cached under mu_ earlier. A change made for one initiator is visible to another's next
// command because the changing thread stores the new value before it unlocks and before the
// response leaves (send()), and the other thread loads it after receiving the later command:
// the response/command exchange is the happens-before edge.
//
// Messages between threads: post() appends under mu_ to the receiver's inbox, sets its
// Mailbox::pending (release; pairs with the acquire in Lun::poll()) and calls its wake
// function (the I/O thread's eventfd, which its io_uring loop waits on). The receiver takes
// the whole inbox under mu_ and acts on it on its own thread: no thread touches another's
// task list.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "target/scsi/pr.hpp"
#include "target/scsi/pr_store.hpp"
#include "target/scsi/task.hpp"

namespace vcp::scsi {

enum class ResetKind : uint8_t { lun_reset, target_reset };

// The mode pages a LUN keeps (current values; saving is not supported).
struct ModePages {
  bool wce = false;  // caching page: write cache enabled
};

// Unit attention queue of one I_T nexus (SAM-5 5.14): one entry per condition, oldest first.
struct UnitAttentions {
  static constexpr unsigned kMax = 8;
  Asc pending[kMax];
  unsigned count = 0;
  void add(Asc a);
  bool has() const { return count > 0; }
  Asc take();
  void remove(Asc a);
  void clear() { count = 0; }
};

// One I_T nexus as the logical unit knows it, by identity (initiator port name + ISID +
// relative target port): it outlives sessions. Records are never freed while the state lives,
// so a Lun may keep a pointer to one.
struct NexusRecord {
  std::string initiator_name;
  uint64_t isid = 0;
  uint16_t target_port = 0;
  UnitAttentions ua;                    // guarded by SharedLuState::mu_
  std::atomic<uint32_t> ua_pending{0};  // ua.count, see publish()

  bool is(const std::string& name, uint64_t i, uint16_t port) const {
    return isid == i && target_port == port && initiator_name == name;
  }
  // Under mu_, after every change of ua: release, pairs with the data path's acquire load.
  void publish() { ua_pending.store(ua.count, std::memory_order_release); }
};

// What the reservations refuse one nexus, cached by a Lun until access_gen() moves on.
struct AccessVerdict {
  uint64_t gen = 0;              // 0: never computed
  bool legacy_conflict = false;  // another nexus holds RESERVE(6/10)
  bool read_conflict = false;    // the persistent reservation refuses reads
  bool write_conflict = false;   // ... and writes
};

// A cross-thread request from one Lun to another of the same logical unit.
struct LunMessage {
  enum class Kind : uint8_t {
    abort_all,    // a reset: abort every task, then ack `seq` to `from` once they have ended
    abort_nexus,  // PREEMPT AND ABORT: abort the tasks of the nexus `who` names
    clear_all,    // CLEAR TASK SET from the nexus `who` names: as abort_all, and the other
                  // nexuses whose tasks went get COMMANDS CLEARED BY ANOTHER INITIATOR
    ack,          // the receiver's reset `seq` has quiesced on the sender
  };
  Kind kind = Kind::ack;
  uint64_t from = 0;
  uint64_t seq = 0;
  Registration who;
};

// A Lun's place in the shared state: its inbox and how to wake its thread.
struct Mailbox {
  uint64_t id = 0;
  std::atomic<bool> pending{false};  // inbox non-empty (release in post, acquire in Lun::poll)
  std::vector<LunMessage> inbox;     // guarded
  std::function<void()> wake;        // guarded; may be empty (the owner polls anyway)
};

class SharedLuState {
 public:
  explicit SharedLuState(ModePages initial) : wce_(initial.wce) {}
  SharedLuState(const SharedLuState&) = delete;
  SharedLuState& operator=(const SharedLuState&) = delete;

  // ---- Without the lock (the data path) ----
  // One more at every change of the reservations (persistent or RESERVE(6/10)); never 0.
  uint64_t access_gen() const { return access_gen_.load(std::memory_order_acquire); }
  // WCE decides FUA on each write; it guards no other state, so relaxed is enough.
  bool wce() const { return wce_.load(std::memory_order_relaxed); }

  // ---- Members (one per thread's Lun) ----
  Mailbox* join();
  // Leaves; resets still waiting in its inbox are acknowledged to their senders.
  void leave(Mailbox* m);
  void set_wake(Mailbox* m, std::function<void()> wake);
  // Takes the inbox (swapped into out, which is cleared first).
  void take_mail(Mailbox* m, std::vector<LunMessage>& out);
  void post_ack(uint64_t to, uint64_t from, uint64_t seq);

  // ---- Unit attentions ----
  // The record of this nexus, made on its first access (with POWER ON OCCURRED pending).
  NexusRecord* nexus(const ItNexus& n);
  // Takes the oldest pending condition; false if none (another command took it first).
  bool take_ua(NexusRecord& r, Asc* out);
  void remove_ua(NexusRecord& r, Asc a);
  // Establishes asc for every known nexus but `except` (null: all).
  void ua_all(Asc asc, const ItNexus* except);
  // Establishes asc for the nexus n.
  void ua_one(const ItNexus& n, Asc asc);

  // ---- Reservations ----
  // Keeps the persistent reservations in `store` through restarts (PTPL_C: an initiator may ask
  // for it with APTPL) and takes what it kept. Called before any member joins. False with
  // *error when the store's file cannot be read (the LUN is not to be served: reservations an
  // initiator was told are kept would be dropped); *note says when it held another LU's state
  // (not restored) or what was restored.
  bool keep_reservations(std::unique_ptr<PrStore> store, std::string* error, std::string* note);
  // Under the lock: what the reservations refuse nexus n, as of generation v->gen.
  void access_verdict(const ItNexus& n, AccessVerdict* v);
  Outcome pr_in(const uint8_t* cdb, std::vector<uint8_t>& out);
  // PERSISTENT RESERVE OUT from member `self`. Registrations whose tasks PREEMPT AND ABORT
  // must abort are posted to the other members and returned in abort_here for the caller's
  // own task list (aborted after the lock is released).
  Outcome pr_out(Mailbox* self, const ItNexus& n, const uint8_t* cdb, const uint8_t* param, uint32_t len,
                 std::vector<Registration>& abort_here);
  Outcome reserve6(const ItNexus& n);
  void release6(const ItNexus& n);
  // The nexus's session ended: a RESERVE(6/10) it held goes.
  void nexus_lost(const ItNexus& n);
  PersistentReservations reservations_snapshot();
  // For a status report: "2 PR registrations, reserved (Exclusive Access) by NAME, kept in
  // FILE", "RESERVE(6/10) held by NAME"; empty when the LU has neither.
  std::string reservations_summary();

  // ---- Mode pages ----
  ModePages mode();
  // Sets them; a change raises MODE PARAMETERS CHANGED for every other nexus.
  void set_mode(ModePages next, const ItNexus* changer);

  // ---- Resets and CLEAR TASK SET ----
  // Drops RESERVE(6/10), replaces every nexus's unit attentions with the reset's one and posts
  // abort_all(seq) to every member but `self`. Returns how many were posted (acks to expect).
  uint32_t reset(Mailbox* self, ResetKind kind, uint64_t seq);
  // Only posts clear_all(seq, issuer) to every member but `self` (CLEAR TASK SET); likewise
  // returns.
  uint32_t clear_everywhere(Mailbox* self, uint64_t seq, const ItNexus& issuer);

 private:
  class PrEventSink;
  friend class PrEventSink;

  void post_locked(Mailbox* to, const LunMessage& m);
  // Posts m to every member but `self`; returns how many.
  uint32_t post_to_others_locked(Mailbox* self, const LunMessage& m);
  NexusRecord* record_locked(const std::string& name, uint64_t isid, uint16_t port);
  void publish_access_locked();
  bool legacy_conflict_locked(const ItNexus& n) const;

  std::atomic<uint64_t> access_gen_{1};
  std::atomic<bool> wce_;

  std::mutex mu_;
  // guarded by mu_:
  PersistentReservations pr_;
  std::unique_ptr<PrStore> store_;  // set before members join; null: APTPL refused
  bool legacy_reserved_ = false;  // RESERVE(6/10)
  std::string legacy_name_;
  uint64_t legacy_isid_ = 0;
  uint16_t legacy_port_ = 0;
  std::vector<std::unique_ptr<NexusRecord>> nexuses_;
  std::vector<std::unique_ptr<Mailbox>> members_;
  uint64_t next_member_id_ = 1;
};

}  // namespace vcp::scsi
