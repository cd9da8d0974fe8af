/*
 * Byte-pair encoding of normalised DNA sequences: the ids of a ``tokenizers`` BPE model, faster.
 *
 * The algorithm is the one of ``tokenizers`` (``Word::merge_all``): each character becomes a
 * symbol (a character outside the vocabulary becomes the unknown token, one per character); a
 * priority queue holds every adjacent pair that has a merge, lowest merge rank first and, among
 * equal ranks, leftmost first; the top pair is merged unless it has gone stale, and the pairs the
 * merged symbol forms with its neighbours are queued. The same merges in the same order give the
 * same ids. What makes it faster is what it leaves out: no strings, offsets or Encoding objects,
 * one flat hash table of merges, and a batch split over threads with the GIL released.
 *
 * Python API (used by service.contract.bpe, which checks its ids against ``tokenizers``):
 *
 *     Encoder(char_ids: bytes, merges: bytes)
 *         char_ids: 128 little-endian int32, the id of each ASCII character (the unknown token's
 *         for a character outside the vocabulary that stands alone, like N), or -1 for one
 *         this encoder does not take;
 *         merges: int32 quadruples (left id, right id, rank, new id).
 *     Encoder.encode(sequences: list[str], cls_id: int, sep_id: int, threads: int) -> list[list[int]]
 *         ids of each sequence, wrapped in cls_id ... sep_id when those are >= 0. Raises
 *         ValueError for a sequence with a character it does not take.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifndef _WIN32
#include <pthread.h>
#define FASTBPE_THREADS 1
#endif

typedef struct {
    uint64_t key;   /* (left << 32) | right, or EMPTY */
    int32_t rank;
    int32_t new_id;
} Slot;

#define EMPTY UINT64_MAX

/* Pairs of the first SMALL ids (the characters and the earliest merges, the commonest pairs)
 * are looked up in a square table of slot indices rather than hashed. */
#define SMALL 64

typedef struct {
    int32_t left, right, new_id;
} Pair;

typedef struct {
    PyObject_HEAD
    int32_t char_ids[128];
    Slot *table;
    uint64_t mask;
    int shift;
    int32_t small[SMALL][SMALL];  /* slot index, or -1 */
    int32_t ranks;     /* merges: ranks are 0 .. ranks - 1 */
    int monotone;      /* see Encoder_init: the bucket queue gives the heap's result */
    Pair *by_rank;     /* where monotone: the merge of each rank */
    PyObject **ints;   /* the int object of every id 0 .. max_id: shared, not made per token */
    int32_t max_id;
} Encoder;

static inline uint64_t slot_of(const Encoder *e, uint64_t key) {
    return (key * 0x9E3779B97F4A7C15ULL) >> e->shift;
}

static inline const Slot *lookup(const Encoder *e, int32_t left, int32_t right) {
    if ((uint32_t)left < SMALL && (uint32_t)right < SMALL) {
        int32_t k = e->small[left][right];
        return k < 0 ? NULL : &e->table[k];
    }
    uint64_t key = ((uint64_t)(uint32_t)left << 32) | (uint32_t)right;
    uint64_t i = slot_of(e, key);
    for (;;) {
        const Slot *s = &e->table[i];
        if (s->key == key) return s;
        if (s->key == EMPTY) return NULL;
        i = (i + 1) & e->mask;
    }
}

/* ----------------------------------------------------------------------------------------- */
/* One word. */

typedef struct {
    int32_t c;      /* token id */
    int32_t prev;
    int32_t next;
    int32_t len;    /* characters covered; 0 once merged into its left neighbour */
} Symbol;

typedef struct {
    int32_t rank;
    int32_t pos;
    int32_t new_id;
} Merge;

typedef struct {
    int32_t pos;
    int32_t next;
} Entry;

typedef struct {
    Symbol *symbols;
    Merge *heap;
    Entry *entries;
    int32_t *pending;
    Py_ssize_t capacity;  /* characters the buffers hold */
    int32_t *heads, *tails;  /* per rank, valid where the bitmap's bit is set */
    uint64_t *bitmap;
} Scratch;

