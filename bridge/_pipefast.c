/*
 * bridge._pipefast: the pipeline's per-series loops of a collection and a scrape, in C.
 *
 * Why hand-written: benchmarks/bench_render.py's end-to-end figure (a plugin's 100k series, fresh
 * values every scrape, from the plugin's data to the bytes of GET /metrics) put monbridge at
 * 3.1-3.8x less CPU than prometheus_client's own server against a goal of 5x. Of its ~200 ms a
 * scrape, the plugin's own Metric objects took ~80 ms; the rest was three loops over every series
 * that do nothing but move references and write text, each already written as tight as Python
 * allows: storing a report in place (~44 ms), the snapshot's columns (~9 ms) and the plain
 * samples' text (~43 ms). This module does exactly those loops and nothing else:
 *
 *   setup(metric_type, series_type, pow5_inv, pow5)
 *       reads where the slots of bridge.api.Metric and bridge.pipeline.Series are kept (their
 *       member descriptors' offsets); the loops below read and write those slots directly, and
 *       take only objects of exactly those types (anything else: the Python path). The last two
 *       are the tables of the float formatter (below).
 *
 *   store_run(refs, run, kind, unit, plain, source, now) -> (stored, changed)
 *       bridge.pipeline._store_run_py: for each series refs[i] and metric run[i], while the
 *       metric's attributes (a dict) give the series' first attribute order, its kind is `kind`,
 *       its unit `unit`, the series' source `source` and (with `plain`) its value not a bool, the
 *       series takes the metric's value, start and time (the metric's timestamp, or `now`).
 *       Returns how many were stored (the first that could not be, or len) and whether a value
 *       changed before it.
 *
 *   runs(metrics) -> [(name, metrics of that name in a row), ...] | None
 *       a list of Metrics cut where the name changes (itertools.groupby by name, as lists).
 *
 *   columns(refs) -> (values, starts, times) | None
 *       the three tuples of a family snapshot (bridge.pipeline.FamilySnapshot).
 *
 *   plain_lines(refs, values) -> str | None
 *       the sample lines of a plain family (bridge.exposition._render_family): each series' kept
 *       ASCII text "name{labels} " (Series.prom), its value as repr() writes it (a float's digits
 *       found by Ryu's method rather than Python's dtoa: 30-40 ns against ~290), a newline. None
 *       when a series has no kept ASCII text or a value is not an int or a finite float: the
 *       Python path writes those.
 *
 * The Python twins stay and give the same results; tests/unit/test_pipefast.py runs both on the
 * same data (and fails in CI, CI=true, when this module is not built).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "_fastcommon.h"

static PyTypeObject *metric_type, *series_type;
/* Metric slots */
static Py_ssize_t m_name, m_kind, m_value, m_unit, m_attributes, m_timestamp_ns, m_start_time_ns;
/* Series slots */
static Py_ssize_t s_key, s_value, s_start_ns, s_time_ns, s_source, s_prom, s_aliases;

static PyObject *ryu_setup(PyObject *inv, PyObject *fwd);

#define SLOT(o, off) (*(PyObject **)((char *)(o) + (off)))

static void set_slot(PyObject *o, Py_ssize_t off, PyObject *v) {
    PyObject *old = SLOT(o, off);
    Py_INCREF(v);
    SLOT(o, off) = v;
    Py_XDECREF(old);
}

static int offset_of(PyTypeObject *t, const char *name, Py_ssize_t *out) {
    PyObject *d = PyDict_GetItemString(t->tp_dict, name); /* borrowed */
    if (d == NULL || !Py_IS_TYPE(d, &PyMemberDescr_Type)) {
        PyErr_Format(PyExc_TypeError, "%s.%s is not a slot", t->tp_name, name);
        return -1;
    }
    PyMemberDef *def = ((PyMemberDescrObject *)d)->d_member;
    if (def->type != T_OBJECT_EX || def->offset <= 0) {
        PyErr_Format(PyExc_TypeError, "%s.%s is not an object slot", t->tp_name, name);
        return -1;
    }
    *out = def->offset;
    return 0;
}

