/* test_market.c - the market's pure parts: checked money arithmetic and the
 * exact charge, the wallet key file and its backups, the voucher and receipt
 * codec, every refusal of the provider's voucher checks, bounded credit,
 * the buyer's receipt checks, and reputation with the numbers. */
#define _GNU_SOURCE   /* memmem */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "market/amount.h"
#include "market/channel.h"
#include "market/rep.h"
#include "market/voucher.h"
#include "market/wallet.h"
#include "test.h"
#include "test_wallet.h"

static void tmp_path(char *out, size_t n, const char *name)
{
	snprintf(out, n, "%s/%s", test_tmp_root(), name);
}

/* ---- amounts ---- */

static void test_amount_checked(void)
{
	amount_t r = -7;
	CHECK_OK(amount_add(1, 2, &r));
	CHECK_EQ_INT(r, 3);
	CHECK_OK(amount_add(AMOUNT_MAX - 5, 5, &r));
	CHECK_EQ_INT(r, AMOUNT_MAX);
	r = 42;
	CHECK_EQ_INT(amount_add(AMOUNT_MAX, 1, &r), ERR_RANGE);
	CHECK_EQ_INT(r, 42);                       /* untouched on error */
	CHECK_EQ_INT(amount_add(-1, 1, &r), ERR_RANGE);
	CHECK_OK(amount_sub(10, 10, &r));
	CHECK_EQ_INT(r, 0);
	CHECK_EQ_INT(amount_sub(10, 11, &r), ERR_RANGE);
	CHECK_EQ_INT(amount_sub(10, -1, &r), ERR_RANGE);
	CHECK_OK(amount_mul(3037000499, 3037000499u, &r));   /* just under 2^63 */
	CHECK_EQ_INT(r, 9223372030926249001LL);
	CHECK_EQ_INT(amount_mul(3037000500, 3037000500u, &r), ERR_RANGE);
	CHECK_EQ_INT(amount_mul(1, UINT64_MAX, &r), ERR_RANGE);
	CHECK_OK(amount_mul(0, UINT64_MAX, &r));
	CHECK_EQ_INT(r, 0);
}

static void test_amount_charge(void)
{
	amount_t c = -1;
	CHECK_OK(amount_charge(0, 123456, &c));
	CHECK_EQ_INT(c, 0);
	CHECK_OK(amount_charge(1, 1, &c));         /* 1e-6 micro-units rounds up to 1 */
	CHECK_EQ_INT(c, 1);
	CHECK_OK(amount_charge(1000000, 5, &c));
	CHECK_EQ_INT(c, 5);
	CHECK_OK(amount_charge(1000001, 5, &c));   /* 5.000005 -> 6 */
	CHECK_EQ_INT(c, 6);
	CHECK_OK(amount_charge(999999, 1, &c));
	CHECK_EQ_INT(c, 1);
	CHECK_OK(amount_charge(0, 0, &c));
	CHECK_EQ_INT(c, 0);
	CHECK_OK(amount_charge(12345, 0, &c));
	CHECK_EQ_INT(c, 0);
	/* 2^64 - 1 tokens at 1 micro-unit per 1M: 18446744073709.551615 -> up */
	CHECK_OK(amount_charge(UINT64_MAX, 1, &c));
	CHECK_EQ_INT(c, 18446744073710LL);
	/* The product passes 2^64 but the quotient fits: exact with 128 bits. */
	CHECK_OK(amount_charge(1ull << 62, 1999999, &c));
	CHECK_EQ_INT(c, 9223367425168757381LL);
	CHECK_EQ_INT(amount_charge(UINT64_MAX, 1000000, &c), ERR_RANGE);
	CHECK_EQ_INT(amount_charge(UINT64_MAX, AMOUNT_MAX, &c), ERR_RANGE);
	CHECK_EQ_INT(amount_charge(10, -1, &c), ERR_RANGE);
	/* AMOUNT_MAX / 1e6 tokens at 1e6 per 1M is exactly representable. */
	CHECK_OK(amount_charge((uint64_t)AMOUNT_MAX, 1000000, &c));
	CHECK_EQ_INT(c, AMOUNT_MAX);
	CHECK_EQ_INT(amount_charge((uint64_t)AMOUNT_MAX + 1, 1000000, &c), ERR_RANGE);

	/* Against 64-bit arithmetic where it cannot overflow (t, p < 2^31). */
	uint64_t x = 0x9e3779b97f4a7c15ull;
	for (int i = 0; i < 200000; i++) {
		x ^= x << 13; x ^= x >> 7; x ^= x << 17;
		uint64_t t = x & 0x7fffffff, p = (x >> 32) & 0x7fffffff;
		uint64_t want = (t * p + 999999) / 1000000;
		REQUIRE(amount_charge(t, (amount_t)p, &c) == 0);
		REQUIRE((uint64_t)c == want);
	}

	/* Input and output tokens priced apart, each rounded up on its own. */
	CHECK_OK(amount_charge2(1, 1, 1, 1, &c));
	CHECK_EQ_INT(c, 2);
	CHECK_OK(amount_charge2(500000, 3, 250000, 8, &c));  /* 1.5 -> 2, 2 -> 2 */
	CHECK_EQ_INT(c, 4);
	CHECK_EQ_INT(amount_charge2(UINT64_MAX, 1000000, UINT64_MAX, 1000000, &c), ERR_RANGE);
}