static inline int merge_before(const Merge *a, const Merge *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static inline void sift_down(Merge *heap, Py_ssize_t n, Py_ssize_t i) {
    Merge item = heap[i];
    for (;;) {
        Py_ssize_t child = 2 * i + 1;
        if (child >= n) break;
        if (child + 1 < n && merge_before(&heap[child + 1], &heap[child])) child++;
        if (!merge_before(&heap[child], &item)) break;
        heap[i] = heap[child];
        i = child;
    }
    heap[i] = item;
}

static inline void push(Merge *heap, Py_ssize_t *n, Merge item) {
    Py_ssize_t i = (*n)++;
    while (i > 0) {
        Py_ssize_t parent = (i - 1) / 2;
        if (!merge_before(&item, &heap[parent])) break;
        heap[i] = heap[parent];
        i = parent;
    }
    heap[i] = item;
}

static int reserve(Scratch *s, const Encoder *e, Py_ssize_t n) {
    if (e->monotone && s->heads == NULL) {
        size_t ranks = (size_t)e->ranks + 1, words = (ranks + 63) / 64;
        s->heads = malloc(ranks * sizeof(int32_t));
        s->tails = malloc(ranks * sizeof(int32_t));
        s->bitmap = calloc(words, sizeof(uint64_t));
        if (!s->heads || !s->tails || !s->bitmap) return -1;
    }
    if (n <= s->capacity) return 0;
    Py_ssize_t cap = n < 512 ? 512 : n;
    Symbol *symbols = realloc(s->symbols, (size_t)cap * sizeof(Symbol));
    if (symbols == NULL) return -1;
    s->symbols = symbols;
    /* every merge queues at most two pairs: n - 1 initial + 2 (n - 1) */
    Merge *heap = realloc(s->heap, (size_t)(3 * cap) * sizeof(Merge));
    if (heap == NULL) return -1;
    s->heap = heap;
    Entry *entries = realloc(s->entries, (size_t)(3 * cap) * sizeof(Entry));
    if (entries == NULL) return -1;
    s->entries = entries;
    int32_t *pending = realloc(s->pending, (size_t)(3 * cap) * sizeof(int32_t));
    if (pending == NULL) return -1;
    s->pending = pending;
    s->capacity = cap;
    return 0;
}

static inline void bucket_push(Scratch *s, int32_t *used, int32_t rank, int32_t pos) {
    int32_t k = (*used)++;
    s->entries[k].pos = pos;
    s->entries[k].next = -1;
    uint64_t bit = 1ULL << (rank & 63);
    if (s->bitmap[rank >> 6] & bit) {
        s->entries[s->tails[rank]].next = k;
    } else {
        s->bitmap[rank >> 6] |= bit;
        s->heads[rank] = k;
    }
    s->tails[rank] = k;
}

/* One symbol per character, linked in order. */
static void first_symbols(const Encoder *e, Symbol *sym, const unsigned char *text, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) {
        sym[i].c = e->char_ids[text[i]];
        sym[i].prev = (int32_t)i - 1;
        sym[i].next = i + 1 < n ? (int32_t)i + 1 : -1;
        sym[i].len = 1;
    }
}

static int compare_int32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* The same result as encode_word's heap where every merge's parts are made by merges of lower rank and
 * every token by one merge (Encoder.monotone): then a merge only ever forms pairs of higher rank,
 * the lowest pending rank never goes down, and buckets, one per rank (a bitmap of the ranks
 * pending), visited in rank order, each bucket's positions left to right, pop what the heap
 * would pop. That is a few array operations per merge instead of a heap's log n. */
