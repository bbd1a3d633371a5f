/*
 * integrations.datadog._dsdfast: the DogStatsD reader's hot loop in C (LineCache.feed's fast path).
 *
 * Why hand-written: benchmarks/bench_dogstatsd.py measured the pure-Python reader at 0.32-0.44x
 * collectd's statsd plugin in datagrams a second, with the line cache already fused (3.5-3.8 us a
 * message of a context already seen, on the CI machine); its profile put nearly all of it in the
 * per-line interpreter work (split, slices, float(), the checks, the slot update) and the
 * per-datagram loop over recvmmsg's results. This module does exactly that work and nothing else:
 *
 *   feed(data, start, lines, gen, codes, room, members_room, min_positive)
 *       walks the newline-separated ASCII text data[start:] line by line; a line
 *       "name:value|tail" whose context text (name + tail) is in `lines` (the LineCache's dict,
 *       str -> entry list) for the current interval `gen`, with a value in the plain decimal form
 *       [+-]?(digits[.digits]|.digits)([eE][+-]?digits)? that is finite, is aggregated into the
 *       entry's slot here, as LineCache's Python loop would. At the first line it does not take
 *       (anything else: unknown context, another interval, another value form, a bound reached,
 *       a new distribution bucket beyond the bound) it stops and returns where, and Python
 *       handles that line and calls again from the next one: the order of lines, and so every
 *       result, is the Python loop's. Returns (offset of the line not taken or len(data),
 *       lines taken, histogram values stored, set members added).
 *
 *   recv(fd, buf, size, batch, block, out) -> (datagrams, bytes in out, special)
 *       one recvmmsg(2) without the interpreter lock (waiting for the first datagram when
 *       `block`), into `buf` (batch slots of size + 1 bytes); the datagrams are copied into
 *       `out` each ending with a newline; `special` lists (index, length, first bytes) of the
 *       datagrams left for Python's drops (empty, longer than `size`, or blank lines alone),
 *       which are not copied. Returns (datagrams, bytes in out, special), or (-errno, 0, []).
 *
 * The Python twin (LineCache._feed_lines and DogStatsDServer._read_mmsg) stays and gives the same
 * results; tests/unit/test_dogstatsd_linecache.py runs both on the same streams.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <math.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "_fastcommon.h"

#define MAX_KEY 512 /* LineCache's _CACHED_LINE: longer context texts are never remembered */
#define MAX_BATCH 256

enum { K_COUNT = 0, K_GAUGE = 1, K_HIST = 2, K_DIST = 3, K_SET = 4 };

static PyObject *s_values, *s_weights, *s_count, *s_append, *s_pos, *s_neg, *s_zero, *s_total, *s_least,
    *s_most;

/* Reads the double of s[0:n] (plain_decimal checked); 0 on success. */
static int read_double(const char *s, Py_ssize_t n, double *out) {
    char tmp[64];
    char *end = NULL;
    double v;
    if (n >= (Py_ssize_t)sizeof(tmp)) return -1; /* (Python reads long ones) */
    memcpy(tmp, s, n);
    tmp[n] = 0;
    v = PyOS_string_to_double(tmp, &end, NULL);
    if (v == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        return -1;
    }
    if (end != tmp + n || !isfinite(v)) return -1;
    *out = v;
    return 0;
}

static int set_float_attr(PyObject *o, PyObject *name, double v) {
    PyObject *f = PyFloat_FromDouble(v);
    int r;
    if (f == NULL) return -1;
    r = PyObject_SetAttr(o, name, f);
    Py_DECREF(f);
    return r;
}

/* Adds `v` (weight w) to the distribution slot d as Aggregator._add_dist does; 1 taken, 0 not
 * (a new bucket beyond the bound: Python counts the drop), -1 error. */
static int add_dist(PyObject *d, double v, long w, double min_positive, long max_buckets) {
    PyObject *buckets = NULL, *key = NULL, *cur, *nv;
    double mag;
    int r = -1;
    if (v > min_positive || v < -min_positive) {
        mag = v > 0 ? v : -v;
        buckets = PyObject_GetAttr(d, v > 0 ? s_pos : s_neg);
        if (buckets == NULL) return -1;
        if (!PyDict_CheckExact(buckets)) { r = 0; goto done; }
        key = PyLong_FromDouble(ceil(log2(mag) * 32.0));
        if (key == NULL) goto done;
        cur = PyDict_GetItemWithError(buckets, key);
        if (cur == NULL) {
            if (PyErr_Occurred()) goto done;
            if (PyDict_GET_SIZE(buckets) >= max_buckets) { r = 0; goto done; }
            nv = PyLong_FromLong(w);
        } else {
            PyObject *wo = PyLong_FromLong(w);
            if (wo == NULL) goto done;
            nv = PyNumber_Add(cur, wo);
            Py_DECREF(wo);
        }
        if (nv == NULL) goto done;
        if (PyDict_SetItem(buckets, key, nv) < 0) { Py_DECREF(nv); goto done; }
        Py_DECREF(nv);
    } else {
        PyObject *z = PyObject_GetAttr(d, s_zero), *wo, *sum;
        if (z == NULL) return -1;
        wo = PyLong_FromLong(w);
        if (wo == NULL) { Py_DECREF(z); return -1; }
        sum = PyNumber_Add(z, wo);
        Py_DECREF(z);
        Py_DECREF(wo);
        if (sum == NULL) return -1;
        r = PyObject_SetAttr(d, s_zero, sum);
        Py_DECREF(sum);
        if (r < 0) return -1;
        r = -1;
    }
    {
        PyObject *t = PyObject_GetAttr(d, s_total), *lo, *hi;
        double total, least, most;
        if (t == NULL) goto done;
        total = PyFloat_AsDouble(t);
        Py_DECREF(t);
        if (total == -1.0 && PyErr_Occurred()) goto done;
        if (set_float_attr(d, s_total, total + v * (double)w) < 0) goto done;
        lo = PyObject_GetAttr(d, s_least);
        if (lo == NULL) goto done;
        least = PyFloat_AsDouble(lo);
        Py_DECREF(lo);
        if (least == -1.0 && PyErr_Occurred()) goto done;
        if (v < least && set_float_attr(d, s_least, v) < 0) goto done;
        hi = PyObject_GetAttr(d, s_most);
        if (hi == NULL) goto done;
        most = PyFloat_AsDouble(hi);
        Py_DECREF(hi);
        if (most == -1.0 && PyErr_Occurred()) goto done;
        if (v > most && set_float_attr(d, s_most, v) < 0) goto done;
    }
    r = 1;
done:
    Py_XDECREF(buckets);
    Py_XDECREF(key);
    return r;
}