static void test_amount_text(void)
{
	char s[AMOUNT_STRLEN];
	CHECK(strcmp(amount_format(12345678, s), "12.345678") == 0);
	CHECK(strcmp(amount_format(1, s), "0.000001") == 0);
	CHECK(strcmp(amount_format(AMOUNT_MAX, s), "9223372036854.775807") == 0);
	CHECK(strcmp(amount_format(-5, s), "-0.000005") == 0);
	amount_t a = 0;
	err_msg_t e = { "" };
	CHECK_OK(amount_parse("12.345678", &a, &e));
	CHECK_EQ_INT(a, 12345678);
	CHECK_OK(amount_parse("12", &a, &e));
	CHECK_EQ_INT(a, 12000000);
	CHECK_OK(amount_parse("0.5", &a, &e));
	CHECK_EQ_INT(a, 500000);
	CHECK_OK(amount_parse("9223372036854.775807", &a, &e));
	CHECK_EQ_INT(a, AMOUNT_MAX);
	CHECK_EQ_INT(amount_parse("9223372036854.775808", &a, &e), ERR_RANGE);
	CHECK_EQ_INT(amount_parse("99999999999999999999", &a, &e), ERR_RANGE);
	CHECK_EQ_INT(amount_parse("1.0000001", &a, &e), ERR_FORMAT);
	CHECK_EQ_INT(amount_parse("", &a, &e), ERR_FORMAT);
	CHECK_EQ_INT(amount_parse("-1", &a, &e), ERR_FORMAT);
	CHECK_EQ_INT(amount_parse("1.", &a, &e), ERR_FORMAT);
	CHECK_EQ_INT(amount_parse("1e6", &a, &e), ERR_FORMAT);
	CHECK_EQ_INT(amount_parse(".5", &a, &e), ERR_FORMAT);
	CHECK(e.msg[0] != 0);
}

/* ---- wallet ---- */

static void test_wallet_file(void)
{
	char home[600], path[700];
	tmp_path(home, sizeof(home), "w1/home");
	snprintf(path, sizeof(path), "%s/%s", home, WALLET_FILE_NAME);
	err_msg_t e = { "" };
	wallet_t *w = NULL, *w2 = NULL;
	int created = 0;
	REQUIRE(wallet_load_or_create(home, &w, &created, &e) == 0);
	CHECK(created == 1);
	struct stat st;
	REQUIRE(stat(path, &st) == 0);
	CHECK_EQ_INT(st.st_mode & 0777, 0600);
	CHECK_EQ_INT(st.st_size, WALLET_FILE_SIZE);
	REQUIRE(wallet_load_or_create(home, &w2, &created, &e) == 0);
	CHECK(created == 0);
	CHECK(memcmp(wallet_pub(w), wallet_pub(w2), WALLET_PUBLEN) == 0);
	wallet_free(w2);
	w2 = NULL;

	/* The wallet is not the node identity: another file, another key. */
	CHECK(strcmp(WALLET_FILE_NAME, "node.key") != 0);

	/* Readable by others: refused, and left alone. */
	REQUIRE(chmod(path, 0640) == 0);
	CHECK_EQ_INT(wallet_load_file(path, &w2, &e), ERR_INVAL);
	CHECK(strstr(e.msg, "chmod 600") != NULL);
	CHECK(w2 == NULL);
	REQUIRE(chmod(path, 0600) == 0);

	/* Every single flipped byte is caught. */
	uint8_t orig[WALLET_FILE_SIZE];
	FILE *f = fopen(path, "rb");
	REQUIRE(f && fread(orig, 1, sizeof(orig), f) == sizeof(orig));
	fclose(f);
	char bad[700];
	tmp_path(bad, sizeof(bad), "w1/bad.key");
	for (int i = 0; i < WALLET_FILE_SIZE; i++) {
		uint8_t b[WALLET_FILE_SIZE];
		memcpy(b, orig, sizeof(b));
		b[i] ^= 0x01;
		unlink(bad);
		int fd = open(bad, O_WRONLY | O_CREAT | O_EXCL, 0600);
		REQUIRE(fd >= 0 && write(fd, b, sizeof(b)) == (ssize_t)sizeof(b));
		close(fd);
		int rc = wallet_load_file(bad, &w2, &e);
		CHECK_EQ_INT(rc, ERR_FORMAT);
		if (rc == 0)
			wallet_free(w2);
	}
	/* Short and long files. */
	unlink(bad);
	int fd = open(bad, O_WRONLY | O_CREAT | O_EXCL, 0600);
	REQUIRE(fd >= 0 && write(fd, orig, 50) == 50);
	close(fd);
	CHECK_EQ_INT(wallet_load_file(bad, &w2, &e), ERR_FORMAT);
	fd = open(bad, O_WRONLY | O_APPEND);
	REQUIRE(fd >= 0 && write(fd, orig, sizeof(orig)) == (ssize_t)sizeof(orig));
	close(fd);
	CHECK_EQ_INT(wallet_load_file(bad, &w2, &e), ERR_FORMAT);
	CHECK(strstr(e.msg, "more than") != NULL);
	/* A symlink in place of the key is not followed. */
	char link_path[700];
	tmp_path(link_path, sizeof(link_path), "w1/link.key");
	REQUIRE(symlink(path, link_path) == 0);
	CHECK(wallet_load_file(link_path, &w2, &e) != 0);
	CHECK_EQ_INT(wallet_load_file("/nonexistent/wallet.key", &w2, &e), ERR_NOTFOUND);

	/* Addresses. */
	char addr[WALLET_ADDR_STRLEN];
	uint8_t pub[WALLET_PUBLEN];
	wallet_addr_str(wallet_pub(w), addr);
	CHECK_EQ_INT(strlen(addr), 64);
	CHECK_OK(wallet_addr_parse(addr, pub, &e));
	CHECK(memcmp(pub, wallet_pub(w), WALLET_PUBLEN) == 0);
	addr[10] = 'g';
	CHECK_EQ_INT(wallet_addr_parse(addr, pub, &e), ERR_FORMAT);
	CHECK_EQ_INT(wallet_addr_parse("abcd", pub, &e), ERR_FORMAT);
	wallet_free(w);
}