static PyObject *setup(PyObject *self, PyObject *args) {
    PyTypeObject *mt, *st;
    PyObject *inv, *fwd;
    if (!PyArg_ParseTuple(args, "O!O!OO", &PyType_Type, &mt, &PyType_Type, &st, &inv, &fwd))
        return NULL;
    if (offset_of(mt, "name", &m_name) || offset_of(mt, "kind", &m_kind) || offset_of(mt, "value", &m_value) || offset_of(mt, "unit", &m_unit) ||
        offset_of(mt, "attributes", &m_attributes) || offset_of(mt, "timestamp_ns", &m_timestamp_ns) ||
        offset_of(mt, "start_time_ns", &m_start_time_ns) || offset_of(st, "key", &s_key) ||
        offset_of(st, "value", &s_value) || offset_of(st, "start_ns", &s_start_ns) ||
        offset_of(st, "time_ns", &s_time_ns) || offset_of(st, "source", &s_source) ||
        offset_of(st, "prom", &s_prom) || offset_of(st, "aliases", &s_aliases))
        return NULL;
    PyObject *r = ryu_setup(inv, fwd);
    if (r == NULL)
        return NULL;
    Py_DECREF(r);
    Py_XDECREF(metric_type);
    Py_XDECREF(series_type);
    Py_INCREF(mt);
    Py_INCREF(st);
    metric_type = mt;
    series_type = st;
    Py_RETURN_NONE;
}

#define READY_OR_RAISE()                                                                     \
    if (metric_type == NULL) {                                                               \
        PyErr_SetString(PyExc_RuntimeError, "bridge._pipefast.setup() was not called");      \
        return NULL;                                                                         \
    }

/* 1 when dict `a`'s items, in order, equal the pairs of tuple `want` (as
 * `(tuple(a.items()) if a else ()) != want` is false in Python); 0 when not; -1 on error;
 * 2 when this cannot be told here (a pair not held as an exact 2-tuple). */
static int items_equal(PyObject *a, PyObject *want) {
    Py_ssize_t n = PyDict_GET_SIZE(a);
    if (!PyTuple_CheckExact(want))
        return 2;
    if (PyTuple_GET_SIZE(want) != n)
        return 0;
    Py_ssize_t pos = 0, j = 0;
    PyObject *k, *v;
    while (PyDict_Next(a, &pos, &k, &v)) {
        PyObject *w = PyTuple_GET_ITEM(want, j++);
        if (!PyTuple_CheckExact(w) || PyTuple_GET_SIZE(w) != 2)
            return 2;
        int r = PyObject_RichCompareBool(k, PyTuple_GET_ITEM(w, 0), Py_EQ);
        if (r <= 0)
            return r;
        r = PyObject_RichCompareBool(v, PyTuple_GET_ITEM(w, 1), Py_EQ);
        if (r <= 0)
            return r;
    }
    return 1;
}

