/* gguf.h - a validating GGUF (v2, v3) reader, and a writer.
 *
 * The reader maps the file read-only and checks everything against it before
 * returning: magic, version, every count and length, every string, each array
 * element type, each tensor's dims (no overflow, no absurd sizes), type (a
 * known GGML id), offset (aligned, inside the data section, no overlap past
 * the end), duplicate keys and duplicate tensor names. A file that passes
 * can be read through this API without further bounds checks.
 *
 * Borrowed pointers (strings, arrays, tensor data) point into the mapping and
 * live until gguf_free(). Strings are NOT NUL-terminated in the file; the API
 * returns (pointer, length) pairs, plus NUL-terminated copies for keys and
 * tensor names, owned by the gguf_t.
 */
#ifndef COLONY_MODEL_GGUF_H
#define COLONY_MODEL_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

enum gguf_vtype {
	GGUF_UINT8 = 0, GGUF_INT8 = 1, GGUF_UINT16 = 2, GGUF_INT16 = 3,
	GGUF_UINT32 = 4, GGUF_INT32 = 5, GGUF_FLOAT32 = 6, GGUF_BOOL = 7,
	GGUF_STRING = 8, GGUF_ARRAY = 9, GGUF_UINT64 = 10, GGUF_INT64 = 11,
	GGUF_FLOAT64 = 12, GGUF_VTYPE_COUNT = 13
};

#define GGUF_MAX_DIMS 4
/* Limits a valid file stays under (overridable at build time). */
#ifndef GGUF_MAX_KV
#define GGUF_MAX_KV (1 << 20)          /* metadata pairs */
#endif
#ifndef GGUF_MAX_TENSORS
#define GGUF_MAX_TENSORS (1 << 20)
#endif
#ifndef GGUF_MAX_STRING
#define GGUF_MAX_STRING (1 << 26)      /* bytes in one string (chat templates can be long) */
#endif
#ifndef GGUF_MAX_ARRAY
#define GGUF_MAX_ARRAY (1 << 26)       /* elements in one array */
#endif
#ifndef GGUF_MAX_NAME
#define GGUF_MAX_NAME 65535            /* bytes in a key or tensor name (the spec's limit for keys) */
#endif
#ifndef GGUF_MAX_ALIGNMENT
#define GGUF_MAX_ALIGNMENT 65536       /* general.alignment: a power of two up to the largest page size */
#endif
#ifndef GGUF_MAX_NELEM
#define GGUF_MAX_NELEM (1LL << 48)     /* elements in one tensor (kern_row_size cannot overflow below it) */
#endif
#define GGUF_DEFAULT_ALIGNMENT 32

typedef struct gguf_str {
	const char *p;   /* into the mapping, not NUL-terminated */
	uint64_t n;
} gguf_str_t;

typedef struct gguf_kv {
	const char *key;          /* NUL-terminated copy */
	enum gguf_vtype type;
	enum gguf_vtype arr_type; /* element type when type == GGUF_ARRAY */
	uint64_t arr_n;           /* elements when type == GGUF_ARRAY */
	const void *data;         /* scalar value or first array element, in the file;
	                             for string arrays, the first string's length field */
	union {                   /* scalars decoded (little-endian) for convenience: */
		uint64_t u64;         /* unsigned integers, and bool (0 or 1) */
		int64_t i64;          /* signed integers, sign-extended */
		double f64;           /* f32 and f64 */
		gguf_str_t str;       /* string */
	} v;
	/* String arrays: byte offset from `data` of each element's length field,
	 * built at open (owned by the gguf_t) so gguf_arr_str is O(1). NULL for
	 * other types and for empty arrays. */
	const uint64_t *str_off;
} gguf_kv_t;

typedef struct gguf_tensor {
	const char *name;         /* NUL-terminated copy */
	uint32_t n_dims;
	int64_t ne[GGUF_MAX_DIMS];   /* ne[0] is the contiguous (row) dimension; unused dims = 1 */
	int type;                 /* GGML type id, known to kern_traits() */
	uint64_t offset;          /* from the start of the data section */
	const void *data;         /* into the mapping */
	uint64_t nbytes;
} gguf_tensor_t;