static void test_wallet_backup(void)
{
	char home[600], home2[600], home3[600], plain[700], enc[700];
	tmp_path(home, sizeof(home), "w2/home");
	tmp_path(home2, sizeof(home2), "w2/home2");
	tmp_path(home3, sizeof(home3), "w2/home3");
	tmp_path(plain, sizeof(plain), "w2/backup.plain");
	tmp_path(enc, sizeof(enc), "w2/backup.enc");
	err_msg_t e = { "" };
	wallet_t *w = NULL, *w2 = NULL;
	REQUIRE(wallet_load_or_create(home, &w, NULL, &e) == 0);
	wallet_kdf_t kdf;
	wallet_kdf_interactive(&kdf);

	/* Plain backup: the key file itself. */
	REQUIRE(wallet_export(w, plain, NULL, NULL, &e) == 0);
	struct stat st;
	REQUIRE(stat(plain, &st) == 0);
	CHECK_EQ_INT(st.st_mode & 0777, 0600);
	CHECK_EQ_INT(wallet_export(w, plain, NULL, NULL, &e), ERR_IO);   /* never overwrites */
	REQUIRE(wallet_import(home2, plain, NULL, &w2, &e) == 0);
	CHECK(memcmp(wallet_pub(w), wallet_pub(w2), WALLET_PUBLEN) == 0);
	wallet_free(w2);
	w2 = NULL;
	/* The home now has a wallet: a second import is refused. */
	CHECK_EQ_INT(wallet_import(home2, plain, NULL, &w2, &e), ERR_INVAL);
	CHECK(strstr(e.msg, "already has a wallet") != NULL);

	/* Encrypted backup. */
	CHECK_EQ_INT(wallet_export(w, enc, "", &kdf, &e), ERR_INVAL);
	REQUIRE(wallet_export(w, enc, "correct horse", &kdf, &e) == 0);
	REQUIRE(stat(enc, &st) == 0);
	CHECK_EQ_INT(st.st_size, WALLET_EXPORT_ENC_SIZE);
	CHECK_EQ_INT(wallet_read_backup(enc, NULL, &w2, &e), ERR_INVAL);
	CHECK(strstr(e.msg, "passphrase is needed") != NULL);
	CHECK_EQ_INT(wallet_read_backup(enc, "wrong horse", &w2, &e), ERR_INVAL);
	CHECK(strstr(e.msg, "wrong passphrase") != NULL);
	CHECK(w2 == NULL);
	/* The seed does not appear in the file. */
	uint8_t fb[WALLET_EXPORT_ENC_SIZE], kf[WALLET_FILE_SIZE];
	FILE *f = fopen(enc, "rb");
	REQUIRE(f && fread(fb, 1, sizeof(fb), f) == sizeof(fb));
	fclose(f);
	f = fopen(plain, "rb");
	REQUIRE(f && fread(kf, 1, sizeof(kf), f) == sizeof(kf));
	fclose(f);
	CHECK(memmem(fb, sizeof(fb), kf + 12, 32) == NULL);
	/* A corrupted byte is reported as corruption, not as a wrong passphrase. */
	char bad[700];
	tmp_path(bad, sizeof(bad), "w2/backup.bad");
	fb[120] ^= 0x40;
	int fd = open(bad, O_WRONLY | O_CREAT | O_EXCL, 0600);
	REQUIRE(fd >= 0 && write(fd, fb, sizeof(fb)) == (ssize_t)sizeof(fb));
	close(fd);
	CHECK_EQ_INT(wallet_read_backup(bad, "correct horse", &w2, &e), ERR_FORMAT);
	CHECK(strstr(e.msg, "corrupted") != NULL);
	/* A crafted cost is refused before any work. */
	fb[120] ^= 0x40;
	for (int i = 0; i < 8; i++)
		fb[20 + i] = 0xff;   /* memlimit */
	/* with a valid checksum, so the cost bound itself is what refuses it */
	crypto_generichash(fb + 148, 32, fb, 148, NULL, 0);
	unlink(bad);
	fd = open(bad, O_WRONLY | O_CREAT | O_EXCL, 0600);
	REQUIRE(fd >= 0 && write(fd, fb, sizeof(fb)) == (ssize_t)sizeof(fb));
	close(fd);
	CHECK_EQ_INT(wallet_read_backup(bad, "correct horse", &w2, &e), ERR_FORMAT);
	CHECK(strstr(e.msg, "Argon2id cost") != NULL);

	REQUIRE(wallet_import(home3, enc, "correct horse", &w2, &e) == 0);
	CHECK(memcmp(wallet_pub(w), wallet_pub(w2), WALLET_PUBLEN) == 0);
	/* The imported key signs what the original's address verifies. */
	uint8_t sig[WALLET_SIGLEN];
	wallet_sign(w2, "hello", 5, sig);
	CHECK_OK(wallet_verify(wallet_pub(w), "hello", 5, sig));
	CHECK_EQ_INT(wallet_verify(wallet_pub(w), "hellp", 5, sig), ERR_FORMAT);
	/* Installed in the new home with the key file's rules. */
	char kp[700];
	snprintf(kp, sizeof(kp), "%s/%s", home3, WALLET_FILE_NAME);
	REQUIRE(stat(kp, &st) == 0);
	CHECK_EQ_INT(st.st_mode & 0777, 0600);
	wallet_t *w3 = NULL;
	REQUIRE(wallet_load_file(kp, &w3, &e) == 0);
	CHECK(memcmp(wallet_pub(w), wallet_pub(w3), WALLET_PUBLEN) == 0);
	wallet_free(w3);
	wallet_free(w2);
	wallet_free(w);
}