static Py_ssize_t encode_buckets(const Encoder *e, Scratch *s, const unsigned char *text, Py_ssize_t n,
                                 int32_t *out) {
    Symbol *sym = s->symbols;
    int32_t *pending = s->pending;
    int32_t used = 0;
    first_symbols(e, sym, text, n);
    for (Py_ssize_t i = 0; i + 1 < n; i++) {
        const Slot *m = lookup(e, sym[i].c, sym[i + 1].c);
        if (m != NULL) bucket_push(s, &used, m->rank, (int32_t)i);
    }
    int32_t words = (e->ranks + 63) / 64;
    for (int32_t w = 0; w < words; w++) {
        while (s->bitmap[w]) {
            int b = __builtin_ctzll(s->bitmap[w]);
            s->bitmap[w] &= s->bitmap[w] - 1;
            int32_t rank = w * 64 + b;
            /* this bucket's positions, left to right: merging adds only to later buckets */
            int32_t count = 0, sorted = 1;
            for (int32_t k = s->heads[rank]; k >= 0; k = s->entries[k].next) {
                int32_t pos = s->entries[k].pos;
                if (count > 0 && pending[count - 1] > pos) sorted = 0;
                pending[count++] = pos;
            }
            if (sorted) {
                /* the common case: pairs queued from the characters, in order */
            } else if (count > 16) {
                qsort(pending, (size_t)count, sizeof(int32_t), compare_int32);
            } else {
                for (int32_t q = 1; q < count; q++) {
                    int32_t pos = pending[q], j = q;
                    for (; j > 0 && pending[j - 1] > pos; j--) pending[j] = pending[j - 1];
                    pending[j] = pos;
                }
            }
            for (int32_t q = 0; q < count; q++) {
                int32_t pos = pending[q];
                Symbol *cur = &sym[pos];
                if (cur->len == 0 || cur->next < 0) continue;
                const Pair *m = &e->by_rank[rank];
                if (cur->c != m->left || sym[cur->next].c != m->right) continue; /* stale */
                Symbol right = sym[cur->next];
                sym[cur->next].len = 0;
                cur->c = m->new_id;
                cur->len += right.len;
                cur->next = right.next;
                if (right.next >= 0) sym[right.next].prev = pos;
                if (cur->prev >= 0) {
                    const Slot *l = lookup(e, sym[cur->prev].c, cur->c);
                    if (l != NULL) bucket_push(s, &used, l->rank, cur->prev);
                }
                if (cur->next >= 0) {
                    const Slot *r = lookup(e, cur->c, sym[cur->next].c);
                    if (r != NULL) bucket_push(s, &used, r->rank, pos);
                }
            }
        }
    }
    Py_ssize_t count = 0;
    for (int32_t i = 0; i >= 0; i = sym[i].next) out[count++] = sym[i].c;
    return count;
}

/* Encode `n` ASCII characters into `out` (room for n ids); returns the number of ids. */
static Py_ssize_t encode_word(const Encoder *e, Scratch *s, const unsigned char *text, Py_ssize_t n,
                              int32_t *out) {
    if (n == 0) return 0;
    if (e->monotone) return encode_buckets(e, s, text, n, out);
    Symbol *sym = s->symbols;
    Merge *heap = s->heap;
    Py_ssize_t queued = 0;
    first_symbols(e, sym, text, n);
    for (Py_ssize_t i = 0; i + 1 < n; i++) {
        const Slot *m = lookup(e, sym[i].c, sym[i + 1].c);
        if (m != NULL) {
            heap[queued].rank = m->rank;
            heap[queued].pos = (int32_t)i;
            heap[queued].new_id = m->new_id;
            queued++;
        }
    }
    for (Py_ssize_t i = queued / 2 - 1; i >= 0; i--) sift_down(heap, queued, i);

    while (queued > 0) {
        Merge top = heap[0];
        heap[0] = heap[--queued];
        if (queued > 0) sift_down(heap, queued, 0);

        Symbol *cur = &sym[top.pos];
        if (cur->len == 0 || cur->next < 0) continue;
        Symbol right = sym[cur->next];
        const Slot *m = lookup(e, cur->c, right.c);
        if (m == NULL || m->new_id != top.new_id) continue;  /* stale */
        sym[cur->next].len = 0;
        cur->c = top.new_id;
        cur->len += right.len;
        cur->next = right.next;
        if (right.next >= 0) sym[right.next].prev = top.pos;
        if (cur->prev >= 0) {
            const Slot *p = lookup(e, sym[cur->prev].c, cur->c);
            if (p != NULL) push(heap, &queued, (Merge){p->rank, cur->prev, p->new_id});
        }
        if (cur->next >= 0) {
            const Slot *q = lookup(e, cur->c, sym[cur->next].c);
            if (q != NULL) push(heap, &queued, (Merge){q->rank, top.pos, q->new_id});
        }
    }
    Py_ssize_t count = 0;
    for (int32_t i = 0; i >= 0; i = sym[i].next) out[count++] = sym[i].c;
    return count;
}

/* ----------------------------------------------------------------------------------------- */
/* A batch, split over threads. */

typedef struct {
    const Encoder *encoder;
    const unsigned char **texts;
    const Py_ssize_t *lengths;
    const Py_ssize_t *starts;  /* offset of each sequence's room in `out` */
    Py_ssize_t *counts;
    int32_t *out;
    Py_ssize_t first, last;
    int failed;
} Work;