typedef struct gguf gguf_t;

/* "u32", "string", "array", ...; "unknown" for ids out of range. */
const char *gguf_vtype_name(int t);
/* Bytes of one scalar of type t; 0 for string, array and unknown ids. */
size_t gguf_vtype_size(int t);

/* Opens and validates a file (mmap). On error returns a negative code, sets
 * *out to NULL and fills *e with what is wrong and where (the message does not
 * repeat the path). Codes: ERR_IO (open, stat, mmap), ERR_TRUNCATED (anything
 * that runs past the end of the file, counts and lengths the file is too
 * short to hold included), ERR_FORMAT (malformed: magic, value types, bool
 * bytes, empty or NUL-containing names, dims, type ids, alignment, misaligned
 * or overlapping tensors, duplicates), ERR_RANGE (a count, length or size
 * above the GGUF_MAX_* limits), ERR_UNSUPPORTED (version 1, unknown versions,
 * big-endian files, nested arrays), ERR_NOMEM.
 * The file must not change while it is open (a shrinking file raises SIGBUS). */
int gguf_open(const char *path, gguf_t **out, err_msg_t *e) WUR;
/* Flags of gguf_open_ex. */
#define GGUF_OPEN_HUGE 1   /* copy the file into memory backed by transparent huge
                              pages instead of mapping it (faster weight streaming;
                              falls back to a mapping if that fails) */
int gguf_open_ex(const char *path, int flags, gguf_t **out, err_msg_t *e) WUR;
/* Same over a caller's buffer, which must outlive the gguf_t (fuzzing, tests). */
int gguf_open_mem(const void *buf, size_t len, gguf_t **out, err_msg_t *e) WUR;
void gguf_free(gguf_t *g);

uint32_t gguf_version(const gguf_t *g);
uint64_t gguf_alignment(const gguf_t *g);
uint64_t gguf_file_size(const gguf_t *g);
const void *gguf_base(const gguf_t *g);       /* start of the file */
uint64_t gguf_data_offset(const gguf_t *g);   /* start of the tensor data section (past the
                                                 end of a file that has no tensors, possibly) */
/* Lets go of the pages of a file mapping read so far (they leave this
 * process's RSS; later reads fault them in again). No-op for a loaded copy. */
void gguf_drop_pages(gguf_t *g);
/* The same for the pages wholly inside [p, p + n) (a copy of some tensors
 * was made); nothing if p is not in this file's mapping. */
void gguf_drop_range(const gguf_t *g, const void *p, size_t n);
/* Where the tensor infos start: the metadata section is [24, this). */
uint64_t gguf_tensor_info_offset(const gguf_t *g);

int64_t gguf_n_kv(const gguf_t *g);
const gguf_kv_t *gguf_kv_at(const gguf_t *g, int64_t i);
const gguf_kv_t *gguf_kv_find(const gguf_t *g, const char *key);   /* NULL if absent */

/* Typed getters: 0 on success; ERR_NOTFOUND if absent; ERR_FORMAT if the
 * stored type cannot be converted losslessly (any integer type into an integer
 * in range; f32/f64 into float). */
int gguf_get_u32(const gguf_t *g, const char *key, uint32_t *out) WUR;
int gguf_get_u64(const gguf_t *g, const char *key, uint64_t *out) WUR;
int gguf_get_i64(const gguf_t *g, const char *key, int64_t *out) WUR;
int gguf_get_f32(const gguf_t *g, const char *key, float *out) WUR;
int gguf_get_bool(const gguf_t *g, const char *key, int *out) WUR;
int gguf_get_str(const gguf_t *g, const char *key, gguf_str_t *out) WUR;
/* Array element access (bounds and type checked by the caller via kv; a wrong
 * type or index is a programmer error: it asserts, and returns an empty string
 * or 0 under NDEBUG). */
