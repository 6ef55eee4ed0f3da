#!/usr/bin/env bash
# tsan.sh - builds with ThreadSanitizer and runs the tests of threaded code:
# the thread pool, the forward pass on it, the kernels, peer connections, the
# DHT wrapper (OpenDHT's own thread), a 6-node swarm of real processes, the
# HTTP gateway with its swarm client thread (dashboard, metrics, skills), and
# the ledger: concurrent redeems and the ledger service on a worker thread,
# and paid sessions (channels reserved on a worker, redeems at session end and of
# stored vouchers after a crash: test_pay_crash), and reputation (digests checked
# at the ledger on a worker, looked up on another: test_rep), and a gateway that
# pays its shard sessions (reserves from client workers through one recording
# settle_t, closes on a thread of its own: test_chrec, test_gateway_pay), and
# paid skill calls between gateways (test_skill_pay).
# Any report fails the run (reports of node processes go to files).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh test
cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCOLONY_TSAN=ON >/dev/null
cmake --build build-tsan -j"$(nproc)"
logs=$(mktemp -d)
export TSAN_OPTIONS="suppressions=$PWD/tests/tsan.supp halt_on_error=0 log_path=$logs/tsan"
export COLONY_SANITIZED=1
(cd build-tsan && ctest --output-on-failure -R 'test_pool|test_fwd|test_kern|test_peer|test_dht|test_discovery|test_reference|test_shard|test_node_session|test_swarm|test_api|test_dashboard|test_metrics|test_skills|test_skill_pay|test_ledger|test_pay|test_rep|test_chrec|test_gateway_pay')
if ls "$logs"/tsan* >/dev/null 2>&1; then
  cat "$logs"/tsan*
  echo "ThreadSanitizer reported races (above)"
  exit 1
fi
echo "ThreadSanitizer: no reports"
