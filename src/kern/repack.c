/* repack.c - the R16 layout of Q8_0 and Q4_0 matrices (see kern.h).
 *
 * Generation reads every weight once per token, 16 rows at a time; in the
 * file's layout those are 16 streams a row apart, each block's scale two
 * bytes in front of its quants. R16 turns each 16-row group into a single
 * stream holding, per pair of blocks, the 32 scales in one cache line and
 * then the quants with one row per 32-bit lane, so that a block's 16 row
 * dots accumulate in one vector with nothing to fold.
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

/* Where block b of row r lives in an R16 matrix: the offsets of its scale
 * and of its group's block (quants at kern__r16_qoff from there). */
static void r16_locate(const kern_mat_t *W, int64_t r, int64_t b, size_t wrow, size_t *d_off, size_t *q_base)
{
	size_t pair = (size_t)(r / R16) * R16 * wrow + (size_t)(b / 2) * kern__r16_pair(W->type);
	int h = (int)(b % 2);
	*d_off = pair + 2 * ((size_t)h * R16 + (size_t)(r % R16));
	*q_base = pair + 64 + (size_t)h * R16 * kern__r16_qbytes(W->type);
}

static size_t block_bytes(int type)
{
	return type == KERN_Q4_0 ? sizeof(kern_block_q4_0) : sizeof(kern_block_q8_0);
}

void kern_repack(const kern_mat_t *W, void *dst)
{
	size_t wrow = kern_row_size(W->type, W->cols), bs = block_bytes(W->type);
	int nk = (int)kern__r16_qbytes(W->type) / 4, lr;
	for (int64_t r = 0; r < W->rows; r++) {
		const char *row = (const char *)W->data + (size_t)r * wrow;
		lr = (int)(r % R16);
		for (int64_t b = 0; b < W->cols / 32; b++) {
			size_t d_off, q;
			r16_locate(W, r, b, wrow, &d_off, &q);
			memcpy((char *)dst + d_off, row + (size_t)b * bs, 2);
			for (int k = 0; k < nk; k++)
				memcpy((char *)dst + q + kern__r16_qoff(lr, k), row + (size_t)b * bs + 2 + 4 * k, 4);
		}
	}
}

void kern__r16_get_row_part(const kern_mat_t *W, int64_t r, int64_t b0, int64_t nblk, void *dst)
{
	size_t wrow = kern_row_size(W->type, W->cols), bs = block_bytes(W->type);
	int nk = (int)kern__r16_qbytes(W->type) / 4, lr = (int)(r % R16);
	for (int64_t i = 0; i < nblk; i++) {
		size_t d_off, q;
		r16_locate(W, r, b0 + i, wrow, &d_off, &q);
		char *o = (char *)dst + (size_t)i * bs;
		memcpy(o, (const char *)W->data + d_off, 2);
		for (int k = 0; k < nk; k++)
			memcpy(o + 2 + 4 * k, (const char *)W->data + q + kern__r16_qoff(lr, k), 4);
	}
}

void kern__r16_get_row(const kern_mat_t *W, int64_t r, void *dst)
{
	kern__r16_get_row_part(W, r, 0, W->cols / 32, dst);
}