gguf_str_t gguf_arr_str(const gguf_kv_t *kv, uint64_t i);   /* O(1): offsets indexed at open */
int64_t gguf_arr_int(const gguf_kv_t *kv, uint64_t i);      /* any integer or bool element type;
                                                               u64 above INT64_MAX wraps */
double gguf_arr_float(const gguf_kv_t *kv, uint64_t i);     /* f32 or f64 elements */

int64_t gguf_n_tensors(const gguf_t *g);
const gguf_tensor_t *gguf_tensor_at(const gguf_t *g, int64_t i);
const gguf_tensor_t *gguf_tensor_find(const gguf_t *g, const char *name);

/* ---- writer: builds a GGUF v3 file in memory order, streaming tensor data.
 * Setting a key that is already set replaces its value in place (its position
 * is kept). Setters return ERR_INVAL for an empty or too long key, a string
 * over GGUF_MAX_STRING, a bad type, or a bool other than 0/1; ERR_NOMEM.
 * The alignment is GGUF_DEFAULT_ALIGNMENT unless a u32 `general.alignment` is
 * set (then it must be a power of two up to GGUF_MAX_ALIGNMENT). Every
 * tensor's data is padded with zeros to the alignment, the last one too; a
 * file without tensors ends right after its metadata (no padding). */
typedef struct gguf_writer gguf_writer_t;

gguf_writer_t *gguf_writer_new(void);   /* NULL if out of memory */
void gguf_writer_free(gguf_writer_t *w);
/* Any scalar type (not string or array); *v holds gguf_vtype_size(t) bytes
 * in host order. */
int gguf_writer_set_val(gguf_writer_t *w, const char *key, enum gguf_vtype t, const void *v) WUR;
int gguf_writer_set_u32(gguf_writer_t *w, const char *key, uint32_t v) WUR;
int gguf_writer_set_i32(gguf_writer_t *w, const char *key, int32_t v) WUR;
int gguf_writer_set_f32(gguf_writer_t *w, const char *key, float v) WUR;
int gguf_writer_set_bool(gguf_writer_t *w, const char *key, int v) WUR;
int gguf_writer_set_str(gguf_writer_t *w, const char *key, const char *v) WUR;
/* Copies a key-value pair (any type, arrays included) from a reader. */
int gguf_writer_copy_kv(gguf_writer_t *w, const gguf_kv_t *kv) WUR;
/* Arrays of scalars (elem size from type) and of strings. */
int gguf_writer_set_arr(gguf_writer_t *w, const char *key, enum gguf_vtype t, const void *data, uint64_t n) WUR;
int gguf_writer_set_arr_str(gguf_writer_t *w, const char *key, const char *const *strs, uint64_t n) WUR;
/* Declares a tensor; data is written later in the same order. ERR_INVAL for a
 * duplicate or empty name, an unknown or unused type id, n_dims outside 1..4,
 * dims < 1, ne[0] not a multiple of the block size, or too many elements. */
int gguf_writer_add_tensor(gguf_writer_t *w, const char *name, int type, uint32_t n_dims, const int64_t *ne) WUR;
/* Writes header + tensor infos, then calls fill(arg, i, buf, nbytes) for each
 * tensor in order, so huge models never sit in memory whole (one tensor's
 * bytes at a time). fill must write all nbytes and return 0; a non-zero
 * return aborts the write and is returned (ERR_INVAL if it was positive).
 * The file is written to a temporary file beside `path`, synced, then renamed
 * over `path`, so a failed write (ERR_IO, with *e saying why) leaves no
 * partial file. fill may be NULL when there are no tensors. The writer can be
 * written again or freed afterwards. */
typedef int (*gguf_fill_cb)(void *arg, int64_t i, void *buf, uint64_t nbytes);
int gguf_writer_write(gguf_writer_t *w, const char *path, gguf_fill_cb fill, void *arg, err_msg_t *e) WUR;

#endif