static PyObject *store_run(PyObject *self, PyObject *args) {
    PyObject *refs, *run, *kind, *unit, *source, *now;
    int plain;
    if (!PyArg_ParseTuple(args, "O!O!OUpUO!", &PyList_Type, &refs, &PyList_Type, &run, &kind, &unit, &plain,
                          &source, &PyLong_Type, &now))
        return NULL;
    READY_OR_RAISE();
    Py_ssize_t n = PyList_GET_SIZE(refs), i;
    if (PyList_GET_SIZE(run) < n)
        n = PyList_GET_SIZE(run);
    int changed = 0;
    for (i = 0; i < n; i++) {
        PyObject *s = PyList_GET_ITEM(refs, i), *m = PyList_GET_ITEM(run, i);
        if (!Py_IS_TYPE(s, series_type) || !Py_IS_TYPE(m, metric_type))
            break;
        PyObject *aliases = SLOT(s, s_aliases), *key = SLOT(s, s_key), *a = SLOT(m, m_attributes);
        PyObject *mkind = SLOT(m, m_kind), *munit = SLOT(m, m_unit), *ssource = SLOT(s, s_source);
        PyObject *v = SLOT(m, m_value), *start = SLOT(m, m_start_time_ns), *ts = SLOT(m, m_timestamp_ns);
        PyObject *old = SLOT(s, s_value);
        if (aliases == NULL || key == NULL || a == NULL || mkind == NULL || munit == NULL || ssource == NULL ||
            v == NULL || start == NULL || ts == NULL || old == NULL || !PyTuple_CheckExact(aliases))
            break;
        PyObject *want = PyTuple_GET_SIZE(aliases) ? PyTuple_GET_ITEM(aliases, 0) : key;
        if (!PyDict_CheckExact(a))
            break;
        int r = items_equal(a, want);
        if (r < 0)
            return NULL;
        if (r != 1 || mkind != kind || !PyUnicode_CheckExact(munit) || !PyUnicode_CheckExact(ssource))
            break;
        if ((r = PyUnicode_Compare(munit, unit)) != 0 || (r = PyUnicode_Compare(ssource, source)) != 0) {
            if (r == -1 && PyErr_Occurred())
                return NULL;
            break;
        }
        if (plain && PyBool_Check(v))
            break;
        if (!changed) {
            if (Py_TYPE(old) != Py_TYPE(v)) {
                changed = 1;
            } else {
                PyObject *ne = PyObject_RichCompare(old, v, Py_NE);
                if (ne == NULL)
                    return NULL;
                int t = PyObject_IsTrue(ne);
                Py_DECREF(ne);
                if (t < 0)
                    return NULL;
                changed = t;
            }
        }
        int has_ts = PyObject_IsTrue(ts);
        if (has_ts < 0)
            return NULL;
        set_slot(s, s_value, v);
        set_slot(s, s_start_ns, start);
        set_slot(s, s_time_ns, has_ts ? ts : now);
    }
    return Py_BuildValue("(nO)", i, changed ? Py_True : Py_False);
}

static PyObject *runs(PyObject *self, PyObject *arg) {
    READY_OR_RAISE();
    if (!PyList_CheckExact(arg)) {
        PyErr_SetString(PyExc_TypeError, "runs() takes a list of metrics");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(arg);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *m = PyList_GET_ITEM(arg, i);
        if (!Py_IS_TYPE(m, metric_type) || SLOT(m, m_name) == NULL || !PyUnicode_CheckExact(SLOT(m, m_name)))
            Py_RETURN_NONE;
    }
    PyObject *out = PyList_New(0), *run = NULL, *name = NULL;
    if (out == NULL)
        return NULL;
    Py_ssize_t start = 0;
    for (Py_ssize_t i = 0; i <= n; i++) {
        PyObject *here = i < n ? SLOT(PyList_GET_ITEM(arg, i), m_name) : NULL;
        if (i > 0 && here != NULL && (here == name || PyUnicode_Compare(here, name) == 0))
            continue;
        if (PyErr_Occurred())
            goto fail;
        if (i > 0) {
            run = PyList_GetSlice(arg, start, i);
            if (run == NULL)
                goto fail;
            PyObject *pair = PyTuple_Pack(2, name, run);
            Py_CLEAR(run);
            if (pair == NULL || PyList_Append(out, pair) < 0) {
                Py_XDECREF(pair);
                goto fail;
            }
            Py_DECREF(pair);
        }
        name = here;
        start = i;
    }
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}

