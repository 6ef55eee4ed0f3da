/* repack.c - the R16 layout of Q8_0 and Q4_0 matrices (see kern.h).
 *
 * Generation reads every weight once per token, 16 rows at a time; in the
 * file's layout those are 16 streams a row apart, each block's scale two
 * bytes in front of its quants. R16 turns each 16-row group into a single
 * stream holding, per pair of blocks, the 32 scales in one cache line and
 * then the quants in exactly the order the kernel loads them.
 */
#include <string.h>

#include "kern/quants.h"

int kern_repack_ok(const kern_mat_t *W)
{
	if (W->layout != KERN_LAYOUT_ROWS || (W->type != KERN_Q8_0 && W->type != KERN_Q4_0))
		return 0;
	return W->rows > 0 && W->rows % R16 == 0 && W->cols > 0 && W->cols % 64 == 0;
}

int kern_repack_useful(const kern_mat_t *W)
{
	return kern_repack_ok(W) && kern__ops()->mm_r16[W->type] != NULL;
}

/* Where block b of row r lives in an R16 matrix: its scale, and its quants
 * as two halves of qb / 2 bytes (Q8_0: elements 0-15 and 16-31; Q4_0: bytes
 * 0-7 and 8-15 of qs). */
static void r16_locate(const kern_mat_t *W, int64_t r, int64_t b, size_t wrow, size_t *d_off, size_t q_off[2])
{
	size_t qb = kern__r16_qbytes(W->type);
	size_t pair = (size_t)(r / R16) * R16 * wrow + (size_t)(b / 2) * kern__r16_pair(W->type);
	int lr = (int)(r % R16), h = (int)(b % 2);
	*d_off = pair + 2 * ((size_t)h * R16 + (size_t)lr);
	size_t q = pair + 64 + (size_t)h * R16 * qb + kern__r16_qoff(W->type, lr);
	q_off[0] = q;
	q_off[1] = q + (W->type == KERN_Q4_0 ? 8 : 64);
}

void kern_repack(const kern_mat_t *W, void *dst)
{
	size_t wrow = kern_row_size(W->type, W->cols), bs = W->type == KERN_Q4_0 ? sizeof(kern_block_q4_0)
										  : sizeof(kern_block_q8_0);
	size_t qb = kern__r16_qbytes(W->type);
	int64_t nb = W->cols / 32;
	for (int64_t r = 0; r < W->rows; r++) {
		const char *row = (const char *)W->data + (size_t)r * wrow;
		for (int64_t b = 0; b < nb; b++) {
			size_t d_off, q_off[2];
			r16_locate(W, r, b, wrow, &d_off, q_off);
			memcpy((char *)dst + d_off, row + (size_t)b * bs, 2);
			memcpy((char *)dst + q_off[0], row + (size_t)b * bs + 2, qb / 2);
			memcpy((char *)dst + q_off[1], row + (size_t)b * bs + 2 + qb / 2, qb / 2);
		}
	}
}

void kern__r16_get_row_part(const kern_mat_t *W, int64_t r, int64_t b0, int64_t nblk, void *dst)
{
	size_t wrow = kern_row_size(W->type, W->cols), bs = W->type == KERN_Q4_0 ? sizeof(kern_block_q4_0)
										  : sizeof(kern_block_q8_0);
	size_t qb = kern__r16_qbytes(W->type);
	for (int64_t i = 0; i < nblk; i++) {
		size_t d_off, q_off[2];
		r16_locate(W, r, b0 + i, wrow, &d_off, q_off);
		memcpy((char *)dst + (size_t)i * bs, (const char *)W->data + d_off, 2);
		memcpy((char *)dst + (size_t)i * bs + 2, (const char *)W->data + q_off[0], qb / 2);
		memcpy((char *)dst + (size_t)i * bs + 2 + qb / 2, (const char *)W->data + q_off[1], qb / 2);
	}
}

void kern__r16_get_row(const kern_mat_t *W, int64_t r, void *dst)
{
	kern__r16_get_row_part(W, r, 0, W->cols / 32, dst);
}