/* ---- vouchers ---- */

static void test_voucher_codec(void)
{
	wallet_t *b = wallet_seeded(1);
	voucher_t v = { .seq = 0x0102030405060708ull, .amount = 123456789, .in_tokens = 1000, .out_tokens = 77 };
	memset(v.channel, 0xab, MARKET_IDLEN);
	memset(v.commit, 0xcd, MARKET_IDLEN);
	REQUIRE(voucher_sign(&v, b) == 0);
	uint8_t buf[VOUCHER_SIZE + 1];
	REQUIRE(voucher_encode(&v, buf) == 0);
	/* The layout of docs/PROTOCOL.md. */
	CHECK(buf[0] == 1 && buf[1] == 0xab && buf[32] == 0xab);
	CHECK(buf[33] == 0x08 && buf[40] == 0x01);
	CHECK(buf[41] == (123456789 & 0xff) && buf[49] == (1000 & 0xff) && buf[50] == (1000 >> 8) && buf[57] == 77);
	CHECK(buf[65] == 0xcd && buf[96] == 0xcd);
	voucher_t d;
	err_msg_t e = { "" };
	REQUIRE(voucher_decode(buf, VOUCHER_SIZE, &d, &e) == 0);
	CHECK(memcmp(&d, &v, sizeof(v)) == 0);
	CHECK_OK(voucher_verify(&d, wallet_pub(b)));
	/* Every flipped bit of the signed part breaks the signature (or the decode). */
	for (int i = 0; i < VOUCHER_SIZE; i++) {
		uint8_t c[VOUCHER_SIZE];
		memcpy(c, buf, sizeof(c));
		c[i] ^= 0x10;
		if (voucher_decode(c, sizeof(c), &d, &e) == 0)
			CHECK_EQ_INT(voucher_verify(&d, wallet_pub(b)), VOUCHER_E_FORGED);
	}
	/* Strict decoding. */
	CHECK_EQ_INT(voucher_decode(buf, VOUCHER_SIZE - 1, &d, &e), ERR_TRUNCATED);
	CHECK_EQ_INT(voucher_decode(buf, VOUCHER_SIZE + 1, &d, &e), ERR_FORMAT);
	buf[0] = 2;
	CHECK_EQ_INT(voucher_decode(buf, VOUCHER_SIZE, &d, &e), ERR_UNSUPPORTED);
	buf[0] = 0;
	CHECK_EQ_INT(voucher_decode(buf, VOUCHER_SIZE, &d, &e), ERR_FORMAT);
	buf[0] = 1;
	memset(buf + 33, 0, 8);
	CHECK_EQ_INT(voucher_decode(buf, VOUCHER_SIZE, &d, &e), ERR_FORMAT);
	CHECK(strstr(e.msg, "sequence 0") != NULL);
	buf[33] = 1;
	buf[48] = 0x80;   /* amount >= 2^63 */
	CHECK_EQ_INT(voucher_decode(buf, VOUCHER_SIZE, &d, &e), ERR_RANGE);
	v.seq = 0;
	CHECK_EQ_INT(voucher_sign(&v, b), ERR_RANGE);

	/* The domain separates vouchers from receipts and from raw bytes: the
	 * provider's receipt signature never verifies as a voucher. */
	receipt_t r = { .seq = 5, .in_tokens = 1, .out_tokens = 2, .price_in = 3, .price_out = 4, .amount = 1 };
	REQUIRE(receipt_sign(&r, b) == 0);
	uint8_t rb[RECEIPT_SIZE];
	REQUIRE(receipt_encode(&r, rb) == 0);
	receipt_t rd;
	REQUIRE(receipt_decode(rb, sizeof(rb), &rd, &e) == 0);
	CHECK(memcmp(&rd, &r, sizeof(r)) == 0);
	CHECK_OK(receipt_verify(&rd, wallet_pub(b)));
	voucher_t raw = { .seq = 1, .amount = 1 };
	uint8_t body[VOUCHER_SIZE];
	REQUIRE(voucher_encode(&raw, body) == 0);
	wallet_sign(b, body, VOUCHER_BODY_SIZE, raw.sig);   /* no domain */
	CHECK_EQ_INT(voucher_verify(&raw, wallet_pub(b)), VOUCHER_E_FORGED);
	CHECK_EQ_INT(receipt_decode(rb, sizeof(rb) - 1, &rd, &e), ERR_TRUNCATED);
	rb[80] = 0xff;   /* price_out >= 2^63 */
	CHECK_EQ_INT(receipt_decode(rb, sizeof(rb), &rd, &e), ERR_RANGE);

	/* Channel ids bind both parties and the nonce. */
	uint8_t n1[32] = { 1 }, n2[32] = { 2 }, id1[32], id2[32], id3[32];
	wallet_t *p = wallet_seeded(2);
	voucher_channel_id(wallet_pub(b), wallet_pub(p), n1, id1);
	voucher_channel_id(wallet_pub(b), wallet_pub(p), n2, id2);
	voucher_channel_id(wallet_pub(p), wallet_pub(b), n1, id3);
	CHECK(memcmp(id1, id2, 32) != 0 && memcmp(id1, id3, 32) != 0);
	voucher_channel_id(wallet_pub(b), wallet_pub(p), n1, id2);
	CHECK(memcmp(id1, id2, 32) == 0);
	CHECK(strcmp(voucher_err_str(VOUCHER_E_REPLAYED), "replayed") == 0);
	CHECK(strcmp(voucher_err_str(ERR_RANGE), err_str(ERR_RANGE)) == 0);
	wallet_free(p);
	wallet_free(b);
}

