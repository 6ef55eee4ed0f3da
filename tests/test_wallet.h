/* test_wallet.h - wallets for the market's unit tests (include after test.h). */
#ifndef COLONY_TEST_WALLET_H
#define COLONY_TEST_WALLET_H

#include <string.h>

#include "market/wallet.h"

/* A deterministic wallet from a one-byte seed (every byte of the seed is b). */
static inline wallet_t *wallet_seeded(uint8_t b)
{
	uint8_t seed[WALLET_SEEDLEN];
	memset(seed, b, sizeof(seed));
	wallet_t *w = NULL;
	REQUIRE(wallet_new(seed, &w) == 0);
	return w;
}

#endif
