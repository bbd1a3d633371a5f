/*
 * The helpers monbridge's C accelerators share, as static inline functions (each module keeps its
 * own copy; nothing is linked between them). Included after <Python.h>; setup.py puts this
 * directory on each extension's include path, and the package data ships it in the sdist.
 *
 *   plain_decimal(s, n)   integrations/prometheus/_promfast.c (a sample's value),
 *                         integrations/datadog/_dsdfast.c (a metric's value)
 *   Buf, buf_*            bridge/_pipefast.c (plain_lines), integrations/prometheus/_promfast.c
 *                         (scraped_labels)
 */
#ifndef MONBRIDGE_FASTCOMMON_H
#define MONBRIDGE_FASTCOMMON_H

#include <string.h>

/*
 * Whether s[0:n] is a decimal in the plain form [+-]?(digits[.digits]|.digits)([eE][+-]?digits)?,
 * which Go's ParseFloat and Python's float() both take.
 */
static inline int plain_decimal(const char *s, Py_ssize_t n) {
    Py_ssize_t k = 0, digits = 0;
    if (n == 0) return 0;
    if (s[k] == '+' || s[k] == '-') k++;
    while (k < n && s[k] >= '0' && s[k] <= '9') { k++; digits++; }
    if (k < n && s[k] == '.') {
        k++;
        while (k < n && s[k] >= '0' && s[k] <= '9') { k++; digits++; }
    }
    if (!digits) return 0;
    if (k < n && (s[k] == 'e' || s[k] == 'E')) {
        Py_ssize_t e = 0;
        k++;
        if (k < n && (s[k] == '+' || s[k] == '-')) k++;
        while (k < n && s[k] >= '0' && s[k] <= '9') { k++; e++; }
        if (!e) return 0;
    }
    return k == n;
}

/*
 * A growable output buffer: p[0:len] written, room for cap bytes. It starts in `small` (no
 * allocation for a short output) and moves to the Python heap, doubling, when it outgrows it.
 *
 *     Buf b;
 *     buf_init(&b);
 *     if (buf_room(&b, k) < 0) ...;   (then up to k more bytes at b.p + b.len)
 *     ... PyBytes_FromStringAndSize(b.p, b.len) ...
 *     buf_free(&b);
 */
typedef struct {
    char *p;
    Py_ssize_t len, cap;
    char small[512];
} Buf;

static inline void buf_init(Buf *b) {
    b->p = b->small;
    b->len = 0;
    b->cap = (Py_ssize_t)sizeof(b->small);
}

/* Room for `more` bytes after p[0:len]; -1 with MemoryError set when there is none. */
static inline int buf_room(Buf *b, Py_ssize_t more) {
    if (more <= b->cap - b->len) return 0;
    if (more > PY_SSIZE_T_MAX - b->len) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t cap = b->cap;
    while (cap < b->len + more) {
        if (cap > PY_SSIZE_T_MAX / 2) {
            cap = b->len + more;
            break;
        }
        cap *= 2;
    }
    char *p;
    if (b->p == b->small) {
        p = PyMem_Malloc(cap);
        if (p != NULL) memcpy(p, b->small, b->len);
    } else {
        p = PyMem_Realloc(b->p, cap);
    }
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

static inline void buf_free(Buf *b) {
    if (b->p != b->small) PyMem_Free(b->p);
    b->p = b->small;
    b->len = 0;
    b->cap = (Py_ssize_t)sizeof(b->small);
}

#endif