/* Adds v to a histogram/timer slot h (_Hist) at rate `rate` (weight winv = 1/rate); 1 taken, 0
 * left to Python (the first weight other than 1), -1 error. */
static int add_hist(PyObject *h, double v, double rate, double winv) {
    PyObject *weights, *values, *f, *res, *cnt;
    double count;
    int r = -1;
    weights = PyObject_GetAttr(h, s_weights);
    if (weights == NULL) return -1;
    if (rate != 1.0 && weights == Py_None) { Py_DECREF(weights); return 0; }
    values = PyObject_GetAttr(h, s_values);
    if (values == NULL) { Py_DECREF(weights); return -1; }
    f = PyFloat_FromDouble(v);
    if (f == NULL) goto done;
    res = PyObject_CallMethodOneArg(values, s_append, f);
    Py_DECREF(f);
    if (res == NULL) goto done;
    Py_DECREF(res);
    cnt = PyObject_GetAttr(h, s_count);
    if (cnt == NULL) goto done;
    count = PyFloat_AsDouble(cnt);
    Py_DECREF(cnt);
    if (count == -1.0 && PyErr_Occurred()) goto done;
    if (set_float_attr(h, s_count, count + (rate == 1.0 ? 1.0 : winv)) < 0) goto done;
    if (weights != Py_None) {
        f = PyFloat_FromDouble(rate == 1.0 ? 1.0 : winv);
        if (f == NULL) goto done;
        res = PyObject_CallMethodOneArg(weights, s_append, f);
        Py_DECREF(f);
        if (res == NULL) goto done;
        Py_DECREF(res);
    }
    r = 1;
done:
    Py_DECREF(weights);
    Py_DECREF(values);
    return r;
}

