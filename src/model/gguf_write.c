/* gguf_write.c - the GGUF v3 writer.
 *
 * Key/value pairs are serialized when they are set (so a copy from a reader
 * does not keep the reader alive); tensors are declared up front and their
 * bytes pulled from the caller's fill callback one tensor at a time while
 * the file is written. The file appears under its name only once complete:
 * it is written to a temporary file in the same folder, synced and renamed.
 */
#include "model/gguf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kern/kern.h"

typedef struct wkv {
	char *key;
	uint32_t type;
	uint8_t *val;        /* the value as stored in the file */
	size_t val_len;
} wkv_t;

typedef struct wtensor {
	char *name;
	int type;
	uint32_t n_dims;
	int64_t ne[GGUF_MAX_DIMS];
	uint64_t nbytes, offset;
} wtensor_t;

struct gguf_writer {
	wkv_t *kv;
	int64_t n_kv, cap_kv;
	wtensor_t *t;
	int64_t n_t, cap_t;
};

/* ---- a growable byte buffer for one value */

typedef struct wbuf {
	uint8_t *p;
	size_t n, cap;
	int err;
} wbuf_t;

static void wb_put(wbuf_t *b, const void *src, size_t n)
{
	if (b->err)
		return;
	if (n > b->cap - b->n) {
		size_t cap = b->cap ? b->cap : 64;
		while (cap - b->n < n) {
			if (cap > SIZE_MAX / 2) {
				b->err = ERR_NOMEM;
				return;
			}
			cap *= 2;
		}
		uint8_t *p = realloc(b->p, cap);
		if (!p) {
			b->err = ERR_NOMEM;
			return;
		}
		b->p = p;
		b->cap = cap;
	}
	if (n)
		memcpy(b->p + b->n, src, n);
	b->n += n;
}

static void wb_u32(wbuf_t *b, uint32_t v) { wb_put(b, &v, 4); }
static void wb_u64(wbuf_t *b, uint64_t v) { wb_put(b, &v, 8); }
static void wb_str(wbuf_t *b, const void *s, uint64_t n) { wb_u64(b, n); wb_put(b, s, n); }

/* ---- writer object */

gguf_writer_t *gguf_writer_new(void)
{
	return calloc(1, sizeof(gguf_writer_t));
}

void gguf_writer_free(gguf_writer_t *w)
{
	if (!w)
		return;
	for (int64_t i = 0; i < w->n_kv; i++) {
		free(w->kv[i].key);
		free(w->kv[i].val);
	}
	for (int64_t i = 0; i < w->n_t; i++)
		free(w->t[i].name);
	free(w->kv);
	free(w->t);
	free(w);
}

static int key_ok(const char *key)
{
	if (!key)
		return 0;
	size_t n = strlen(key);
	return n > 0 && n <= GGUF_MAX_NAME;
}

/* Stores a serialized value under key, replacing an existing one. Takes b->p. */
static int kv_store(gguf_writer_t *w, const char *key, uint32_t type, wbuf_t *b)
{
	if (b->err) {
		free(b->p);
		return b->err;
	}
	for (int64_t i = 0; i < w->n_kv; i++) {
		if (strcmp(w->kv[i].key, key) == 0) {
			free(w->kv[i].val);
			w->kv[i].type = type;
			w->kv[i].val = b->p;
			w->kv[i].val_len = b->n;
			return 0;
		}
	}
	if (w->n_kv >= GGUF_MAX_KV) {
		free(b->p);
		return ERR_INVAL;
	}
	if (w->n_kv == w->cap_kv) {
		int64_t cap = w->cap_kv ? w->cap_kv * 2 : 16;
		wkv_t *kv = realloc(w->kv, (size_t)cap * sizeof(*kv));
		if (!kv) {
			free(b->p);
			return ERR_NOMEM;
		}
		w->kv = kv;
		w->cap_kv = cap;
	}
	char *k = strdup(key);
	if (!k) {
		free(b->p);
		return ERR_NOMEM;
	}
	w->kv[w->n_kv++] = (wkv_t){ k, type, b->p, b->n };
	return 0;
}

static int is_scalar(int t)
{
	return t >= 0 && t < GGUF_VTYPE_COUNT && t != GGUF_STRING && t != GGUF_ARRAY;
}