/* Terms of the test channel: 2 micro-units per input token, 6 per output
 * token (2,000,000 and 6,000,000 per 1M), budget 10,000, chunk 16. */
#define NOW 1700000000
static void test_terms(chan_terms_t *t, const wallet_t *buyer, const wallet_t *prov)
{
	memset(t, 0, sizeof(*t));
	memset(t->channel, 0x5a, MARKET_IDLEN);
	memcpy(t->buyer, wallet_pub(buyer), WALLET_PUBLEN);
	memcpy(t->provider, wallet_pub(prov), WALLET_PUBLEN);
	t->budget = 10000;
	t->expiry = NOW + 600;
	t->price_in = 2000000;
	t->price_out = 6000000;
	t->chunk = 16;
}

static voucher_t mkv(const chan_terms_t *t, const wallet_t *w, uint64_t seq, uint64_t in, uint64_t out,
	amount_t amount)
{
	voucher_t v = { .seq = seq, .in_tokens = in, .out_tokens = out, .amount = amount };
	memcpy(v.channel, t->channel, MARKET_IDLEN);
	if (voucher_sign(&v, w) != 0)
		memset(v.sig, 0, sizeof(v.sig));
	return v;
}

/* A correctly priced voucher. */
static voucher_t mkvp(const chan_terms_t *t, const wallet_t *w, uint64_t seq, uint64_t in, uint64_t out)
{
	amount_t a = 0;
	if (amount_charge2(in, t->price_in, out, t->price_out, &a) != 0)
		a = 0;
	return mkv(t, w, seq, in, out, a);
}

static void test_voucher_refusals(void)
{
	wallet_t *buyer = wallet_seeded(1), *prov = wallet_seeded(2), *mallory = wallet_seeded(3);
	chan_terms_t t;
	test_terms(&t, buyer, prov);
	chan_provider_t c;
	REQUIRE(chan_provider_init(&c, &t) == 0);
	err_msg_t e = { "" };

	voucher_t v1 = mkvp(&t, buyer, 1, 10, 16), v2 = mkvp(&t, buyer, 2, 10, 32);
	CHECK_EQ_INT(v1.amount, 10 * 2 + 16 * 6);
	REQUIRE(chan_provider_accept(&c, &v1, NOW, &e) == 0);
	REQUIRE(chan_provider_accept(&c, &v2, NOW, &e) == 0);
	CHECK_EQ_INT(c.last.seq, 2);

	/* Forged: another key, or a field changed after signing. */
	voucher_t f = mkvp(&t, mallory, 3, 10, 48);
	CHECK_EQ_INT(chan_provider_accept(&c, &f, NOW, &e), VOUCHER_E_FORGED);
	f = mkvp(&t, buyer, 3, 10, 48);
	f.amount += 1000;
	CHECK_EQ_INT(chan_provider_accept(&c, &f, NOW, &e), VOUCHER_E_FORGED);
	f = mkvp(&t, buyer, 3, 10, 48);
	f.out_tokens = 4800;
	CHECK_EQ_INT(chan_provider_accept(&c, &f, NOW, &e), VOUCHER_E_FORGED);
	/* Replayed: the same voucher again. */
	CHECK_EQ_INT(chan_provider_accept(&c, &v2, NOW, &e), VOUCHER_E_REPLAYED);
	/* Reordered: an older one after a newer one. */
	CHECK_EQ_INT(chan_provider_accept(&c, &v1, NOW, &e), VOUCHER_E_REORDERED);
	/* Decreasing: a newer sequence with a lower amount or count. */
	voucher_t d = mkvp(&t, buyer, 3, 10, 20);
	CHECK_EQ_INT(chan_provider_accept(&c, &d, NOW, &e), VOUCHER_E_DECREASING);
	d = mkvp(&t, buyer, 3, 5, 40);      /* more output, fewer input tokens */
	CHECK_EQ_INT(chan_provider_accept(&c, &d, NOW, &e), VOUCHER_E_DECREASING);
	/* Mispriced: the amount is not the charge of its counts. */
	voucher_t m = mkv(&t, buyer, 3, 10, 48, v2.amount + 16 * 6 - 1);
	CHECK_EQ_INT(chan_provider_accept(&c, &m, NOW, &e), VOUCHER_E_MISPRICED);
	m = mkv(&t, buyer, 3, 10, 48, v2.amount + 16 * 6 + 1);
	CHECK_EQ_INT(chan_provider_accept(&c, &m, NOW, &e), VOUCHER_E_MISPRICED);
	/* Over budget: correctly priced, beyond the reserve. */
	voucher_t o = mkvp(&t, buyer, 3, 10, 2000);
	CHECK(o.amount > t.budget);
	CHECK_EQ_INT(chan_provider_accept(&c, &o, NOW, &e), VOUCHER_E_OVER_BUDGET);
	/* Another channel's voucher. */
	chan_terms_t t2 = t;
	t2.channel[0] ^= 1;
	voucher_t w = mkvp(&t2, buyer, 3, 10, 48);
	CHECK_EQ_INT(chan_provider_accept(&c, &w, NOW, &e), VOUCHER_E_CHANNEL);
	/* Expired: at and after the expiry. */
	voucher_t v3 = mkvp(&t, buyer, 3, 10, 48);
	CHECK_EQ_INT(chan_provider_accept(&c, &v3, t.expiry, &e), VOUCHER_E_EXPIRED);
	CHECK(strstr(e.msg, "expired") != NULL);
	/* None of the refusals moved the state. */
	CHECK_EQ_INT(c.last.seq, 2);
	CHECK_EQ_INT(c.last.amount, v2.amount);
	/* Exactly at the budget is fine; a gap in sequences too (cumulative). */
	voucher_t full = mkv(&t, buyer, 7, 20, 1660, 20 * 2 + 1660 * 6);
	CHECK_EQ_INT(full.amount, 10000);
	CHECK_OK(chan_provider_accept(&c, &full, NOW, &e));
	CHECK_EQ_INT(c.last.seq, 7);
	/* Closed. */
	chan_provider_close(&c);
	voucher_t v8 = mkv(&t, buyer, 8, 20, 1660, 10000);
	CHECK_EQ_INT(chan_provider_accept(&c, &v8, NOW, &e), VOUCHER_E_CLOSED);
	CHECK(!chan_provider_may_serve(&c, 0, 0));

	/* Unusable terms. */
	chan_terms_t bad = t;
	bad.chunk = 0;
	CHECK_EQ_INT(chan_provider_init(&c, &bad), ERR_INVAL);
	bad = t;
	bad.budget = 0;
	CHECK_EQ_INT(chan_provider_init(&c, &bad), ERR_INVAL);
	wallet_free(buyer);
	wallet_free(prov);
	wallet_free(mallory);
}