static PyObject *columns(PyObject *self, PyObject *arg) {
    READY_OR_RAISE();
    if (!PyTuple_CheckExact(arg) && !PyList_CheckExact(arg)) {
        PyErr_SetString(PyExc_TypeError, "columns() takes a tuple or list of series");
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(arg);
    PyObject **items = PySequence_Fast_ITEMS(arg);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *s = items[i];
        if (!Py_IS_TYPE(s, series_type) || SLOT(s, s_value) == NULL || SLOT(s, s_start_ns) == NULL ||
            SLOT(s, s_time_ns) == NULL)
            Py_RETURN_NONE;
    }
    PyObject *values = PyTuple_New(n), *starts = PyTuple_New(n), *times = PyTuple_New(n);
    if (values == NULL || starts == NULL || times == NULL) {
        Py_XDECREF(values);
        Py_XDECREF(starts);
        Py_XDECREF(times);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *s = items[i], *o;
        o = SLOT(s, s_value);
        Py_INCREF(o);
        PyTuple_SET_ITEM(values, i, o);
        o = SLOT(s, s_start_ns);
        Py_INCREF(o);
        PyTuple_SET_ITEM(starts, i, o);
        o = SLOT(s, s_time_ns);
        Py_INCREF(o);
        PyTuple_SET_ITEM(times, i, o);
    }
    PyObject *out = PyTuple_Pack(3, values, starts, times);
    Py_DECREF(values);
    Py_DECREF(starts);
    Py_DECREF(times);
    return out;
}

/* ------------------------------------------------------------------ shortest float text
 *
 * repr(float) (Python's dtoa in its shortest mode) costs ~290 ns a value on the benchmark's
 * data, most of a plain family's render. The shortest digits that read back as the same double,
 * the closest to it where several are as short, are found here with Ryu's method (Ulf Adams,
 * "Ryu: fast float-to-string conversion", PLDI 2018): two 128-bit products by a power of 5
 * and the digits removed while the interval of the double still holds the number. The tables
 * of powers of 5 are computed exactly by Python (bridge.pipeline._ryu_tables) and passed to
 * setup(). The text is then laid out as repr lays it out (format_float_short, mode 'r'). The
 * differential tests compare it with repr() on edge cases and random doubles. */
#define POW5_INV_BITCOUNT 125
#define POW5_BITCOUNT 125
#define POW5_INV_TABLE 342
#define POW5_TABLE 326
static uint64_t pow5_inv[POW5_INV_TABLE][2], pow5[POW5_TABLE][2];
static int ryu_ready;

static inline uint32_t pow5bits(int32_t e) { return (uint32_t)(((e * 1217359) >> 19) + 1); }
static inline uint32_t log10pow2(int32_t e) { return (uint32_t)((e * 78913) >> 18); }
static inline uint32_t log10pow5(int32_t e) { return (uint32_t)((e * 732923) >> 20); }

static inline uint32_t pow5factor(uint64_t v) {
    uint32_t count = 0;
    for (;;) {
        uint64_t q = v / 5;
        if (v - 5 * q != 0)
            break;
        v = q;
        ++count;
    }
    return count;
}

static inline int multiple_of_pow5(uint64_t v, uint32_t p) { return pow5factor(v) >= p; }
static inline int multiple_of_pow2(uint64_t v, uint32_t p) { return (v & ((1ull << p) - 1)) == 0; }

static inline uint64_t mul_shift(uint64_t m, const uint64_t *mul, int32_t j) {
    __uint128_t b0 = (__uint128_t)m * mul[0], b2 = (__uint128_t)m * mul[1];
    return (uint64_t)(((b0 >> 64) + b2) >> (j - 64));
}

/* One digit off the three bounds, the one off vr kept in *last (and whether those before were
 * all zeros in *vr_tz). */
static inline void drop_digit(uint64_t *vr, uint64_t *vp, uint64_t *vm, uint8_t *last, int *vr_tz) {
    const uint64_t vr10 = *vr / 10;
    *vr_tz &= *last == 0;
    *last = (uint8_t)(*vr - 10 * vr10);
    *vr = vr10;
    *vp /= 10;
    *vm /= 10;
}

/* The shortest decimal (digits, exponent: value = digits * 10^exponent) of a finite, nonzero,
 * positive double given by its IEEE fields. */