int gguf_writer_set_val(gguf_writer_t *w, const char *key, enum gguf_vtype t, const void *v)
{
	if (!key_ok(key) || !is_scalar((int)t) || !v)
		return ERR_INVAL;
	if (t == GGUF_BOOL && *(const uint8_t *)v > 1)
		return ERR_INVAL;
	wbuf_t b = { 0 };
	wb_put(&b, v, gguf_vtype_size(t));
	return kv_store(w, key, t, &b);
}

int gguf_writer_set_u32(gguf_writer_t *w, const char *key, uint32_t v)
{
	return gguf_writer_set_val(w, key, GGUF_UINT32, &v);
}

int gguf_writer_set_i32(gguf_writer_t *w, const char *key, int32_t v)
{
	return gguf_writer_set_val(w, key, GGUF_INT32, &v);
}

int gguf_writer_set_f32(gguf_writer_t *w, const char *key, float v)
{
	return gguf_writer_set_val(w, key, GGUF_FLOAT32, &v);
}

int gguf_writer_set_bool(gguf_writer_t *w, const char *key, int v)
{
	if (v != 0 && v != 1)
		return ERR_INVAL;
	uint8_t b = (uint8_t)v;
	return gguf_writer_set_val(w, key, GGUF_BOOL, &b);
}

int gguf_writer_set_str(gguf_writer_t *w, const char *key, const char *v)
{
	if (!key_ok(key) || !v)
		return ERR_INVAL;
	size_t n = strlen(v);
	if (n > GGUF_MAX_STRING)
		return ERR_INVAL;
	wbuf_t b = { 0 };
	wb_str(&b, v, n);
	return kv_store(w, key, GGUF_STRING, &b);
}

int gguf_writer_set_arr(gguf_writer_t *w, const char *key, enum gguf_vtype t, const void *data, uint64_t n)
{
	if (!key_ok(key) || !is_scalar((int)t) || n > GGUF_MAX_ARRAY || (n && !data))
		return ERR_INVAL;
	size_t bytes = (size_t)n * gguf_vtype_size(t);
	if (t == GGUF_BOOL)
		for (uint64_t i = 0; i < n; i++)
			if (((const uint8_t *)data)[i] > 1)
				return ERR_INVAL;
	wbuf_t b = { 0 };
	wb_u32(&b, t);
	wb_u64(&b, n);
	wb_put(&b, data, bytes);
	return kv_store(w, key, GGUF_ARRAY, &b);
}

int gguf_writer_set_arr_str(gguf_writer_t *w, const char *key, const char *const *strs, uint64_t n)
{
	if (!key_ok(key) || n > GGUF_MAX_ARRAY || (n && !strs))
		return ERR_INVAL;
	wbuf_t b = { 0 };
	wb_u32(&b, GGUF_STRING);
	wb_u64(&b, n);
	for (uint64_t i = 0; i < n; i++) {
		size_t len = strs[i] ? strlen(strs[i]) : 0;
		if (!strs[i] || len > GGUF_MAX_STRING) {
			free(b.p);
			return ERR_INVAL;
		}
		wb_str(&b, strs[i], len);
	}
	return kv_store(w, key, GGUF_ARRAY, &b);
}

int gguf_writer_copy_kv(gguf_writer_t *w, const gguf_kv_t *kv)
{
	if (!kv || !key_ok(kv->key))
		return ERR_INVAL;
	if (is_scalar((int)kv->type))
		return gguf_writer_set_val(w, kv->key, kv->type, kv->data);
	wbuf_t b = { 0 };
	if (kv->type == GGUF_STRING) {
		if (kv->v.str.n > GGUF_MAX_STRING)
			return ERR_INVAL;
		wb_str(&b, kv->v.str.p, kv->v.str.n);
		return kv_store(w, kv->key, GGUF_STRING, &b);
	}
	if (kv->type != GGUF_ARRAY || kv->arr_n > GGUF_MAX_ARRAY)
		return ERR_INVAL;
	wb_u32(&b, kv->arr_type);
	wb_u64(&b, kv->arr_n);
	if (kv->arr_type == GGUF_STRING) {
		for (uint64_t i = 0; i < kv->arr_n; i++) {
			gguf_str_t s = gguf_arr_str(kv, i);
			wb_str(&b, s.p, s.n);
		}
	} else if (is_scalar((int)kv->arr_type)) {
		wb_put(&b, kv->data, (size_t)kv->arr_n * gguf_vtype_size(kv->arr_type));
	} else {
		free(b.p);
		return ERR_INVAL;   /* nested arrays: the reader never produces them */
	}
	return kv_store(w, kv->key, GGUF_ARRAY, &b);
}

