// The persistent reservations file a restarted target reads (scsi::PrStore, APTPL): it is ours,
// but a disk, a crash or a hand may have damaged it. Whatever it holds, parsing ends with a
// state or a refusal; a state taken back is one the target could have written (registrations
// within the limit, the reservation's holder registered), and writing it out and reading that
// again gives the same state.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "target/scsi/pr_store.hpp"

using namespace vcp::scsi;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  PersistentReservations pr;
  pr.set_ptpl_capable(true);
  std::string serial, error;
  if (!PrStore::parse_file(text, &pr, &serial, &error)) {
    if (error.empty() || pr.registrations() != 0 || pr.ptpl_active()) abort();  // refused: unchanged, and said why
    return 0;
  }
  if (!pr.ptpl_active() || pr.registrations() > PersistentReservations::kMaxRegistrations) abort();
  if (pr.reserved() && pr.registrations() == 0) abort();
  const std::string once = PrStore("/x", serial).file_text(pr);
  PersistentReservations again;
  std::string serial2;
  if (!PrStore::parse_file(once, &again, &serial2, &error)) abort();
  if (serial2 != serial || PrStore("/x", serial2).file_text(again) != once) abort();
  return 0;
}