static void ryu(uint64_t ieee_m, uint32_t ieee_e, uint64_t *out_digits, int32_t *out_exp) {
    int32_t e2;
    uint64_t m2;
    if (ieee_e == 0) {
        e2 = 1 - 1023 - 52 - 2;
        m2 = ieee_m;
    } else {
        e2 = (int32_t)ieee_e - 1023 - 52 - 2;
        m2 = (1ull << 52) | ieee_m;
    }
    const int even = (m2 & 1) == 0, accept = even;
    const uint64_t mv = 4 * m2;
    const uint32_t mm_shift = ieee_m != 0 || ieee_e <= 1;
    uint64_t vr, vp, vm;
    int32_t e10;
    int vm_tz = 0, vr_tz = 0;
    if (e2 >= 0) {
        const uint32_t q = log10pow2(e2) - (e2 > 3);
        e10 = (int32_t)q;
        const int32_t k = POW5_INV_BITCOUNT + (int32_t)pow5bits((int32_t)q) - 1;
        const int32_t i = -e2 + (int32_t)q + k;
        vr = mul_shift(4 * m2, pow5_inv[q], i);
        vp = mul_shift(4 * m2 + 2, pow5_inv[q], i);
        vm = mul_shift(4 * m2 - 1 - mm_shift, pow5_inv[q], i);
        if (q <= 21) {
            if (mv % 5 == 0)
                vr_tz = multiple_of_pow5(mv, q);
            else if (accept)
                vm_tz = multiple_of_pow5(mv - 1 - mm_shift, q);
            else
                vp -= multiple_of_pow5(mv + 2, q);
        }
    } else {
        const uint32_t q = log10pow5(-e2) - (-e2 > 1);
        e10 = (int32_t)q + e2;
        const int32_t i = -e2 - (int32_t)q;
        const int32_t k = (int32_t)pow5bits(i) - POW5_BITCOUNT;
        const int32_t j = (int32_t)q - k;
        vr = mul_shift(4 * m2, pow5[i], j);
        vp = mul_shift(4 * m2 + 2, pow5[i], j);
        vm = mul_shift(4 * m2 - 1 - mm_shift, pow5[i], j);
        if (q <= 1) {
            vr_tz = 1;
            if (accept)
                vm_tz = mm_shift == 1;
            else
                --vp;
        } else if (q < 63) {
            vr_tz = multiple_of_pow2(mv, q);
        }
    }
    int32_t removed = 0;
    uint8_t last = 0;
    uint64_t output;
    if (vm_tz || vr_tz) {
        for (;;) {
            const uint64_t vm10 = vm / 10;
            if (vp / 10 <= vm10)
                break;
            vm_tz &= vm - 10 * vm10 == 0;
            drop_digit(&vr, &vp, &vm, &last, &vr_tz);
            ++removed;
        }
        if (vm_tz) {
            while (vm % 10 == 0) {
                drop_digit(&vr, &vp, &vm, &last, &vr_tz);
                ++removed;
            }
        }
        if (vr_tz && last == 5 && vr % 2 == 0)
            last = 4; /* exactly halfway: round to even */
        output = vr + ((vr == vm && (!accept || !vm_tz)) || last >= 5);
    } else {
        int round_up = 0;
        const uint64_t vp100 = vp / 100, vm100 = vm / 100;
        if (vp100 > vm100) {
            const uint64_t vr100 = vr / 100;
            const uint32_t vr_mod = (uint32_t)(vr - 100 * vr100);
            round_up = vr_mod >= 50;
            vr = vr100;
            vp = vp100;
            vm = vm100;
            removed += 2;
        }
        for (;;) {
            const uint64_t vp10 = vp / 10, vm10 = vm / 10;
            if (vp10 <= vm10)
                break;
            const uint64_t vr10 = vr / 10;
            const uint32_t vr_mod = (uint32_t)(vr - 10 * vr10);
            round_up = vr_mod >= 5;
            vr = vr10;
            vp = vp10;
            vm = vm10;
            ++removed;
        }
        output = vr + (vr == vm || round_up);
    }
    int32_t exp = e10 + removed;
    while (output % 10 == 0) { /* digits carried to a power of 10: the trailing zeros are the exponent's */
        output /= 10;
        ++exp;
    }
    *out_digits = output;
    *out_exp = exp;
}