int gguf_writer_add_tensor(gguf_writer_t *w, const char *name, int type, uint32_t n_dims, const int64_t *ne)
{
	if (!key_ok(name) || n_dims < 1 || n_dims > GGUF_MAX_DIMS || !ne || w->n_t >= GGUF_MAX_TENSORS)
		return ERR_INVAL;
	const kern_traits_t *tr = kern_traits(type);
	if (!tr || tr->blck_size <= 0)
		return ERR_INVAL;
	uint64_t nelem = 1;
	for (uint32_t d = 0; d < n_dims; d++) {
		if (ne[d] < 1 || ne[d] > GGUF_MAX_NELEM || __builtin_mul_overflow(nelem, (uint64_t)ne[d], &nelem) ||
		    nelem > (uint64_t)GGUF_MAX_NELEM)
			return ERR_INVAL;
	}
	if (ne[0] % tr->blck_size != 0)
		return ERR_INVAL;
	uint64_t nbytes;
	size_t row = kern_row_size(type, ne[0]);
	if (row == 0 || __builtin_mul_overflow((uint64_t)row, nelem / (uint64_t)ne[0], &nbytes))
		return ERR_INVAL;
	for (int64_t i = 0; i < w->n_t; i++)
		if (strcmp(w->t[i].name, name) == 0)
			return ERR_INVAL;
	if (w->n_t == w->cap_t) {
		int64_t cap = w->cap_t ? w->cap_t * 2 : 16;
		wtensor_t *t = realloc(w->t, (size_t)cap * sizeof(*t));
		if (!t)
			return ERR_NOMEM;
		w->t = t;
		w->cap_t = cap;
	}
	char *nm = strdup(name);
	if (!nm)
		return ERR_NOMEM;
	wtensor_t *t = &w->t[w->n_t++];
	*t = (wtensor_t){ .name = nm, .type = type, .n_dims = n_dims, .nbytes = nbytes };
	for (int d = 0; d < GGUF_MAX_DIMS; d++)
		t->ne[d] = d < (int)n_dims ? ne[d] : 1;
	return 0;
}

/* ---- writing */

static uint64_t pad_to(uint64_t x, uint64_t a)
{
	return (x + a - 1) / a * a;
}

static int writer_alignment(const gguf_writer_t *w, uint64_t *out, err_msg_t *e)
{
	*out = GGUF_DEFAULT_ALIGNMENT;
	for (int64_t i = 0; i < w->n_kv; i++) {
		if (strcmp(w->kv[i].key, "general.alignment") != 0)
			continue;
		uint32_t a;
		if (w->kv[i].type != GGUF_UINT32)
			return err_set(e, ERR_INVAL, "general.alignment must be a u32");
		memcpy(&a, w->kv[i].val, 4);
		if (a == 0 || (a & (a - 1)) != 0 || a > GGUF_MAX_ALIGNMENT)
			return err_set(e, ERR_INVAL, "general.alignment %u is not a power of two up to %d", a, GGUF_MAX_ALIGNMENT);
		*out = a;
	}
	return 0;
}

static int put(FILE *f, const void *p, size_t n)
{
	return n == 0 || fwrite(p, 1, n, f) == n ? 0 : -1;
}

static int put_zeros(FILE *f, uint64_t n)
{
	static const uint8_t zeros[256];
	while (n > 0) {
		size_t k = n < sizeof(zeros) ? (size_t)n : sizeof(zeros);
		if (put(f, zeros, k))
			return -1;
		n -= k;
	}
	return 0;
}

/* Header, key/value pairs and tensor infos, then the padding up to the data
 * section; 0 or -1 (errno says why). */
