// Collective error handling and gathering for the apps (see collective.hpp).
#include "pipe/collective.hpp"

#include <cstdio>
#include <exception>

namespace libpipe {

bool run_phase_on_all(MPI_Comm comm, const std::function<void()>& phase, PhaseResult& mine) {
  mine = PhaseResult{};
  try {
    phase();
  } catch (const std::exception& e) {
    mine.ok = false;
    mine.message = e.what();
  } catch (...) {
    mine.ok = false;
    mine.message = "unknown exception";
  }
  int ok = mine.ok ? 1 : 0, all_ok = 0;
  MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, comm);
  return all_ok == 1;
}

void report_phase_failure(MPI_Comm comm, const std::string& program, const PhaseResult& mine) {
  int rank = 0, size = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  auto messages = gather_strings(comm, mine.ok ? std::string("\x01") : mine.message);
  if (rank != 0) return;
  // One shared message -> print it once; different ones -> each with its rank.
  std::vector<int> failed;
  for (int r = 0; r < size; ++r)
    if (messages[r] != "\x01") failed.push_back(r);
  bool shared = static_cast<int>(failed.size()) == size;
  for (int r : failed) shared = shared && messages[r] == messages[failed.front()];
  if (shared) {
    std::fprintf(stderr, "%s: error: %s\n", program.c_str(), messages[failed.front()].c_str());
  } else {
    for (int r : failed) std::fprintf(stderr, "%s: rank %d: error: %s\n", program.c_str(), r, messages[r].c_str());
  }
  std::fflush(stderr);
}

std::vector<std::string> gather_strings(MPI_Comm comm, const std::string& mine) {
  int rank = 0, size = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  int length = static_cast<int>(mine.size());
  std::vector<int> lengths(rank == 0 ? size : 0), offsets(rank == 0 ? size : 0);
  MPI_Gather(&length, 1, MPI_INT, lengths.data(), 1, MPI_INT, 0, comm);
  std::string all;
  if (rank == 0) {
    int total = 0;
    for (int r = 0; r < size; ++r) {
      offsets[r] = total;
      total += lengths[r];
    }
    all.resize(total);
  }
  MPI_Gatherv(mine.data(), length, MPI_CHAR, all.data(), lengths.data(), offsets.data(), MPI_CHAR, 0, comm);
  std::vector<std::string> out;
  if (rank == 0)
    for (int r = 0; r < size; ++r) out.push_back(all.substr(offsets[r], lengths[r]));
  return out;
}

}  // namespace libpipe