static void *run_work(void *arg) {
    Work *w = (Work *)arg;
    Scratch s = {0};
    for (Py_ssize_t i = w->first; i < w->last; i++) {
        if (reserve(&s, w->encoder, w->lengths[i]) != 0) {
            w->failed = 1;
            break;
        }
        w->counts[i] = encode_word(w->encoder, &s, w->texts[i], w->lengths[i], w->out + w->starts[i]);
    }
    free(s.symbols);
    free(s.heap);
    free(s.entries);
    free(s.pending);
    free(s.heads);
    free(s.tails);
    free(s.bitmap);
    return NULL;
}

#define MAX_THREADS 64
/* Below this many characters a batch runs on the calling thread. */
#define MIN_CHARS_PER_THREAD 16384

static PyObject *Encoder_encode(Encoder *self, PyObject *args) {
    PyObject *seqs;
    int cls_id, sep_id, threads;
    if (!PyArg_ParseTuple(args, "O!iii", &PyList_Type, &seqs, &cls_id, &sep_id, &threads)) return NULL;
    Py_ssize_t n = PyList_GET_SIZE(seqs);
    const unsigned char **texts = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(*texts));
    Py_ssize_t *lengths = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(Py_ssize_t));
    Py_ssize_t *starts = PyMem_Malloc((size_t)(n + 1) * sizeof(Py_ssize_t));
    Py_ssize_t *counts = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(Py_ssize_t));
    int32_t *out = NULL;
    PyObject *result = NULL;
    if (!texts || !lengths || !starts || !counts) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t total = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *s = PyList_GET_ITEM(seqs, i);
        if (!PyUnicode_Check(s) || !PyUnicode_IS_ASCII(s)) {
            PyErr_Format(PyExc_ValueError, "sequence %zd is not an ASCII string", i);
            goto done;
        }
        texts[i] = (const unsigned char *)PyUnicode_DATA(s);
        lengths[i] = PyUnicode_GET_LENGTH(s);
        for (Py_ssize_t j = 0; j < lengths[i]; j++) {
            if (self->char_ids[texts[i][j]] < 0) {
                PyErr_Format(PyExc_ValueError, "sequence %zd has '%c' at %zd, which this encoder does not take", i,
                             (int)texts[i][j], j);
                goto done;
            }
        }
        if (lengths[i] > INT32_MAX / 4) {
            PyErr_Format(PyExc_ValueError, "sequence %zd is too long", i);
            goto done;
        }
        starts[i] = total;
        total += lengths[i];
    }
    starts[n] = total;
    out = PyMem_Malloc((size_t)(total ? total : 1) * sizeof(int32_t));
    if (!out) {
        PyErr_NoMemory();
        goto done;
    }
    if (threads < 1) threads = 1;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    if (threads > 1 && total / threads < MIN_CHARS_PER_THREAD) {
        threads = (int)(total / MIN_CHARS_PER_THREAD);
        if (threads < 1) threads = 1;
    }
    if (threads > n) threads = n ? (int)n : 1;
#ifndef FASTBPE_THREADS
    threads = 1;
#endif
    Work work[MAX_THREADS];
    /* contiguous ranges of about equal characters */
    Py_ssize_t first = 0;
    for (int t = 0; t < threads; t++) {
        Py_ssize_t goal = total * (t + 1) / threads, last = first;
        while (last < n && (t == threads - 1 || starts[last] < goal)) last++;
        work[t] = (Work){self, texts, lengths, starts, counts, out, first, last, 0};
        first = last;
    }
    Py_BEGIN_ALLOW_THREADS