static int put_header(FILE *f, const gguf_writer_t *w, uint64_t align)
{
	wbuf_t b = { 0 };
	wb_put(&b, "GGUF", 4);
	wb_u32(&b, 3);
	wb_u64(&b, (uint64_t)w->n_t);
	wb_u64(&b, (uint64_t)w->n_kv);
	if (b.err || put(f, b.p, b.n)) {
		free(b.p);
		return -1;
	}
	uint64_t total = b.n;
	for (int64_t i = 0; i < w->n_kv; i++) {
		b.n = 0;
		wb_str(&b, w->kv[i].key, strlen(w->kv[i].key));
		wb_u32(&b, w->kv[i].type);
		if (b.err || put(f, b.p, b.n) || put(f, w->kv[i].val, w->kv[i].val_len)) {
			free(b.p);
			return -1;
		}
		total += b.n + w->kv[i].val_len;
	}
	for (int64_t i = 0; i < w->n_t; i++) {
		const wtensor_t *t = &w->t[i];
		b.n = 0;
		wb_str(&b, t->name, strlen(t->name));
		wb_u32(&b, t->n_dims);
		for (uint32_t d = 0; d < t->n_dims; d++)
			wb_u64(&b, (uint64_t)t->ne[d]);
		wb_u32(&b, (uint32_t)t->type);
		wb_u64(&b, t->offset);
		if (b.err || put(f, b.p, b.n)) {
			free(b.p);
			return -1;
		}
		total += b.n;
	}
	free(b.p);
	/* No tensors, no data section to align. */
	return w->n_t ? put_zeros(f, pad_to(total, align) - total) : 0;
}

int gguf_writer_write(gguf_writer_t *w, const char *path, gguf_fill_cb fill, void *arg, err_msg_t *e)
{
	uint64_t align, off = 0, max_bytes = 0;
	int rc = writer_alignment(w, &align, e);
	if (rc)
		return rc;
	if (w->n_t > 0 && !fill)
		return err_set(e, ERR_INVAL, "no fill callback for %lld tensors", (long long)w->n_t);
	for (int64_t i = 0; i < w->n_t; i++) {
		w->t[i].offset = off;
		off = pad_to(off + w->t[i].nbytes, align);
		if (w->t[i].nbytes > max_bytes)
			max_bytes = w->t[i].nbytes;
	}

	size_t plen = strlen(path);
	char *tmp = malloc(plen + 16);
	if (!tmp)
		return err_set(e, ERR_NOMEM, "no memory");
	memcpy(tmp, path, plen);
	memcpy(tmp + plen, ".tmp.XXXXXX", 12);
	int fd = mkstemp(tmp);
	if (fd < 0) {
		rc = err_set(e, ERR_IO, "cannot create a temporary file beside the output: %s", strerror(errno));
		free(tmp);
		return rc;
	}
	/* mkstemp makes it 0600; a model file is not a secret. */
	(void)fchmod(fd, 0644);
	FILE *f = fdopen(fd, "wb");
	void *buf = NULL;
	if (!f) {
		rc = err_set(e, ERR_IO, "cannot open a stream: %s", strerror(errno));
		close(fd);
		goto fail;
	}
	if (put_header(f, w, align)) {
		rc = err_set(e, ERR_IO, "cannot write the header: %s", strerror(errno));
		goto fail;
	}
	if (max_bytes > 0 && !(buf = malloc((size_t)max_bytes))) {
		rc = err_set(e, ERR_NOMEM, "no memory for a tensor of %llu bytes", (unsigned long long)max_bytes);
		goto fail;
	}
	for (int64_t i = 0; i < w->n_t; i++) {
		const wtensor_t *t = &w->t[i];
		int frc = fill(arg, i, buf, t->nbytes);
		if (frc != 0) {
			rc = err_set(e, frc < 0 ? frc : ERR_INVAL, "filling tensor '%s' failed (%d)", t->name, frc);
			goto fail;
		}
		if (put(f, buf, (size_t)t->nbytes) || put_zeros(f, pad_to(t->nbytes, align) - t->nbytes)) {
			rc = err_set(e, ERR_IO, "cannot write tensor '%s': %s", t->name, strerror(errno));
			goto fail;
		}
	}
	free(buf);
	buf = NULL;
	if (fflush(f) != 0 || fsync(fileno(f)) != 0) {
		rc = err_set(e, ERR_IO, "cannot write: %s", strerror(errno));
		goto fail;
	}
	if (fclose(f) != 0) {
		f = NULL;
		rc = err_set(e, ERR_IO, "cannot close: %s", strerror(errno));
		goto fail;
	}
	f = NULL;
	if (rename(tmp, path) != 0) {
		rc = err_set(e, ERR_IO, "cannot rename the temporary file into place: %s", strerror(errno));
		goto fail;
	}
	free(tmp);
	return 0;
fail:
	free(buf);
	if (f)
		fclose(f);
	unlink(tmp);
	free(tmp);
	return rc;
}
