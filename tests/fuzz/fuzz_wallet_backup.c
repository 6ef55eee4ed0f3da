/* fuzz_wallet_backup.c - libFuzzer target for the wallet backup reader
 * (wallet_parse_backup, src/market/wallet.h). A backup comes from wherever
 * the user kept it, so any bytes must give either a wallet whose key pair
 * is consistent (it signs, and the signature verifies with its address) or
 * a refusal with a message. The passphrase is fixed; inputs whose Argon2id
 * cost fields ask for more than libsodium's "interactive" cost are read
 * without one (the reader must then refuse before deriving anything), so
 * a run never spends seconds per input. Under the replay driver, ctest runs
 * tests/fuzz/corpus/wallet_backup/. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "market/wallet.h"

#define FUZZ_ASSERT(c) do { if (!(c)) { fprintf(stderr, "fuzz_wallet_backup: %s failed (line %d)\n", #c, __LINE__); abort(); } } while (0)

static uint64_t le64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t b[WALLET_EXPORT_ENC_SIZE + 1];
	size_t got = size > sizeof(b) ? sizeof(b) : size;
	memcpy(b, data, got);
	/* Cost fields of the encrypted layout: passes at 12, memory at 20. */
	const char *pass = "correct horse";
	if (got >= 28 && (le64(b + 12) > 2 || le64(b + 20) > (64u << 20)))
		pass = NULL;
	wallet_t *w = NULL;
	err_msg_t e = { "" };
	int rc = wallet_parse_backup(b, got, "backup", pass, &w, &e);
	if (rc) {
		FUZZ_ASSERT(w == NULL);
		FUZZ_ASSERT(e.msg[0] != '\0');
		return 0;
	}
	FUZZ_ASSERT(w != NULL);
	static const char msg[] = "fuzz";
	uint8_t sig[WALLET_SIGLEN];
	wallet_sign(w, msg, sizeof(msg), sig);
	FUZZ_ASSERT(wallet_verify(wallet_pub(w), msg, sizeof(msg), sig) == 0);
	wallet_free(w);
	return 0;
}