static PyObject *feed(PyObject *self, PyObject *args) {
    Py_buffer buf;
    Py_ssize_t start, room, members_room;
    PyObject *lines, *gen;
    double min_positive;
    long max_buckets;
    Py_ssize_t pos, taken = 0, stored = 0, members = 0;
    const char *s;
    char keybuf[MAX_KEY];
    (void)self;
    if (!PyArg_ParseTuple(args, "y*nO!Onndl", &buf, &start, &PyDict_Type, &lines, &gen, &room, &members_room,
                          &min_positive, &max_buckets))
        return NULL;
    s = (const char *)buf.buf;
    pos = start;
    while (pos < buf.len) {
        const char *line = s + pos, *nl, *colon, *bar;
        Py_ssize_t n, i, j, klen;
        PyObject *key, *e, *state, *kindo;
        long kind;
        double v = 0.0, rate, winv;
        int r;
        nl = memchr(line, '\n', buf.len - pos);
        n = nl ? nl - line : buf.len - pos;
        if (n == 0) { pos += 1; continue; }
        colon = memchr(line, ':', n);
        bar = memchr(line, '|', n);
        if (colon == NULL || bar == NULL || colon == line || colon > bar) break;
        i = colon - line;
        j = bar - line;
        klen = i + (n - j);
        if (klen > MAX_KEY) break;
        memcpy(keybuf, line, i);
        memcpy(keybuf + i, bar, n - j);
        key = PyUnicode_DecodeASCII(keybuf, klen, NULL);
        if (key == NULL) { PyErr_Clear(); break; }
        e = PyDict_GetItemWithError(lines, key); /* borrowed */
        Py_DECREF(key);
        if (e == NULL) {
            if (PyErr_Occurred()) goto error;
            break;
        }
        if (!PyList_CheckExact(e) || PyList_GET_SIZE(e) < 9) break;
        if (PyList_GET_ITEM(e, 0) != gen) {
            /* (the interval's number: an int the aggregator holds; equal values are equal objects
             * only when small, so compare by value where they differ as objects) */
            int eq = PyObject_RichCompareBool(PyList_GET_ITEM(e, 0), gen, Py_EQ);
            if (eq < 0) goto error;
            if (!eq) break;
        }
        state = PyList_GET_ITEM(e, 1);
        kindo = PyList_GET_ITEM(e, 8);
        kind = PyLong_AsLong(kindo);
        if (kind == -1 && PyErr_Occurred()) goto error;
        rate = PyFloat_AsDouble(PyList_GET_ITEM(e, 3));
        if (rate == -1.0 && PyErr_Occurred()) goto error;
        winv = PyFloat_AsDouble(PyList_GET_ITEM(e, 7));
        if (winv == -1.0 && PyErr_Occurred()) goto error;
        if (kind != K_SET) {
            if (!plain_decimal(line + i + 1, j - i - 1) || read_double(line + i + 1, j - i - 1, &v) < 0) break;
        } else if (j - i - 1 == 0) {
            break;
        }
        switch (kind) {
        case K_COUNT:
        case K_GAUGE: {
            PyObject *old, *nv;
            double d;
            if (!PyList_CheckExact(state) || PyList_GET_SIZE(state) != 1) goto stop;
            if (kind == K_COUNT) {
                old = PyList_GET_ITEM(state, 0);
                if (!PyFloat_CheckExact(old)) goto stop;
                d = PyFloat_AS_DOUBLE(old) + (rate == 1.0 ? v : v * winv);
            } else {
                d = v;
            }
            nv = PyFloat_FromDouble(d);
            if (nv == NULL) goto error;
            PyList_SetItem(state, 0, nv); /* (steals nv, drops the old value) */
            break;
        }
        case K_HIST:
            if (room <= 0) goto stop;
            r = add_hist(state, v, rate, winv);
            if (r < 0) goto error;
            if (r == 0) goto stop;
            room--;
            stored++;
            break;
        case K_DIST: {
            long w = PyLong_AsLong(PyList_GET_ITEM(e, 6));
            if (w == -1 && PyErr_Occurred()) goto error;
            r = add_dist(state, v, w, min_positive, max_buckets);
            if (r < 0) goto error;
            if (r == 0) goto stop;
            break;
        }
        case K_SET: {
            PyObject *member;
            if (!PyAnySet_CheckExact(state)) goto stop;
            member = PyUnicode_DecodeASCII(line + i + 1, j - i - 1, NULL);
            if (member == NULL) { PyErr_Clear(); goto stop; }
            r = PySet_Contains(state, member);
            if (r < 0) { Py_DECREF(member); goto error; }
            if (!r) {
                if (members_room <= 0) { Py_DECREF(member); goto stop; }
                if (PySet_Add(state, member) < 0) { Py_DECREF(member); goto error; }
                members_room--;
                members++;
            }
            Py_DECREF(member);
            break;
        }
        default:
            goto stop;
        }
        taken++;
        pos += n + 1;
        continue;
    stop:
        break;
    }
    if (pos > buf.len) pos = buf.len;
    PyBuffer_Release(&buf);
    return Py_BuildValue("nnnn", pos, taken, stored, members);
error:
    PyBuffer_Release(&buf);
    return NULL;
}

static PyObject *isascii_(PyObject *self, PyObject *args) {
    Py_buffer buf;
    const unsigned char *p;
    Py_ssize_t k;
    int ok = 1;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*", &buf)) return NULL;
    p = (const unsigned char *)buf.buf;
    for (k = 0; k < buf.len; k++)
        if (p[k] & 0x80) { ok = 0; break; }
    PyBuffer_Release(&buf);
    return PyBool_FromLong(ok);
}

/* Whether a datagram of n bytes (kept: the first of them in hand) is left for Python's drops:
 * empty, longer than size, or blank lines alone. */
static int is_special(const char *d, uint32_t n, uint32_t kept, Py_ssize_t size) {
    uint32_t b;
    if (n == 0 || n > (uint64_t)size) return 1;
    for (b = 0; b < kept; b++)
        if (d[b] != '\n' && d[b] != '\r') return 0;
    return 1;
}

/* A datagram's bytes copied at out + *off, ending with a newline. */
static void copy_line(char *out, Py_ssize_t *off, const char *d, uint32_t kept) {
    memcpy(out + *off, d, kept);
    *off += kept;
    if (d[kept - 1] != '\n') out[(*off)++] = '\n';
}