/* Writes repr(x) of a finite double at p (at most 25 bytes); returns its length. */
static int float_repr(double x, char *p) {
    uint64_t bits;
    memcpy(&bits, &x, 8);
    char *start = p;
    if (bits >> 63)
        *p++ = '-';
    const uint64_t ieee_m = bits & ((1ull << 52) - 1);
    const uint32_t ieee_e = (uint32_t)((bits >> 52) & 0x7ff);
    if (ieee_m == 0 && ieee_e == 0) {
        memcpy(p, "0.0", 3);
        return (int)(p + 3 - start);
    }
    uint64_t digits;
    int32_t exp;
    ryu(ieee_m, ieee_e, &digits, &exp);
    char d[20];
    int n = 0;
    while (digits) {
        d[n++] = (char)('0' + digits % 10);
        digits /= 10;
    }
    /* d holds the digits lowest first; decpt: where the point goes after the first digit's place */
    const int decpt = n + exp;
    if (decpt <= -4 || decpt > 16) {
        *p++ = d[n - 1];
        if (n > 1) {
            *p++ = '.';
            for (int i = n - 2; i >= 0; i--)
                *p++ = d[i];
        }
        int e = decpt - 1;
        *p++ = 'e';
        *p++ = e < 0 ? '-' : '+';
        if (e < 0)
            e = -e;
        if (e >= 100) {
            *p++ = (char)('0' + e / 100);
            e %= 100;
            *p++ = (char)('0' + e / 10);
        } else {
            *p++ = (char)('0' + e / 10);
        }
        *p++ = (char)('0' + e % 10);
    } else if (decpt <= 0) {
        *p++ = '0';
        *p++ = '.';
        for (int i = 0; i < -decpt; i++)
            *p++ = '0';
        for (int i = n - 1; i >= 0; i--)
            *p++ = d[i];
    } else if (decpt >= n) {
        for (int i = n - 1; i >= 0; i--)
            *p++ = d[i];
        for (int i = 0; i < decpt - n; i++)
            *p++ = '0';
        *p++ = '.';
        *p++ = '0';
    } else {
        for (int i = n - 1; i >= 0; i--) {
            *p++ = d[i];
            if (i == n - decpt)
                *p++ = '.';
        }
    }
    return (int)(p - start);
}

static PyObject *ryu_setup(PyObject *inv, PyObject *fwd) {
    Py_buffer a, b;
    if (PyObject_GetBuffer(inv, &a, PyBUF_SIMPLE) < 0)
        return NULL;
    if (PyObject_GetBuffer(fwd, &b, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&a);
        return NULL;
    }
    if (a.len != (Py_ssize_t)sizeof(pow5_inv) || b.len != (Py_ssize_t)sizeof(pow5)) {
        PyErr_SetString(PyExc_ValueError, "the tables of powers of 5 have the wrong size");
        PyBuffer_Release(&a);
        PyBuffer_Release(&b);
        return NULL;
    }
    memcpy(pow5_inv, a.buf, sizeof(pow5_inv));
    memcpy(pow5, b.buf, sizeof(pow5));
    PyBuffer_Release(&a);
    PyBuffer_Release(&b);
    ryu_ready = 1;
    Py_RETURN_NONE;
}

static PyObject *py_float_repr(PyObject *self, PyObject *arg) {
    double x = PyFloat_AsDouble(arg);
    if (x == -1.0 && PyErr_Occurred())
        return NULL;
    if (!isfinite(x) || !ryu_ready) {
        PyErr_SetString(PyExc_ValueError, "float_repr() takes a finite float (after setup())");
        return NULL;
    }
    char t[32];
    int n = float_repr(x, t);
    return PyUnicode_FromStringAndSize(t, n);
}

