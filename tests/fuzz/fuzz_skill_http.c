/* fuzz_skill_http.c - libFuzzer target for the HTTP/1.1 response parser of
 * the skill relay (src/api/skill.c): a gateway reads the answer of another
 * gateway, named by a signed DHT record but otherwise untrusted. The input
 * is written into one end of a socket pair, which is then closed; the parser
 * must return an error with a message or a body no longer than the input,
 * never crash, hang or read out of bounds. Under the replay driver the
 * corpus in tests/fuzz/corpus/skill_http/ runs. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "api/skill.h"

#define FUZZ_ASSERT(c) do { if (!(c)) { fprintf(stderr, "fuzz_skill_http: %s failed (line %d)\n", #c, __LINE__); abort(); } } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* the socket buffer holds the whole input, so one write then close */
	if (size > 64 * 1024)
		return 0;
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
		return 0;
	int sz = 256 * 1024;
	setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
	size_t off = 0;
	while (off < size) {
		ssize_t k = write(sv[0], data + off, size - off);
		if (k <= 0)
			break;
		off += (size_t)k;
	}
	close(sv[0]);
	skill_fwd_t *f = NULL;
	err_msg_t e = { "" };
	if (skill_fwd_from_fd(sv[1], &f, &e) != 0)
		return 0;
	int ready = 0, rc = 0;
	for (int i = 0; i < 4 && !ready && rc == 0; i++)
		rc = skill_fwd_head(f, 50, &ready, &e);
	if (rc) {
		FUZZ_ASSERT(e.msg[0]);
	} else if (ready) {
		FUZZ_ASSERT(skill_fwd_status(f) >= 100 && skill_fwd_status(f) <= 999);
		size_t total = 0;
		char buf[4096];
		for (int i = 0; i < 1024 && !skill_fwd_done(f); i++) {
			size_t n = 0;
			e.msg[0] = 0;
			rc = skill_fwd_read(f, buf, sizeof(buf), 10, &n, &e);
			if (rc) {
				FUZZ_ASSERT(e.msg[0]);
				break;
			}
			FUZZ_ASSERT(n <= sizeof(buf));
			total += n;
			FUZZ_ASSERT(total <= size);
			if (n == 0)
				break;
		}
	}
	skill_fwd_free(f);
	return 0;
}