/* One session, token by token: the provider serves while may_serve allows,
 * signs a receipt after each chunk, the buyer answers with a voucher. The
 * buyer stops paying after `pay_chunks` chunks; the provider stops serving
 * after `serve_tokens` tokens. Returns tokens delivered. */
static uint64_t run_session(chan_provider_t *c, chan_buyer_t *bs, const wallet_t *buyer, const wallet_t *prov,
	int pay_chunks, uint64_t serve_tokens, uint64_t prompt)
{
	err_msg_t e = { "" };
	uint64_t in = 0, out = 0;
	int paid_chunks = 0;
	/* The prompt is one step of `prompt` input positions. */
	if (!chan_provider_may_serve(c, prompt, 0))
		return 0;
	in = prompt;
	REQUIRE(chan_buyer_count(bs, prompt, 0) == 0);
	uint64_t since = prompt;
	while (in + out < serve_tokens) {
		if (since >= c->t.chunk) {
			receipt_t r;
			REQUIRE(chan_provider_receipt(c, in, out, NULL, prov, &r) == 0);
			if (paid_chunks < pay_chunks) {
				voucher_t v;
				REQUIRE(chan_buyer_answer(bs, &r, buyer, NOW, &v, &e) == 0);
				REQUIRE(chan_provider_accept(c, &v, NOW, &e) == 0);
				paid_chunks++;
			}
			since = 0;
		}
		if (!chan_provider_may_serve(c, in, out + 1))
			break;
		out++;
		since++;
		REQUIRE(chan_buyer_count(bs, 0, 1) == 0);
	}
	return in + out;
}

static void test_bounded_credit(void)
{
	wallet_t *buyer = wallet_seeded(1), *prov = wallet_seeded(2);
	chan_terms_t t;
	test_terms(&t, buyer, prov);
	chan_provider_t c;
	chan_buyer_t b;
	err_msg_t e = { "" };

	/* A buyer that stops paying after 3 chunks gets exactly one chunk more. */
	REQUIRE(chan_provider_init(&c, &t) == 0);
	REQUIRE(chan_buyer_init(&b, &t) == 0);
	uint64_t got = run_session(&c, &b, buyer, prov, 3, 1000, 8);
	CHECK_EQ_INT(c.last.seq, 3);
	CHECK_EQ_INT(c.last.in_tokens + c.last.out_tokens, 3 * 16);
	CHECK_EQ_INT(got, 3 * 16 + 16);
	CHECK(!chan_provider_may_serve(&c, c.last.in_tokens, c.last.out_tokens + 17));
	CHECK(chan_provider_may_serve(&c, c.last.in_tokens, c.last.out_tokens + 16));
	/* Before any voucher: one chunk of credit, no more. */
	REQUIRE(chan_provider_init(&c, &t) == 0);
	CHECK(chan_provider_may_serve(&c, 16, 0));
	CHECK(!chan_provider_may_serve(&c, 16, 1));
	CHECK(!chan_provider_may_serve(&c, UINT64_MAX, UINT64_MAX));   /* no wrap-around */

	/* A provider that stops after 2.5 chunks is paid for what it delivered:
	 * the buyer's final voucher covers its own count, no more. */
	REQUIRE(chan_provider_init(&c, &t) == 0);
	REQUIRE(chan_buyer_init(&b, &t) == 0);
	got = run_session(&c, &b, buyer, prov, 100, 40, 8);
	CHECK_EQ_INT(got, 40);
	CHECK_EQ_INT(b.paid_in + b.paid_out, 32);
	voucher_t fin;
	REQUIRE(chan_buyer_voucher(&b, buyer, NOW, NULL, &fin, &e) == 0);
	CHECK_EQ_INT(fin.in_tokens, 8);
	CHECK_EQ_INT(fin.out_tokens, 32);
	CHECK_EQ_INT(fin.amount, 8 * 2 + 32 * 6);
	CHECK_OK(chan_provider_accept(&c, &fin, NOW, &e));
	CHECK_EQ_INT(chan_buyer_voucher(&b, buyer, NOW, NULL, &fin, &e), ERR_RANGE);  /* nothing new */
	/* The buyer never pays beyond its budget. */
	REQUIRE(chan_buyer_count(&b, 0, 10000) == 0);
	CHECK_EQ_INT(chan_buyer_voucher(&b, buyer, NOW, NULL, &fin, &e), VOUCHER_E_OVER_BUDGET);
	CHECK_EQ_INT(chan_buyer_count(&b, UINT64_MAX, 0), ERR_RANGE);
	wallet_free(buyer);
	wallet_free(prov);
}