static PyObject *recv_(PyObject *self, PyObject *args) {
    int fd, block, flags, got, k, err = 0;
    Py_buffer rbuf, out;
    Py_ssize_t size, batch, off = 0, slot;
    struct mmsghdr mm[MAX_BATCH];
    struct iovec iov[MAX_BATCH];
    PyObject *special = NULL, *res;
    (void)self;
    if (!PyArg_ParseTuple(args, "iw*nnpw*", &fd, &rbuf, &size, &batch, &block, &out)) return NULL;
    slot = size + 1;
    if (batch < 1 || batch > MAX_BATCH || rbuf.len < batch * slot || out.len < batch * slot) {
        PyBuffer_Release(&rbuf);
        PyBuffer_Release(&out);
        PyErr_SetString(PyExc_ValueError, "recv: buffers smaller than batch * (size + 1) or batch out of range");
        return NULL;
    }
    memset(mm, 0, sizeof(mm[0]) * batch);
    for (k = 0; k < batch; k++) {
        iov[k].iov_base = (char *)rbuf.buf + k * slot;
        iov[k].iov_len = size;
        mm[k].msg_hdr.msg_iov = &iov[k];
        mm[k].msg_hdr.msg_iovlen = 1;
    }
    /* What is queued is taken without giving up the interpreter lock (given up, another thread
     * holds it for a whole switch interval, 5 ms, while the socket fills); only an empty socket
     * is waited for with the lock released. */
    flags = MSG_TRUNC | MSG_DONTWAIT;
    got = recvmmsg(fd, mm, (unsigned)batch, flags, NULL);
    if (got < 0) err = errno;
    if (got < 0 && err == EAGAIN && block) {
        err = 0;
        Py_BEGIN_ALLOW_THREADS
        got = recvmmsg(fd, mm, (unsigned)batch, MSG_TRUNC | MSG_WAITFORONE, NULL);
        if (got < 0) err = errno;
        Py_END_ALLOW_THREADS
    }
    if (got < 0) {
        PyBuffer_Release(&rbuf);
        PyBuffer_Release(&out);
        return Py_BuildValue("in[]", -err, (Py_ssize_t)0);
    }
    special = PyList_New(0);
    if (special == NULL) goto fail;
    for (k = 0; k < got; k++) {
        const char *d = (const char *)rbuf.buf + k * slot;
        Py_ssize_t n = mm[k].msg_len;
        if (mm[k].msg_hdr.msg_flags & MSG_TRUNC && n <= size) n = size + 1;
        Py_ssize_t shown = n > size ? size : n;
        if (is_special(d, (uint32_t)n, (uint32_t)shown, size)) {
            PyObject *item = Py_BuildValue("nny#", (Py_ssize_t)k, n, d, shown);
            if (item == NULL || PyList_Append(special, item) < 0) { Py_XDECREF(item); goto fail; }
            Py_DECREF(item);
            continue;
        }
        copy_line((char *)out.buf, &off, d, (uint32_t)n);
    }
    PyBuffer_Release(&rbuf);
    PyBuffer_Release(&out);
    res = Py_BuildValue("inN", got, off, special);
    return res;
fail:
    Py_XDECREF(special);
    PyBuffer_Release(&rbuf);
    PyBuffer_Release(&out);
    return NULL;
}


/* ------------------------------------------------------------------------------------------------
 * Queue: the socket of one reader, read by that reader (take) and, while the reader does not read,
 * by a watchdog thread that never holds the interpreter lock (pump), into a bounded byte ring.
 *
 * Why: a Python reader that blocked in recvmmsg(2) must take the interpreter lock back when a
 * datagram comes; while another thread runs Python (a flush, the event loop) that takes up to the
 * switch interval, 5 ms, and the kernel's receive buffer (212,992 bytes by default) holds 1-2 ms
 * of a busy stream: bench_dogstatsd lost 5-8 % at half of saturation, in bursts at each flush.
 * A thread that only copies datagrams into a ring costs throughput when it reads all the time
 * (measured: 0.6x the reader alone at saturation), so the pump reads only when the reader has not
 * read for PUMP_IDLE_US and datagrams wait: at saturation the reader reads and the pump sleeps;
 * when the reader waits for the lock (or for datagrams), the pump empties the socket.
 *
 * Every read of the socket, the reader's and the pump's, is made under the queue's mutex, and the
 * reader takes what the ring holds before it reads the socket: datagrams keep their order.
 * The mutex is never held while the interpreter lock is waited for.
 * A full ring is not read into: the socket fills and the kernel drops (counted by the caller from
 * /proc/net/udp); `dropped` counts a datagram the ring had no room for after all (not expected:
 * the pump reads only as many as surely fit).
 * Records: [u32 length as received][u32 bytes kept][bytes], kept = min(length, size); a record
 * that does not fit before the ring's end starts at 0 after a wrap mark (kept = WRAP).
 */
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define WRAP 0xFFFFFFFFu
#define MAX_ERRORS 16
#define PUMP_IDLE_US 500
#define COALESCE 16     /* a take of fewer datagrams waits COALESCE_US for more */
#define COALESCE_US 200
#define SPECIAL_BYTES 128 /* (of a special datagram, for its excerpt and its blank check) */

typedef struct {
    PyObject_HEAD
    pthread_mutex_t mu;
    pthread_cond_t cv; /* datagrams in the ring, or stopping */
    char *ring;
    size_t cap, head, tail, used; /* write at head, read at tail; used: bytes held incl. wrap gaps */
    unsigned long long dropped, pumped, reads, full;
    int fd;
    Py_ssize_t size;
    int batch;
    int stopping, pumping, reader_waiting;
    int errors[MAX_ERRORS];
    int nerrors;
    /* the reader's own recvmmsg buffers (used under mu) */
    char *rbuf;
    struct mmsghdr *mm;
    struct iovec *iov;
} Queue;