static PyObject *plain_lines(PyObject *self, PyObject *args) {
    PyObject *refs, *values;
    if (!PyArg_ParseTuple(args, "OO", &refs, &values))
        return NULL;
    READY_OR_RAISE();
    if ((!PyTuple_CheckExact(refs) && !PyList_CheckExact(refs)) ||
        (!PyTuple_CheckExact(values) && !PyList_CheckExact(values))) {
        PyErr_SetString(PyExc_TypeError, "plain_lines() takes tuples or lists");
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(refs);
    if (PySequence_Fast_GET_SIZE(values) != n) {
        PyErr_SetString(PyExc_ValueError, "plain_lines(): as many values as series");
        return NULL;
    }
    PyObject **rs = PySequence_Fast_ITEMS(refs), **vs = PySequence_Fast_ITEMS(values);
    /* First pass: every series has a kept ASCII text and every value is plain; the room needed. */
    Py_ssize_t need = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *s = rs[i], *v = vs[i];
        if (!Py_IS_TYPE(s, series_type))
            Py_RETURN_NONE;
        PyObject *p = SLOT(s, s_prom);
        if (p == NULL || !PyUnicode_CheckExact(p) || !PyUnicode_IS_ASCII(p))
            Py_RETURN_NONE;
        if (PyFloat_CheckExact(v)) {
            if (!isfinite(PyFloat_AS_DOUBLE(v)))
                Py_RETURN_NONE;
        } else if (!PyLong_CheckExact(v)) {
            Py_RETURN_NONE;
        }
        need += PyUnicode_GET_LENGTH(p) + 32;
    }
    Buf b;
    buf_init(&b);
    if (buf_room(&b, need + 1) < 0)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *p = SLOT(rs[i], s_prom), *v = vs[i];
        Py_ssize_t pl = PyUnicode_GET_LENGTH(p);
        if (buf_room(&b, pl + 32) < 0)
            goto fail;
        memcpy(b.p + b.len, PyUnicode_1BYTE_DATA(p), pl);
        b.len += pl;
        if (PyFloat_CheckExact(v)) {
            b.len += float_repr(PyFloat_AS_DOUBLE(v), b.p + b.len); /* at most 25 of the 32 bytes */
        } else {
            int overflow = 0;
            long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
            if (x == -1 && PyErr_Occurred())
                goto fail;
            if (!overflow) {
                b.len += snprintf(b.p + b.len, 24, "%lld", x);
            } else {
                PyObject *r = PyObject_Repr(v);
                if (r == NULL)
                    goto fail;
                Py_ssize_t rl = PyUnicode_GET_LENGTH(r);
                if (!PyUnicode_IS_ASCII(r) || buf_room(&b, rl + 1) < 0) {
                    if (!PyErr_Occurred())
                        PyErr_SetString(PyExc_ValueError, "an int's text is not ASCII");
                    Py_DECREF(r);
                    goto fail;
                }
                memcpy(b.p + b.len, PyUnicode_1BYTE_DATA(r), rl);
                b.len += rl;
                Py_DECREF(r);
            }
        }
        b.p[b.len++] = '\n';
    }
    PyObject *out = PyUnicode_New(b.len, 127);
    if (out != NULL)
        memcpy(PyUnicode_1BYTE_DATA(out), b.p, b.len);
    buf_free(&b);
    return out;
fail:
    buf_free(&b);
    return NULL;
}

static PyMethodDef methods[] = {
    {"setup", setup, METH_VARARGS, "setup(metric_type, series_type): read the types' slot offsets."},
    {"store_run", store_run, METH_VARARGS,
     "store_run(refs, run, kind, unit, plain, source, now) -> (stored, changed)."},
    {"float_repr", py_float_repr, METH_O, "float_repr(x) -> repr(x) of a finite float (for the tests)."},
    {"runs", runs, METH_O, "runs(metrics) -> [(name, [metric, ...]), ...] (itertools.groupby by name) or None."},
    {"columns", columns, METH_O, "columns(refs) -> (values, starts, times) or None."},
    {"plain_lines", plain_lines, METH_VARARGS, "plain_lines(refs, values) -> str or None."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "bridge._pipefast",
                                    "The pipeline's per-series loops in C (see the source's header).", -1,
                                    methods};

PyMODINIT_FUNC PyInit__pipefast(void) { return PyModule_Create(&module); }