static void test_buyer_checks(void)
{
	wallet_t *buyer = wallet_seeded(1), *prov = wallet_seeded(2), *mallory = wallet_seeded(3);
	chan_terms_t t;
	test_terms(&t, buyer, prov);
	chan_provider_t c;
	chan_buyer_t b;
	err_msg_t e = { "" };
	REQUIRE(chan_provider_init(&c, &t) == 0);
	REQUIRE(chan_buyer_init(&b, &t) == 0);
	REQUIRE(chan_buyer_count(&b, 8, 8) == 0);

	receipt_t r, x;
	voucher_t v;
	REQUIRE(chan_provider_receipt(&c, 8, 8, NULL, prov, &r) == 0);
	CHECK_EQ_INT(r.seq, 1);
	CHECK_EQ_INT(r.amount, 8 * 2 + 8 * 6);

	/* Counts that differ from the buyer's own, either way. */
	x = r;
	x.out_tokens = 9;
	x.amount = 8 * 2 + 9 * 6;
	REQUIRE(receipt_sign(&x, prov) == 0);
	CHECK_EQ_INT(chan_buyer_answer(&b, &x, buyer, NOW, &v, &e), VOUCHER_E_COUNTS);
	x.out_tokens = 7;
	x.amount = 8 * 2 + 7 * 6;
	REQUIRE(receipt_sign(&x, prov) == 0);
	CHECK_EQ_INT(chan_buyer_answer(&b, &x, buyer, NOW, &v, &e), VOUCHER_E_COUNTS);
	/* A price other than the agreed one, even with a consistent amount. */
	x = r;
	x.price_out = 7000000;
	x.amount = 8 * 2 + 8 * 7;
	REQUIRE(receipt_sign(&x, prov) == 0);
	CHECK_EQ_INT(chan_buyer_answer(&b, &x, buyer, NOW, &v, &e), VOUCHER_E_MISPRICED);
	/* The agreed prices with a padded amount. */
	x = r;
	x.amount += 1;
	REQUIRE(receipt_sign(&x, prov) == 0);
	CHECK_EQ_INT(chan_buyer_answer(&b, &x, buyer, NOW, &v, &e), VOUCHER_E_MISPRICED);
	/* Not the provider's signature. */
	x = r;
	REQUIRE(receipt_sign(&x, mallory) == 0);
	CHECK_EQ_INT(chan_buyer_answer(&b, &x, buyer, NOW, &v, &e), VOUCHER_E_FORGED);
	/* Another channel; a skipped chunk; expired. */
	x = r;
	x.channel[3] ^= 1;
	REQUIRE(receipt_sign(&x, prov) == 0);
	CHECK_EQ_INT(chan_buyer_answer(&b, &x, buyer, NOW, &v, &e), VOUCHER_E_CHANNEL);
	x = r;
	x.seq = 2;
	REQUIRE(receipt_sign(&x, prov) == 0);
	CHECK_EQ_INT(chan_buyer_answer(&b, &x, buyer, NOW, &v, &e), VOUCHER_E_REORDERED);
	CHECK_EQ_INT(chan_buyer_answer(&b, &r, buyer, t.expiry, &v, &e), VOUCHER_E_EXPIRED);
	/* Nothing was signed so far. */
	CHECK_EQ_INT(b.seq, 0);
	CHECK_EQ_INT(b.paid, 0);

	/* The honest receipt: the voucher covers exactly it (a two-party receipt). */
	REQUIRE(chan_buyer_answer(&b, &r, buyer, NOW, &v, &e) == 0);
	CHECK(v.seq == r.seq && v.in_tokens == r.in_tokens && v.out_tokens == r.out_tokens && v.amount == r.amount);
	CHECK(memcmp(v.commit, r.commit, MARKET_IDLEN) == 0);
	CHECK_OK(chan_provider_accept(&c, &v, NOW, &e));
	/* The same receipt again is a replay; nothing more is signed. */
	CHECK_EQ_INT(chan_buyer_answer(&b, &r, buyer, NOW, &v, &e), VOUCHER_E_REPLAYED);
	CHECK_EQ_INT(b.seq, 1);
	/* Over budget: the buyer refuses to sign beyond its reserve. */
	REQUIRE(chan_buyer_count(&b, 0, 2000) == 0);
	receipt_t big = r;
	big.seq = 2;
	big.out_tokens = 2008;
	big.amount = 8 * 2 + 2008 * 6;
	REQUIRE(receipt_sign(&big, prov) == 0);
	CHECK_EQ_INT(chan_buyer_answer(&b, &big, buyer, NOW, &v, &e), VOUCHER_E_OVER_BUDGET);
	/* And the provider refuses to sign a receipt beyond it. */
	CHECK_EQ_INT(chan_provider_receipt(&c, 8, 2008, NULL, prov, &x), VOUCHER_E_OVER_BUDGET);
	CHECK_EQ_INT(chan_provider_receipt(&c, 7, 8, NULL, prov, &x), ERR_RANGE);
	wallet_free(buyer);
	wallet_free(prov);
	wallet_free(mallory);
}