#ifdef FASTBPE_THREADS
    pthread_t ids[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    for (int t = 1; t < threads; t++) started[t] = pthread_create(&ids[t], NULL, run_work, &work[t]) == 0;
    run_work(&work[0]);
    for (int t = 1; t < threads; t++) {
        if (started[t]) pthread_join(ids[t], NULL);
        else run_work(&work[t]);
    }
#else
    run_work(&work[0]);
#endif
    Py_END_ALLOW_THREADS
    for (int t = 0; t < threads; t++) {
        if (work[t].failed) {
            PyErr_NoMemory();
            goto done;
        }
    }
    int wrap = cls_id >= 0 && sep_id >= 0;
    result = PyList_New(n);
    if (!result) goto done;
    PyObject *cls = wrap ? PyLong_FromLong(cls_id) : NULL, *sep = wrap ? PyLong_FromLong(sep_id) : NULL;
    if (wrap && (!cls || !sep)) {
        Py_XDECREF(cls);
        Py_XDECREF(sep);
        Py_CLEAR(result);
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t k = counts[i], offset = wrap ? 1 : 0;
        PyObject *ids = PyList_New(k + 2 * offset);
        if (!ids) {
            Py_CLEAR(result);
            break;
        }
        if (wrap) {
            Py_INCREF(cls);
            PyList_SET_ITEM(ids, 0, cls);
            Py_INCREF(sep);
            PyList_SET_ITEM(ids, k + 1, sep);
        }
        const int32_t *src = out + starts[i];
        for (Py_ssize_t j = 0; j < k; j++) {
            PyObject *v = self->ints[src[j]];
            Py_INCREF(v);
            PyList_SET_ITEM(ids, j + offset, v);
        }
        PyList_SET_ITEM(result, i, ids);
    }
    Py_XDECREF(cls);
    Py_XDECREF(sep);
done:
    PyMem_Free(texts);
    PyMem_Free(lengths);
    PyMem_Free(starts);
    PyMem_Free(counts);
    PyMem_Free(out);
    return result;
}

/* ----------------------------------------------------------------------------------------- */

static int32_t read_int32(const unsigned char *p) {
    return (int32_t)((uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24));
}

static void clear_ints(Encoder *self) {
    if (self->ints) {
        for (int32_t i = 0; i <= self->max_id; i++) Py_XDECREF(self->ints[i]);
        PyMem_Free(self->ints);
        self->ints = NULL;
    }
}

