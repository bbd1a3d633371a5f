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

#define MAX_KEY 512 /* LineCache's _CACHED_LINE: longer context texts are never remembered */
#define MAX_BATCH 256

enum { K_COUNT = 0, K_GAUGE = 1, K_HIST = 2, K_DIST = 3, K_SET = 4 };

static PyObject *s_values, *s_weights, *s_count, *s_append, *s_pos, *s_neg, *s_zero, *s_total, *s_least,
    *s_most;

/* The plain decimal form; 1 if s[0:n] is one. */
static int plain_number(const char *s, Py_ssize_t n) {
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

/* Reads the double of s[0:n] (plain_number checked); 0 on success. */
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
            if (!plain_number(line + i + 1, j - i - 1) || read_double(line + i + 1, j - i - 1, &v) < 0) break;
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
    flags = MSG_TRUNC | (block ? MSG_WAITFORONE : MSG_DONTWAIT);
    Py_BEGIN_ALLOW_THREADS
    got = recvmmsg(fd, mm, (unsigned)batch, flags, NULL);
    if (got < 0) err = errno;
    Py_END_ALLOW_THREADS
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
        int blank = n > 0 && n <= size;
        Py_ssize_t b;
        for (b = 0; blank && b < n; b++)
            if (d[b] != '\n' && d[b] != '\r') blank = 0;
        if (n == 0 || n > size || blank) {
            Py_ssize_t shown = n > size ? size : n;
            PyObject *item = Py_BuildValue("nny#", (Py_ssize_t)k, n, d, shown);
            if (item == NULL || PyList_Append(special, item) < 0) { Py_XDECREF(item); goto fail; }
            Py_DECREF(item);
            continue;
        }
        memcpy((char *)out.buf + off, d, n);
        off += n;
        if (d[n - 1] != '\n') ((char *)out.buf)[off++] = '\n';
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

static PyMethodDef methods[] = {
    {"feed", feed, METH_VARARGS, "Aggregate the lines of remembered contexts (see the module's header)."},
    {"isascii", isascii_, METH_VARARGS, "Whether a buffer holds ASCII bytes only."},
    {"recv", recv_, METH_VARARGS, "One recvmmsg(2) batch, copied newline-separated (see the module's header)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "integrations.datadog._dsdfast",
                                    "The DogStatsD reader's hot loop in C.", -1, methods};

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
    return PyModule_Create(&module);
}