static int queue_init(Queue *q, PyObject *args, PyObject *kw) {
    static char *names[] = {"fd", "size", "batch", "capacity", NULL};
    Py_ssize_t capacity;
    if (q->ring != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Queue: already initialised");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kw, "inin", names, &q->fd, &q->size, &q->batch, &capacity)) return -1;
    if (q->size < 1 || q->size > 65535 || q->batch < 1 || q->batch > MAX_BATCH || capacity < 4 * (q->size + 17)) {
        PyErr_SetString(PyExc_ValueError, "Queue: size 1..65535, batch 1..256, capacity >= 4 * (size + 17)");
        return -1;
    }
    capacity &= ~(Py_ssize_t)7;
    q->ring = malloc((size_t)capacity); /* (its pages are touched only as the ring fills) */
    q->rbuf = malloc((size_t)(q->size + 1) * (size_t)q->batch);
    q->mm = calloc((size_t)q->batch, sizeof(*q->mm));
    q->iov = calloc((size_t)q->batch, sizeof(*q->iov));
    if (q->ring == NULL || q->rbuf == NULL || q->mm == NULL || q->iov == NULL) {
        free(q->ring);
        free(q->rbuf);
        free(q->mm);
        free(q->iov);
        q->ring = NULL;
        PyErr_NoMemory();
        return -1;
    }
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->cv, NULL);
    q->cap = (size_t)capacity;
    return 0;
}

static void queue_dealloc(Queue *q) {
    if (q->ring != NULL) {
        free(q->ring);
        free(q->rbuf);
        free(q->mm);
        free(q->iov);
        pthread_mutex_destroy(&q->mu);
        pthread_cond_destroy(&q->cv);
    }
    Py_TYPE(q)->tp_free((PyObject *)q);
}

/* Appends one record (mutex held); 0 when there is no room. */
static int ring_put(Queue *q, uint32_t length, const char *data, uint32_t kept) {
    size_t need = 8 + kept, at = q->head, gap = 0;
    uint32_t hdr[2];
    need = (need + 7) & ~(size_t)7;
    if (at + need > q->cap) { /* (wraps: the rest of the ring is a gap) */
        gap = q->cap - at;
        at = 0;
    }
    if (q->used + gap + need > q->cap) return 0;
    if (gap) {
        if (gap >= 8) {
            hdr[0] = 0;
            hdr[1] = WRAP;
            memcpy(q->ring + q->head, hdr, 8);
        }
        q->used += gap;
    }
    hdr[0] = length;
    hdr[1] = kept;
    memcpy(q->ring + at, hdr, 8);
    memcpy(q->ring + at + 8, data, kept);
    q->head = (at + need) % q->cap;
    q->used += need;
    return 1;
}

/* One recvmmsg(2) of up to vlen datagrams without waiting into q's reader buffers (mutex held). */
static int read_socket(Queue *q, int vlen, int *err) {
    Py_ssize_t slot = q->size + 1;
    int k, got;
    for (k = 0; k < vlen; k++) {
        q->iov[k].iov_base = q->rbuf + k * slot;
        q->iov[k].iov_len = (size_t)q->size;
        memset(&q->mm[k].msg_hdr, 0, sizeof(q->mm[k].msg_hdr));
        q->mm[k].msg_hdr.msg_iov = &q->iov[k];
        q->mm[k].msg_hdr.msg_iovlen = 1;
    }
    got = recvmmsg(q->fd, q->mm, (unsigned)vlen, MSG_TRUNC | MSG_DONTWAIT, NULL);
    *err = got < 0 ? errno : 0;
    return got;
}

static uint32_t msg_length(Queue *q, int k) {
    uint32_t n = q->mm[k].msg_len;
    if (q->mm[k].msg_hdr.msg_flags & MSG_TRUNC && n <= (uint32_t)q->size) n = (uint32_t)q->size + 1;
    return n;
}

static void note_error(Queue *q, int err) {
    if (err != EAGAIN && err != EWOULDBLOCK && err != EINTR && q->nerrors < MAX_ERRORS) q->errors[q->nerrors++] = err;
}

static PyObject *queue_pump(Queue *q, PyObject *noargs) {
    Py_ssize_t slot = q->size + 1;
    (void)noargs;
    unsigned long long taken_over = ~0ULL; /* (the reader's reads when the pump last read in its place) */
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&q->mu);
    q->pumping = 1;
    pthread_mutex_unlock(&q->mu);
    for (;;) {
        struct pollfd pfd = {q->fd, POLLIN, 0};
        unsigned long long seen;
        int ready, got, err, k, vlen, errored = 0, full = 0;
        pthread_mutex_lock(&q->mu);
        seen = q->reads;
        if (q->stopping) {
            pthread_mutex_unlock(&q->mu);
            break;
        }
        pthread_mutex_unlock(&q->mu);
        ready = poll(&pfd, 1, 100);
        if (ready <= 0) continue;
        /* (the reader's turn first, unless the pump already reads in its place) */
        if (!q->reader_waiting && seen != taken_over) usleep(PUMP_IDLE_US);
        pthread_mutex_lock(&q->mu);
        /* the reader read since: it keeps up, this wake-up is not needed */
        while (!q->stopping && (q->reader_waiting || q->reads == seen)) {
            vlen = (int)((q->cap - q->used) / ((size_t)slot + 16)) - 1; /* (a record each and a wrap's gap) */
            if (vlen > q->batch) vlen = q->batch;
            if (vlen < 1) { /* (the ring full: the socket fills, the kernel drops) */
                q->full++;
                full = 1;
                break;
            }
            got = read_socket(q, vlen, &err);
            if (got <= 0) {
                if (got < 0) {
                    note_error(q, err);
                    errored = err != EAGAIN && err != EWOULDBLOCK && err != EINTR;
                }
                break;
            }
            for (k = 0; k < got; k++) {
                uint32_t n = msg_length(q, k);
                if (!ring_put(q, n, q->rbuf + k * slot, n > (uint32_t)q->size ? (uint32_t)q->size : n)) q->dropped++;
            }
            q->pumped += (unsigned long long)got;
            taken_over = seen;
            pthread_cond_signal(&q->cv);
            if (got < vlen) break; /* (the socket is empty) */
            pthread_mutex_unlock(&q->mu); /* (the reader may take the ring between two batches) */
            pthread_mutex_lock(&q->mu);
        }
        pthread_mutex_unlock(&q->mu);
        if (errored) usleep(100000); /* (an error that repeats does not spin) */
        if (full) usleep(PUMP_IDLE_US); /* (nor does a full ring while the reader is away) */
    }
    pthread_mutex_lock(&q->mu);
    q->pumping = 0;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

