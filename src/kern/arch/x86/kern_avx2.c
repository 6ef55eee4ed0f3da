/* kern_avx2.c - AVX2 + FMA + F16C kernels (x86_common.h with the
 * vpmaddubsw/vpmaddwd integer dot). */
#if defined(__x86_64__)
#include "kern/arch/x86/x86_common.h"

static const kern_ops_t ops_avx2 = {
	X86_COMMON_OPS,
};

const kern_ops_t *kern__ops_avx2(void) { return &ops_avx2; }
#else
#include "kern/quants.h"
const kern_ops_t *kern__ops_avx2(void) { return NULL; }
#endif