/* ---- reputation ---- */

static void test_rep_sybil(void)
{
	/* Node 0 = self, 1 = A, 2 = B, 3..12 honest buyers, 13..62 Sybils. */
	enum { SELF = 0, A = 1, B = 2, N = 63 };
	rep_edge_t edges[60];
	int k = 0;
	rep_obs_t honest = { .sessions = 20, .tokens_served = 50000, .paid = 1000000, .latency_ms = 40 };
	double s_honest = rep_local_score(&honest, NULL);
	for (uint32_t i = 3; i < 13; i++)
		edges[k++] = (rep_edge_t){ i, A, 1000000, s_honest };
	for (uint32_t i = 13; i < 63; i++)
		edges[k++] = (rep_edge_t){ i, B, 0, 1.0 };       /* full praise, nothing paid */
	double trust[N];
	err_msg_t e = { "" };
	REQUIRE(rep_network(N, SELF, edges, (size_t)k, NULL, trust, &e) == 0);
	double sum = 0;
	for (int i = 0; i < N; i++)
		sum += trust[i];
	CHECK_NEAR(sum, 1.0, 1e-9);
	CHECK(trust[A] > trust[B]);
	CHECK(trust[A] > 0.1);
	CHECK(trust[B] < 1e-12);
	/* Sybils that each paid 1 micro-unit: still far below A. */
	for (int i = 10; i < 60; i++)
		edges[i].paid = 1;
	REQUIRE(rep_network(N, SELF, edges, (size_t)k, NULL, trust, &e) == 0);
	CHECK(trust[A] > 1000 * trust[B]);
	CHECK(trust[B] > 0);
	/* Self's own bad experience with A counts too, but not alone. */
	rep_edge_t more[61];
	memcpy(more, edges, sizeof(edges));
	more[60] = (rep_edge_t){ SELF, B, 500000, 0.9 };
	REQUIRE(rep_network(N, SELF, more, 61, NULL, trust, &e) == 0);
	CHECK(trust[B] > 0.1);
	/* Bad input is refused. */
	rep_edge_t badv = { 0, 99, 1, 0.5 };
	CHECK_EQ_INT(rep_network(N, SELF, &badv, 1, NULL, trust, &e), ERR_INVAL);
	badv = (rep_edge_t){ 0, 1, 1, 1.5 };
	CHECK_EQ_INT(rep_network(N, SELF, &badv, 1, NULL, trust, &e), ERR_INVAL);
	badv = (rep_edge_t){ 0, 1, -1, 0.5 };
	CHECK_EQ_INT(rep_network(N, SELF, &badv, 1, NULL, trust, &e), ERR_INVAL);
	CHECK_EQ_INT(rep_network(N, N, NULL, 0, NULL, trust, &e), ERR_INVAL);
	/* No evidence at all: self keeps all trust. */
	REQUIRE(rep_network(N, SELF, NULL, 0, NULL, trust, &e) == 0);
	CHECK_NEAR(trust[SELF], 1.0, 1e-12);
}

static void test_rep_failures(void)
{
	/* Same price and speed; 20% vs 1% failed sessions; and 1% with one failed audit. */
	rep_obs_t x = { .sessions = 100, .failures = 20, .tokens_served = 100000, .paid = 1000000, .latency_ms = 50 };
	rep_obs_t y = { .sessions = 100, .failures = 1, .tokens_served = 100000, .paid = 1000000, .latency_ms = 50 };
	rep_obs_t z = y;
	z.failed_audits = 1;
	double sx = rep_local_score(&x, NULL), sy = rep_local_score(&y, NULL), sz = rep_local_score(&z, NULL);
	CHECK(sy > sx);
	CHECK(sx > sz);
	CHECK(sz > 0 && sy <= 1);
	/* Timeouts and unsettled sessions hurt too, unsettled less. */
	rep_obs_t t = y, u = y;
	t.timeouts = 10;
	u.unsettled = 10;
	CHECK(rep_local_score(&t, NULL) < rep_local_score(&u, NULL));
	CHECK(rep_local_score(&u, NULL) < sy);
	/* Slower at the same record ranks lower. */
	rep_obs_t slow = y;
	slow.latency_ms = 500;
	CHECK(rep_local_score(&slow, NULL) < sy);
	/* No sessions: the prior, 1/2. */
	rep_obs_t none = { 0 };
	CHECK_NEAR(rep_local_score(&none, NULL), 0.5, 1e-12);

	/* The network view ranks them the same way when 10 buyers paid each the same. */
	enum { SELF = 0, X = 1, Y = 2, Z = 3, N = 14 };
	rep_edge_t edges[30];
	int k = 0;
	for (uint32_t i = 4; i < 14; i++) {
		edges[k++] = (rep_edge_t){ i, X, 1000000, sx };
		edges[k++] = (rep_edge_t){ i, Y, 1000000, sy };
		edges[k++] = (rep_edge_t){ i, Z, 1000000, sz };
	}
	double trust[N];
	err_msg_t e = { "" };
	REQUIRE(rep_network(N, SELF, edges, (size_t)k, NULL, trust, &e) == 0);
	CHECK(trust[Y] > trust[X]);
	CHECK(trust[X] > trust[Z]);
}

TEST_MAIN(test_amount_checked, test_amount_charge, test_amount_text, test_wallet_file, test_wallet_backup,
	test_voucher_codec, test_voucher_refusals, test_bounded_credit, test_buyer_checks, test_rep_sybil,
	test_rep_failures)