typedef struct {
    int index;
    uint32_t n, kept;
    char data[SPECIAL_BYTES];
} Special;

/* One datagram out (mutex held): copied into out with its newline, or kept aside as special
 * (empty, longer than size, blank lines alone); 0 when out has no room for it. */
static int emit(Queue *q, const char *d, uint32_t n, uint32_t kept, char *out, Py_ssize_t cap, Py_ssize_t *off,
                Special *sp, int *nspecial, int index) {
    if (*off + (Py_ssize_t)kept + 1 > cap) return 0;
    if (is_special(d, n, kept, q->size)) {
        Special *x = &sp[(*nspecial)++];
        x->index = index;
        x->n = n;
        x->kept = kept < SPECIAL_BYTES ? kept : SPECIAL_BYTES;
        memcpy(x->data, d, x->kept);
    } else {
        copy_line(out, off, d, kept);
    }
    return 1;
}

/* Takes up to `most` datagrams (mutex held): first what the ring holds, then, if the ring is
 * empty, one read of the socket. */
static int take_locked(Queue *q, char *out, Py_ssize_t cap, Py_ssize_t *off, int most, Special *sp, int *nspecial,
                       int stopping) {
    int got = 0;
    while (got < most && q->used > 0) {
        uint32_t hdr[2];
        size_t gap = q->cap - q->tail;
        if (gap < 8) {
            q->used -= gap;
            q->tail = 0;
            continue;
        }
        memcpy(hdr, q->ring + q->tail, 8);
        if (hdr[1] == WRAP) {
            q->used -= gap;
            q->tail = 0;
            continue;
        }
        if (!emit(q, q->ring + q->tail + 8, hdr[0], hdr[1], out, cap, off, sp, nspecial, got)) break;
        q->tail = (q->tail + ((8 + (size_t)hdr[1] + 7) & ~(size_t)7)) % q->cap;
        q->used -= (8 + (size_t)hdr[1] + 7) & ~(size_t)7;
        got++;
    }
    if (q->used == 0) q->head = q->tail = 0;
    if (got == 0) {
        Py_ssize_t slot = q->size + 1;
        int err, k, n = read_socket(q, most, &err);
        q->reads++;
        if (n < 0) note_error(q, err);
        for (k = 0; k < n; k++) {
            uint32_t len = msg_length(q, k);
            if (len == 0 && stopping) continue; /* (the shutdown's wake-up) */
            emit(q, q->rbuf + k * slot, len, len > (uint32_t)q->size ? (uint32_t)q->size : len, out, cap, off, sp,
                 nspecial, got);
            got++;
        }
    }
    return got;
}

/* take(out, most) -> (datagrams, bytes in out, special, errors): what the ring holds, else what
 * the socket holds, copied into out each ending with a newline; waits (the interpreter lock
 * released) while there is nothing; (-1, 0, [], errors) once stopping and nothing is left. */
