// Collective error handling and gathering for the apps (see collective.hpp).
// Every collective here is non-blocking, waited for with MPI_Test against the
// process-wide timeout, so that a rank that never arrives ends the job with a
// message instead of a hang.
#include "pipe/collective.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <exception>
#include <memory>
#include <new>
#include <thread>

#include "run/mpi_check.hpp"
#include "pipe/error.hpp"
#include "pipe/watchdog.hpp"

namespace libpipe {

namespace {

std::atomic<double> g_timeout{0.0};

int world_rank() {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

// "MPI_COMM_WORLD (4 ranks)" or "the group of world ranks 0, 2 (2 ranks)".
std::string group_name(MPI_Comm comm) {
  int size = 0, same = MPI_UNEQUAL;
  MPI_Comm_size(comm, &size);
  MPI_Comm_compare(comm, MPI_COMM_WORLD, &same);
  const std::string count = " (" + std::to_string(size) + (size == 1 ? " rank)" : " ranks)");
  if (same == MPI_IDENT) return "MPI_COMM_WORLD" + count;
  MPI_Group group = MPI_GROUP_NULL, world = MPI_GROUP_NULL;
  MPI_Comm_group(comm, &group);
  MPI_Comm_group(MPI_COMM_WORLD, &world);
  const int shown = size < 16 ? size : 16;
  std::vector<int> ranks(shown), in_world(shown);
  for (int r = 0; r < shown; ++r) ranks[r] = r;
  MPI_Group_translate_ranks(group, shown, ranks.data(), world, in_world.data());
  MPI_Group_free(&group);
  MPI_Group_free(&world);
  std::string list;
  for (int r : in_world) list += (list.empty() ? "" : ", ") + std::to_string(r);
  if (shown < size) list += ", ...";
  return "the group of world ranks " + list + count;
}

std::string seconds_str(double s) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%g", s);
  return buffer;
}

// One non-blocking collective and the buffers it reads and writes.
struct Pending {
  MPI_Request request = MPI_REQUEST_NULL;
  int value = 0, result = 0;
  std::string send, receive;
  std::vector<int> lengths, offsets;
  std::vector<char> bytes, all_bytes;
};

// Collectives abandoned by a timeout: MPI may still write into their buffers
// should the late ranks arrive, so they live as long as the process (held by a
// pointer that is never freed, hence reachable and not a leak).
std::vector<Pending*>& abandoned() {
  static auto* list = new std::vector<Pending*>;
  return *list;
}

// Waits for `p`'s request under the timeout; on a timeout abandons `p` and
// throws an Error saying: waited ... in <group> for every rank to <what>.
void wait_for(std::unique_ptr<Pending>& p, MPI_Comm comm, const std::string& what) {
  const double timeout = g_timeout.load();
  if (timeout <= 0) {
    PIPE_MPI_CHECK(MPI_Wait(&p->request, MPI_STATUS_IGNORE), world_rank());
    return;
  }
  // Poll, sleeping a little longer each time up to 1 ms: these collectives end
  // phases that take milliseconds to minutes, so the latency does not matter,
  // and a waiting rank leaves the cores to the ranks still working.
  const double start = MPI_Wtime();
  auto nap = std::chrono::microseconds(20);
  for (int polls = 0;; ++polls) {
    int done = 0;
    PIPE_MPI_CHECK(MPI_Test(&p->request, &done, MPI_STATUS_IGNORE), world_rank());
    if (done) return;
    if (MPI_Wtime() - start > timeout) {
      abandoned().push_back(p.release());
      throw Error("--comm-timeout: waited more than " + seconds_str(timeout) + " s in " + group_name(comm) +
                  " for every rank to " + what + " (rank " + std::to_string(world_rank()) + ")");
    }
    if (polls >= 100) {
      std::this_thread::sleep_for(nap);
      if (nap < std::chrono::milliseconds(1)) nap *= 2;
    }
  }
}

}  // namespace

void set_collective_timeout(double seconds) { g_timeout.store(seconds > 0 ? seconds : 0.0); }
double collective_timeout() { return g_timeout.load(); }

bool run_phase_on_all(MPI_Comm comm, const std::function<void()>& phase, PhaseResult& mine,
                      const std::string& what) {
  mine = PhaseResult{};
  const std::string doing = what.empty() ? std::string("a phase") : what;
  try {
    phase();
  } catch (const Error& e) {  // libpipe's own: a complete sentence already
    mine.ok = false;
    mine.message = e.what();
  } catch (const std::bad_alloc&) {
    mine.ok = false;
    mine.message = "out of memory while " + doing;
  } catch (const std::exception& e) {  // the standard library's or a plugin's: say what was being done
    mine.ok = false;
    mine.message = std::string(e.what()) + " (while " + doing + ")";
  } catch (...) {
    mine.ok = false;
    mine.message = "an unknown exception while " + doing;
  }
  auto p = std::make_unique<Pending>();
  p->value = mine.ok ? 1 : 0;
  PIPE_MPI_CHECK(MPI_Iallreduce(&p->value, &p->result, 1, MPI_INT, MPI_MIN, comm, &p->request), world_rank());
  wait_for(p, comm, "finish " + doing);
  return p->result == 1;
}

void report_phase_failure(MPI_Comm comm, const std::string& program, const PhaseResult& mine) {
  int rank = 0, size = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  auto messages = gather_strings(comm, mine.ok ? std::string("\x01") : mine.message, "its error message");
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

std::vector<std::string> gather_strings(MPI_Comm comm, const std::string& mine, const std::string& what) {
  int rank = 0, size = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  const std::string waited = "send " + (what.empty() ? std::string("its result") : what) + " to rank 0";
  if (mine.size() > static_cast<std::size_t>(INT32_MAX))
    throw Error("gather_strings: a string of " + std::to_string(mine.size()) + " bytes is over MPI's 2 GiB limit");
  auto p = std::make_unique<Pending>();
  p->send = mine;  // the send buffer must outlive a timeout
  p->value = static_cast<int>(mine.size());
  p->lengths.resize(rank == 0 ? size : 0);
  p->offsets.resize(rank == 0 ? size : 0);
  PIPE_MPI_CHECK(MPI_Igather(&p->value, 1, MPI_INT, p->lengths.data(), 1, MPI_INT, 0, comm, &p->request),
                 world_rank());
  wait_for(p, comm, waited);
  if (rank == 0) {
    long long total = 0;
    for (int r = 0; r < size; ++r) {
      if (total > INT32_MAX) throw Error("gather_strings: the strings add up to over MPI's 2 GiB limit");
      p->offsets[r] = static_cast<int>(total);
      total += p->lengths[r];
    }
    if (total > INT32_MAX) throw Error("gather_strings: the strings add up to over MPI's 2 GiB limit");
    p->receive.resize(static_cast<std::size_t>(total));
  }
  PIPE_MPI_CHECK(MPI_Igatherv(p->send.data(), p->value, MPI_CHAR, p->receive.data(), p->lengths.data(),
                              p->offsets.data(), MPI_CHAR, 0, comm, &p->request),
                 world_rank());
  wait_for(p, comm, waited);
  std::vector<std::string> out;
  if (rank == 0)
    for (int r = 0; r < size; ++r) out.push_back(p->receive.substr(p->offsets[r], p->lengths[r]));
  return out;
}

void barrier(MPI_Comm comm, const std::string& what) {
  auto p = std::make_unique<Pending>();
  PIPE_MPI_CHECK(MPI_Ibarrier(comm, &p->request), world_rank());
  wait_for(p, comm, "reach " + (what.empty() ? std::string("a barrier") : what));
}

int broadcast_int(MPI_Comm comm, int value, int root, const std::string& what) {
  auto p = std::make_unique<Pending>();
  p->value = value;
  PIPE_MPI_CHECK(MPI_Ibcast(&p->value, 1, MPI_INT, root, comm, &p->request), world_rank());
  wait_for(p, comm,
           "receive " + (what.empty() ? std::string("a broadcast") : what) + " from group rank " + std::to_string(root));
  return p->value;
}

namespace {

std::size_t bytes_of(int count, MPI_Datatype type) {
  int size = 0;
  PIPE_MPI_CHECK(MPI_Type_size(type, &size), world_rank());
  if (count < 0) throw Error("a collective of " + std::to_string(count) + " elements");
  return static_cast<std::size_t>(count) * static_cast<std::size_t>(size);
}

std::string contribute(const std::string& what) {
  return "contribute " + (what.empty() ? std::string("its values") : what);
}

}  // namespace

void allgather(MPI_Comm comm, const void* mine, void* all, int count, MPI_Datatype type, const std::string& what) {
  int size = 1;
  MPI_Comm_size(comm, &size);
  const std::size_t n = bytes_of(count, type);
  auto p = std::make_unique<Pending>();
  p->bytes.assign(static_cast<const char*>(mine), static_cast<const char*>(mine) + n);
  p->all_bytes.resize(n * static_cast<std::size_t>(size));
  PIPE_MPI_CHECK(MPI_Iallgather(p->bytes.data(), count, type, p->all_bytes.data(), count, type, comm, &p->request),
                 world_rank());
  wait_for(p, comm, contribute(what));
  std::copy(p->all_bytes.begin(), p->all_bytes.end(), static_cast<char*>(all));
}

void allreduce(MPI_Comm comm, void* values, int count, MPI_Datatype type, MPI_Op op, const std::string& what) {
  const std::size_t n = bytes_of(count, type);
  auto p = std::make_unique<Pending>();
  p->bytes.assign(static_cast<const char*>(values), static_cast<const char*>(values) + n);
  p->all_bytes.resize(n);
  PIPE_MPI_CHECK(MPI_Iallreduce(p->bytes.data(), p->all_bytes.data(), count, type, op, comm, &p->request),
                 world_rank());
  wait_for(p, comm, contribute(what));
  std::copy(p->all_bytes.begin(), p->all_bytes.end(), static_cast<char*>(values));
}

MPI_Comm node_comm(MPI_Comm comm) {
  MPI_Comm node = MPI_COMM_NULL;
  const Watch watch("MPI_Comm_split_type (the ranks of this node)", collective_timeout());
  PIPE_MPI_CHECK(MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node), world_rank());
  return node;
}

}  // namespace libpipe