static int Encoder_init(Encoder *self, PyObject *args, PyObject *kwds) {
    static char *names[] = {"char_ids", "merges", NULL};
    Py_buffer chars, merges;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*y*", names, &chars, &merges)) return -1;
    int rc = -1;
    if (chars.len != 128 * 4 || merges.len % 16 != 0) {
        PyErr_SetString(PyExc_ValueError, "char_ids must be 128 int32 and merges int32 quadruples");
        goto done;
    }
    for (int i = 0; i < 128; i++) self->char_ids[i] = read_int32((const unsigned char *)chars.buf + 4 * i);
    Py_ssize_t count = merges.len / 16;
    uint64_t size = 16;
    int bits = 4;
    while (size < (uint64_t)count * 2) {
        size <<= 1;
        bits++;
    }
    PyMem_Free(self->table);
    self->table = PyMem_Malloc(size * sizeof(Slot));
    if (!self->table) {
        PyErr_NoMemory();
        goto done;
    }
    for (uint64_t i = 0; i < size; i++) self->table[i].key = EMPTY;
    self->mask = size - 1;
    self->shift = 64 - bits;
    int32_t max_id = 0;
    int monotone = count < INT32_MAX;
    for (Py_ssize_t k = 0; k < count; k++) {
        const unsigned char *q = (const unsigned char *)merges.buf + 16 * k;
        int32_t left = read_int32(q), right = read_int32(q + 4), rank = read_int32(q + 8), new_id = read_int32(q + 12);
        if (left < 0 || right < 0 || new_id < 0) {
            PyErr_SetString(PyExc_ValueError, "merge ids must be >= 0");
            goto done;
        }
        if (rank != k) monotone = 0;
        if (left > max_id) max_id = left;
        if (right > max_id) max_id = right;
        if (new_id > max_id) max_id = new_id;
        uint64_t key = ((uint64_t)(uint32_t)left << 32) | (uint32_t)right;
        uint64_t i = slot_of(self, key);
        while (self->table[i].key != EMPTY && self->table[i].key != key) i = (i + 1) & self->mask;
        /* a pair listed twice keeps its last entry, as a HashMap built from the list does */
        if (self->table[i].key == key) monotone = 0;
        self->table[i].key = key;
        self->table[i].rank = rank;
        self->table[i].new_id = new_id;
    }
    /* Monotone: ranks 0, 1, ... in order, each token made by one merge, and each merge's parts
     * characters or tokens made at a lower rank (true of any merge list BPE training writes). */
    if (monotone && count > 0) {
        int32_t *made = PyMem_Malloc(((size_t)max_id + 1) * sizeof(int32_t));
        if (!made) {
            PyErr_NoMemory();
            goto done;
        }
        for (int32_t i = 0; i <= max_id; i++) made[i] = -1;
        for (Py_ssize_t k = 0; k < count && monotone; k++) {
            const unsigned char *q = (const unsigned char *)merges.buf + 16 * k;
            int32_t new_id = read_int32(q + 12);
            if (made[new_id] >= 0) monotone = 0;
            made[new_id] = (int32_t)k;
        }
        for (Py_ssize_t k = 0; k < count && monotone; k++) {
            const unsigned char *q = (const unsigned char *)merges.buf + 16 * k;
            if (made[read_int32(q)] >= k || made[read_int32(q + 4)] >= k) monotone = 0;
        }
        PyMem_Free(made);
    }
    self->monotone = monotone && count > 0;
    self->ranks = (int32_t)count;
    for (int32_t l = 0; l < SMALL; l++) {
        for (int32_t r = 0; r < SMALL; r++) {
            uint64_t key = ((uint64_t)(uint32_t)l << 32) | (uint32_t)r, i = slot_of(self, key);
            while (self->table[i].key != EMPTY && self->table[i].key != key) i = (i + 1) & self->mask;
            self->small[l][r] = self->table[i].key == key ? (int32_t)i : -1;
        }
    }
    for (int32_t i = 0; i < 128; i++) {
        if (self->char_ids[i] > max_id) max_id = self->char_ids[i];
    }
    clear_ints(self);
    self->ints = PyMem_Calloc((size_t)max_id + 1, sizeof(PyObject *));
    if (!self->ints) {
        PyErr_NoMemory();
        goto done;
    }
    self->max_id = max_id;
    for (int32_t i = 0; i <= max_id; i++) {
        if (!(self->ints[i] = PyLong_FromLong(i))) goto done;
    }
    PyMem_Free(self->by_rank);
    self->by_rank = NULL;
    if (self->monotone) {
        self->by_rank = PyMem_Malloc((size_t)count * sizeof(Pair));
        if (!self->by_rank) {
            PyErr_NoMemory();
            goto done;
        }
        for (Py_ssize_t k = 0; k < count; k++) {
            const unsigned char *q = (const unsigned char *)merges.buf + 16 * k;
            self->by_rank[k] = (Pair){read_int32(q), read_int32(q + 4), read_int32(q + 12)};
        }
    }
    rc = 0;
done:
    PyBuffer_Release(&chars);
    PyBuffer_Release(&merges);
    return rc;
}

static void Encoder_dealloc(Encoder *self) {
    clear_ints(self);
    PyMem_Free(self->table);
    PyMem_Free(self->by_rank);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Encoder_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    (void)args;
    (void)kwds;
    Encoder *self = (Encoder *)type->tp_alloc(type, 0);
    if (self) {
        self->table = NULL;
        self->by_rank = NULL;
        self->ints = NULL;
        self->monotone = 0;
    }
    return (PyObject *)self;
}

static PyObject *Encoder_get_monotone(Encoder *self, void *closure) {
    (void)closure;
    return PyBool_FromLong(self->monotone);
}

static PyGetSetDef Encoder_getset[] = {
    {"monotone", (getter)Encoder_get_monotone, NULL, "whether the bucket queue is used (see Encoder_init)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef Encoder_methods[] = {
    {"encode", (PyCFunction)Encoder_encode, METH_VARARGS,
     "encode(sequences, cls_id, sep_id, threads) -> list of id lists"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject EncoderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "service.contract._fastbpe.Encoder",
    .tp_basicsize = sizeof(Encoder),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "BPE encoder of ASCII sequences (the ids of a tokenizers BPE model)",
    .tp_new = Encoder_new,
    .tp_init = (initproc)Encoder_init,
    .tp_dealloc = (destructor)Encoder_dealloc,
    .tp_methods = Encoder_methods,
    .tp_getset = Encoder_getset,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fastbpe", "BPE encoding of normalised sequences.", -1, NULL, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fastbpe(void) {
    if (PyType_Ready(&EncoderType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    Py_INCREF(&EncoderType);
    if (PyModule_AddObject(m, "Encoder", (PyObject *)&EncoderType) < 0) {
        Py_DECREF(&EncoderType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