static PyObject *queue_take(Queue *q, PyObject *args) {
    Py_buffer out;
    int most, got, k, nerr = 0, nspecial = 0, errs[MAX_ERRORS], stopping;
    Py_ssize_t off = 0;
    PyObject *special = NULL, *errors = NULL;
    Special *sp;
    if (!PyArg_ParseTuple(args, "w*i", &out, &most)) return NULL;
    if (most < 1 || most > q->batch) {
        PyBuffer_Release(&out);
        PyErr_SetString(PyExc_ValueError, "take: most must be 1..batch");
        return NULL;
    }
    sp = malloc(sizeof(*sp) * (size_t)most);
    if (sp == NULL) {
        PyBuffer_Release(&out);
        return PyErr_NoMemory();
    }
    pthread_mutex_lock(&q->mu);
    stopping = q->stopping;
    got = take_locked(q, out.buf, out.len, &off, most, sp, &nspecial, stopping);
    if (got == 0 && !stopping && q->nerrors == 0) {
        /* nothing: wait, the interpreter lock released, for the pump to put datagrams in the ring */
        PyThreadState *ts;
        q->reader_waiting = 1;
        pthread_mutex_unlock(&q->mu);
        ts = PyEval_SaveThread();
        pthread_mutex_lock(&q->mu);
        while (got == 0 && !q->stopping && q->nerrors == 0) {
            if (q->used == 0) {
                struct timespec until;
                clock_gettime(CLOCK_REALTIME, &until);
                until.tv_nsec += 50 * 1000000L; /* (and a look of its own now and then: a pump that never ran) */
                if (until.tv_nsec >= 1000000000L) {
                    until.tv_sec++;
                    until.tv_nsec -= 1000000000L;
                }
                pthread_cond_timedwait(&q->cv, &q->mu, &until);
            }
            got = take_locked(q, out.buf, out.len, &off, most, sp, &nspecial, q->stopping);
        }
        q->reader_waiting = 0;
        stopping = q->stopping;
        pthread_mutex_unlock(&q->mu);
        PyEval_RestoreThread(ts);
        pthread_mutex_lock(&q->mu);
    }
    if (got > 0 && got < COALESCE && !stopping) {
        /* A few datagrams only (the reader keeps up): wait a little, the interpreter lock released,
         * and take what came meanwhile with them; the work of a take and of its parse call is
         * then shared by more datagrams (measured: 2.9 us a datagram parsed one at a time, 1.4 in
         * batches of 32). The socket holds hundreds of datagrams; the watchdog reads if this
         * wait is long. */
        PyThreadState *ts;
        int more;
        pthread_mutex_unlock(&q->mu);
        ts = PyEval_SaveThread();
        usleep(COALESCE_US);
        pthread_mutex_lock(&q->mu);
        more = take_locked(q, out.buf, out.len, &off, most - got, sp, &nspecial, q->stopping);
        got += more;
        pthread_mutex_unlock(&q->mu);
        PyEval_RestoreThread(ts);
        pthread_mutex_lock(&q->mu);
    }
    if (got == 0 && stopping) {
        got = take_locked(q, out.buf, out.len, &off, most, sp, &nspecial, 1);
        if (got == 0) got = -1;
    }
    nerr = q->nerrors;
    memcpy(errs, q->errors, sizeof(int) * (size_t)nerr);
    q->nerrors = 0;
    pthread_mutex_unlock(&q->mu);
    PyBuffer_Release(&out);
    special = PyList_New(nspecial);
    errors = PyList_New(nerr);
    if (special == NULL || errors == NULL) goto fail;
    for (k = 0; k < nspecial; k++) {
        PyObject *item = Py_BuildValue("iIy#", sp[k].index, sp[k].n, sp[k].data, (Py_ssize_t)sp[k].kept);
        if (item == NULL) goto fail;
        PyList_SET_ITEM(special, k, item);
    }
    for (k = 0; k < nerr; k++) {
        PyObject *e = PyLong_FromLong(errs[k]);
        if (e == NULL) goto fail;
        PyList_SET_ITEM(errors, k, e);
    }
    free(sp);
    return Py_BuildValue("inNN", got, off, special, errors);
fail:
    free(sp);
    Py_XDECREF(special);
    Py_XDECREF(errors);
    return NULL;
}

static PyObject *queue_stop(Queue *q, PyObject *noargs) {
    (void)noargs;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&q->mu);
    q->stopping = 1;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

#define QUEUE_COUNT(fname, field, type, conv)          \
    static PyObject *fname(Queue *q, void *closure) {  \
        type n;                                        \
        (void)closure;                                 \
        pthread_mutex_lock(&q->mu);                    \
        n = (type)q->field;                            \
        pthread_mutex_unlock(&q->mu);                  \
        return conv(n);                                \
    }
QUEUE_COUNT(queue_dropped, dropped, unsigned long long, PyLong_FromUnsignedLongLong)
QUEUE_COUNT(queue_pumped, pumped, unsigned long long, PyLong_FromUnsignedLongLong)
QUEUE_COUNT(queue_held, used, size_t, PyLong_FromSize_t)
QUEUE_COUNT(queue_full, full, unsigned long long, PyLong_FromUnsignedLongLong)

static PyMethodDef queue_methods[] = {
    {"pump", (PyCFunction)queue_pump, METH_NOARGS,
     "Read the socket into the ring while the reader does not, until stop (run it in a thread of its own; it "
     "never holds the interpreter lock)."},
    {"take", (PyCFunction)queue_take, METH_VARARGS, "take(out, most) -> (datagrams, bytes in out, special, errors)."},
    {"stop", (PyCFunction)queue_stop, METH_NOARGS,
     "The pump ends; take reads what is left without waiting, then gives -1 (shut the socket down after this)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef queue_getset[] = {
    {"dropped", (getter)queue_dropped, NULL, "datagrams the ring had no room for", NULL},
    {"pumped", (getter)queue_pumped, NULL, "datagrams the pump read (while the reader did not)", NULL},
    {"held", (getter)queue_held, NULL, "bytes held in the ring", NULL},
    {"full", (getter)queue_full, NULL, "times the pump found the ring without room (the socket left to fill)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject QueueType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "integrations.datadog._dsdfast.Queue",
    .tp_basicsize = sizeof(Queue),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Queue(fd, size, batch, capacity): a reader's socket, emptied into a bounded ring while the reader "
              "does not read it.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)queue_init,
    .tp_dealloc = (destructor)queue_dealloc,
    .tp_methods = queue_methods,
    .tp_getset = queue_getset,
};

/* ------------------------------------------------------------------------------------------------
 * sort_values(values[, weights]) -> (sorted values, sorted weights or None, cumulative weights or None)
 * A histogram's or timer's values (array('d')) in ascending order, ties in their order of arrival
 * (as Python's stable sorted() leaves them: -0.0 and 0.0 keep theirs), with their weights and the
 * running sum of the weights in that order; each as bytes of doubles. The sort runs without the
 * interpreter lock: the flush of an interval with hundreds of thousands of timer values held it for
 * 150-250 ms in Python, long enough for the socket to overflow while the reader waited for it.
 */
typedef struct {
    double v, w;
    size_t i;
} Item;

static int item_cmp(const void *a, const void *b) {
    const Item *x = a, *y = b;
    if (x->v < y->v) return -1;
    if (x->v > y->v) return 1;
    return x->i < y->i ? -1 : (x->i > y->i);
}

static PyObject *sort_values(PyObject *self, PyObject *args) {
    Py_buffer vb, wb;
    PyObject *wo = Py_None, *sv = NULL, *sw = NULL, *cw = NULL, *res;
    Py_ssize_t n, k;
    Item *items;
    int weighted;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*|O", &vb, &wo)) return NULL;
    weighted = wo != Py_None;
    if (weighted && PyObject_GetBuffer(wo, &wb, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&vb);
        return NULL;
    }
    n = vb.len / (Py_ssize_t)sizeof(double);
    if (vb.len % (Py_ssize_t)sizeof(double) || (weighted && wb.len != vb.len)) {
        PyErr_SetString(PyExc_ValueError, "sort_values: arrays of doubles of the same length expected");
        goto fail_buffers;
    }
    items = PyMem_RawMalloc(sizeof(Item) * (size_t)(n ? n : 1));
    if (items == NULL) {
        PyErr_NoMemory();
        goto fail_buffers;
    }
    sv = PyBytes_FromStringAndSize(NULL, n * (Py_ssize_t)sizeof(double));
    if (weighted) {
        sw = PyBytes_FromStringAndSize(NULL, n * (Py_ssize_t)sizeof(double));
        cw = PyBytes_FromStringAndSize(NULL, n * (Py_ssize_t)sizeof(double));
    }
    if (sv == NULL || (weighted && (sw == NULL || cw == NULL))) {
        PyMem_RawFree(items);
        goto fail_buffers;
    }
    {
        const double *v = vb.buf, *w = weighted ? wb.buf : NULL;
        double *out_v = (double *)PyBytes_AS_STRING(sv);
        double *out_w = weighted ? (double *)PyBytes_AS_STRING(sw) : NULL;
        double *out_c = weighted ? (double *)PyBytes_AS_STRING(cw) : NULL;
        Py_BEGIN_ALLOW_THREADS
        for (k = 0; k < n; k++) {
            items[k].v = v[k];
            items[k].w = w ? w[k] : 1.0;
            items[k].i = (size_t)k;
        }
        qsort(items, (size_t)n, sizeof(Item), item_cmp);
        {
            double run = 0.0;
            for (k = 0; k < n; k++) {
                out_v[k] = items[k].v;
                if (out_w != NULL) {
                    out_w[k] = items[k].w;
                    run += items[k].w;
                    out_c[k] = run;
                }
            }
        }
        Py_END_ALLOW_THREADS
    }
    PyMem_RawFree(items);
    PyBuffer_Release(&vb);
    if (weighted) PyBuffer_Release(&wb);
    if (!weighted) {
        res = Py_BuildValue("NOO", sv, Py_None, Py_None);
    } else {
        res = Py_BuildValue("NNN", sv, sw, cw);
    }
    return res;
fail_buffers:
    Py_XDECREF(sv);
    Py_XDECREF(sw);
    Py_XDECREF(cw);
    PyBuffer_Release(&vb);
    if (weighted) PyBuffer_Release(&wb);
    return NULL;
}

static PyMethodDef methods[] = {
    {"feed", feed, METH_VARARGS, "Aggregate the lines of remembered contexts (see the module's header)."},
    {"sort_values", sort_values, METH_VARARGS,
     "sort_values(values[, weights]) -> (sorted values, sorted weights, running weights), as bytes of doubles."},
    {"isascii", isascii_, METH_VARARGS, "Whether a buffer holds ASCII bytes only."},
    {"recv", recv_, METH_VARARGS, "One recvmmsg(2) batch, copied newline-separated (see the module's header)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "integrations.datadog._dsdfast",
                                    "The DogStatsD reader's hot loop in C.", -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__dsdfast(void) {
#define INTERN(var, text) if ((var = PyUnicode_InternFromString(text)) == NULL) return NULL
    INTERN(s_values, "values");
    INTERN(s_weights, "weights");
    INTERN(s_count, "count");
    INTERN(s_append, "append");
    INTERN(s_pos, "pos");
    INTERN(s_neg, "neg");
    INTERN(s_zero, "zero");
    INTERN(s_total, "total");
    INTERN(s_least, "least");
    INTERN(s_most, "most");
#undef INTERN
    {
        PyObject *m;
        if (PyType_Ready(&QueueType) < 0) return NULL;
        m = PyModule_Create(&module);
        if (m == NULL) return NULL;
        Py_INCREF(&QueueType);
        if (PyModule_AddObject(m, "Queue", (PyObject *)&QueueType) < 0) {
            Py_DECREF(&QueueType);
            Py_DECREF(m);
            return NULL;
        }
        return m;
    }
}
