/*
 * integrations.prometheus._promfast: the Prometheus bridge's work per new series, in C: the reading
 * of a scraped text body in the plain form, and the remote-write encoding of a scraped series' labels.
 *
 * Why hand-written: benchmarks/bench_scrape_scale.py measures the first round of a new target
 * (every series new) against Prometheus 2.42 in agent mode; its goal is at most 1.5x the agent's
 * CPU. In process, of that round's 1.7 s at 100k series, the first parse of the body cost 350 ms
 * (the Python parser's shortcut for a new series in the plain form: split, match, slices and
 * tuples per line, then the family of each sample; 64 ms in C), and the first encoding of the series' label
 * sets for remote write 140-190 ms (a dict look-up per pair, a check of each label name, a join;
 * 47 ms in C).
 * This module does that work and nothing else:
 *
 *   parse_text(text, ParsedFamily[, shape]) -> list[ParsedFamily] | None, or with shape true
 *   (list[ParsedFamily], bytes | None) | None
 *       text (a str) is read only when it is ASCII and ends with a newline, and each of its lines
 *       is one of:
 *         - blank, or spaces and tabs only (no entry);
 *         - a comment: "#" then what the lexer takes for no HELP or TYPE line (no entry),
 *           "# HELP <name><sep><text>" with no backslash in the text, or "# TYPE <name><sep><type>"
 *           with a type of the text format (the lexer's separators and its dropped first character);
 *         - a sample in the plain form "name value" or name{l1="v1",...,ln="vn"} value: the name
 *           and label names as the lexer reads them, at most MAX_LABELS labels (names unique, none
 *           __name__), no quote, backslash or newline in a value, one comma between pairs and no
 *           blank in the series part, the value a finite decimal
 *           [+-]?(digits[.digits]|.digits)([eE][+-]?digits)? after the line's last space (no
 *           timestamp).
 *       It returns the families (name, type, HELP, UNIT "", samples (name, labels, value, None,
 *       series text)) exactly as the Python parser makes them: the family of a sample is the one
 *       of the HELP or TYPE line in force when its name is that family's name plus a suffix its
 *       type allows, else a family named as the sample; a name seen again appends to the family
 *       first seen. At the first line it does not take (anything else, valid or not), it returns
 *       None and the Python parser reads the body: every error, and every line of another form,
 *       is the Python parser's, which names the line.
 *       With `shape`, also the body's shape for TextParser's template (_Template.from_shape): an
 *       int32 per line, -1 for a '#' line, else the index of the family its sample joined; None
 *       when a line is blank (or spaces and tabs only), which no template replays.
 *       Linear in the body: each byte is read a bounded number of times (the label-name
 *       uniqueness check is quadratic in at most MAX_LABELS names).
 *
 *   scraped_labels(name, key) -> bytes | None
 *       plugin._scraped_labels: the remote-write labels field of a series named `name` whose
 *       attribute key is `key` (a tuple of (name, value) pairs sorted by name, no __name__):
 *       __name__ in its sorted place, pairs with an empty value left out; None when a value is not
 *       a str or a label name is not one the Prometheus view keeps as it is
 *       ([a-zA-Z_][a-zA-Z0-9_]* with no "__"). Linear in the key.
 *
 * The Python twins (TextParser._parse, plugin._scraped_labels with remote_write.encode_named_labels)
 * stay and give the same results; tests/unit/test_textparse_fast.py, the fuzz target textparse_fast
 * and tests/unit/test_remote_write_encoding.py compare them on the same inputs.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "_fastcommon.h"

#define MAX_LABELS 32

static PyObject *s_counter, *s_gauge, *s_histogram, *s_summary, *s_untyped, *s_empty;

typedef struct {
    PyObject *name;    /* str */
    PyObject *type;    /* str, borrowed from the s_* constants */
    PyObject *help;    /* str (owned) */
    PyObject *samples; /* list (owned) */
} Fam;

typedef struct {
    Fam *v;
    Py_ssize_t n, cap;
    PyObject *index; /* name -> position in v */
} Fams;

static void fams_free(Fams *f) {
    for (Py_ssize_t i = 0; i < f->n; i++) {
        Py_XDECREF(f->v[i].name);
        Py_XDECREF(f->v[i].help);
        Py_XDECREF(f->v[i].samples);
    }
    PyMem_Free(f->v);
    Py_XDECREF(f->index);
}

/* The position of the family named `name` (a new one, untyped, when there is none); -1 on error. */
static Py_ssize_t fam_get(Fams *f, PyObject *name) {
    PyObject *at = PyDict_GetItemWithError(f->index, name);
    if (at != NULL) return PyLong_AsSsize_t(at);
    if (PyErr_Occurred()) return -1;
    if (f->n == f->cap) {
        Py_ssize_t cap = f->cap ? 2 * f->cap : 16;
        Fam *v = PyMem_Realloc(f->v, cap * sizeof(Fam));
        if (v == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        f->v = v;
        f->cap = cap;
    }
    PyObject *samples = PyList_New(0);
    if (samples == NULL) return -1;
    PyObject *pos = PyLong_FromSsize_t(f->n);
    if (pos == NULL || PyDict_SetItem(f->index, name, pos) < 0) {
        Py_XDECREF(pos);
        Py_DECREF(samples);
        return -1;
    }
    Py_DECREF(pos);
    Fam *fam = &f->v[f->n];
    Py_INCREF(name);
    Py_INCREF(s_empty);
    fam->name = name;
    fam->type = s_untyped;
    fam->help = s_empty;
    fam->samples = samples;
    return f->n++;
}

static inline int name_start(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
}
static inline int name_char(unsigned char c) { return name_start(c) || (c >= '0' && c <= '9'); }
static inline int label_start(unsigned char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
static inline int label_char(unsigned char c) { return label_start(c) || (c >= '0' && c <= '9'); }

/* The type of a TYPE line's text s[0:n] (borrowed), or NULL when it is none of the text format's. */
static PyObject *text_type(const char *s, Py_ssize_t n) {
    if (n == 7 && memcmp(s, "counter", 7) == 0) return s_counter;
    if (n == 5 && memcmp(s, "gauge", 5) == 0) return s_gauge;
    if (n == 9 && memcmp(s, "histogram", 9) == 0) return s_histogram;
    if (n == 7 && memcmp(s, "summary", 7) == 0) return s_summary;
    if (n == 7 && memcmp(s, "untyped", 7) == 0) return s_untyped;
    return NULL;
}

/* Whether a sample named `name` (len n) that starts with its context's family name (len base)
   stays in that family of type `type` (the suffixes textparse's _TEXT_SUFFIXES allows). */
static int suffix_allowed(PyObject *type, const char *suffix, Py_ssize_t n) {
    if (type == s_histogram) {
        return (n == 7 && memcmp(suffix, "_bucket", 7) == 0) || (n == 6 && memcmp(suffix, "_count", 6) == 0) ||
               (n == 4 && memcmp(suffix, "_sum", 4) == 0) || (n == 8 && memcmp(suffix, "_created", 8) == 0);
    }
    if (type == s_summary) {
        return n == 0 || (n == 6 && memcmp(suffix, "_count", 6) == 0) || (n == 4 && memcmp(suffix, "_sum", 4) == 0) ||
               (n == 8 && memcmp(suffix, "_created", 8) == 0);
    }
    return n == 0;
}

static PyObject *substring(const char *s, Py_ssize_t a, Py_ssize_t b) {
    return PyUnicode_FromKindAndData(PyUnicode_1BYTE_KIND, s + a, b - a);
}

static PyObject *interned(const char *s, Py_ssize_t a, Py_ssize_t b) {
    PyObject *o = substring(s, a, b);
    if (o != NULL) PyUnicode_InternInPlace(&o);
    return o;
}

#define BAIL goto bail
#define FAIL goto fail

static PyObject *parse_text(PyObject *self, PyObject *args) {
    PyObject *text, *family_type;
    int want_shape = 0;
    if (!PyArg_ParseTuple(args, "UO|p:parse_text", &text, &family_type, &want_shape)) return NULL;
    if (!PyUnicode_IS_ASCII(text)) Py_RETURN_NONE;
    const char *s = (const char *)PyUnicode_1BYTE_DATA(text);
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    if (n == 0 || s[n - 1] != '\n') Py_RETURN_NONE;

    Fams f = {NULL, 0, 0, PyDict_New()};
    if (f.index == NULL) return NULL;
    PyObject *result = NULL;
    /* The shape: per line, -1 for a '#' line, else the family of its sample (blank: none at all). */
    int32_t *shape = NULL;
    Py_ssize_t n_shape = 0, shape_cap = 0;
    int shaped = want_shape;
    /* The context: the family of the last HELP/TYPE line or new family (-1: none), and its type. */
    Py_ssize_t ctx = -1;
    PyObject *ctx_type = NULL;
    /* The previous sample's name (its text, its str, its family under the same context). */
    Py_ssize_t prev_a = 0, prev_len = -1, prev_fam = -1, prev_ctx = -2;
    PyObject *prev_ctx_type = NULL;
    PyObject *prev_name = NULL;
    /* The previous sample's label names (their texts and strs), reused while the same. */
    Py_ssize_t prev_la[MAX_LABELS], prev_ll[MAX_LABELS];
    PyObject *prev_lname[MAX_LABELS];
    int n_prev_labels = 0;
    Py_ssize_t la[MAX_LABELS], ll[MAX_LABELS], va[MAX_LABELS], vl[MAX_LABELS];

    Py_ssize_t ls = 0;
    while (ls < n) {
        const char *nl = memchr(s + ls, '\n', n - ls);
        Py_ssize_t le = nl - s; /* the body ends with a newline: there is one */
        Py_ssize_t next = le + 1;
        if (shaped && n_shape == shape_cap) {
            Py_ssize_t cap = shape_cap ? 2 * shape_cap : 1024;
            int32_t *grown = PyMem_Realloc(shape, cap * sizeof(int32_t));
            if (grown == NULL) {
                PyErr_NoMemory();
                FAIL;
            }
            shape = grown;
            shape_cap = cap;
        }
        if (le == ls) {
            shaped = 0; /* a blank line: no template replays it */
            ls = next;
            continue;
        }
        unsigned char c = (unsigned char)s[ls];
        if (c == ' ' || c == '\t') {
            Py_ssize_t i = ls;
            while (i < le && (s[i] == ' ' || s[i] == '\t')) i++;
            if (i < le) BAIL; /* whitespace before an entry: the Python parser's */
            shaped = 0;
            ls = next;
            continue;
        }
        if (c == '#') {
            if (shaped) shape[n_shape++] = -1;
            Py_ssize_t j = ls + 1;
            while (j < le && (s[j] == ' ' || s[j] == '\t')) j++;
            int help = j + 4 <= le && memcmp(s + j, "HELP", 4) == 0;
            int type = j + 4 <= le && memcmp(s + j, "TYPE", 4) == 0;
            if (j == ls + 1 || !(help || type) || j + 4 >= le || (s[j + 4] != ' ' && s[j + 4] != '\t')) {
                ls = next; /* a comment */
                continue;
            }
            Py_ssize_t k = j + 4;
            while (k < le && (s[k] == ' ' || s[k] == '\t')) k++;
            if (k >= le || !name_start((unsigned char)s[k])) BAIL; /* no metric name: an error */
            Py_ssize_t m = k + 1;
            while (m < le && name_char((unsigned char)s[m])) m++;
            Py_ssize_t ta = m, te = le, r;
            for (r = m; r < le && (s[r] == ' ' || s[r] == '\t'); r++);
            if (r == le) ta = te; /* blank text: "" */
            else ta = m + 1;      /* the lexer drops the text's first character, whatever it is */
            PyObject *typ = NULL;
            if (type) {
                typ = text_type(s + ta, te - ta);
                if (typ == NULL) BAIL; /* an invalid type: an error */
            } else if (memchr(s + ta, '\\', te - ta) != NULL) {
                BAIL; /* escapes in HELP: the Python parser's */
            }
            PyObject *name = substring(s, k, m);
            if (name == NULL) FAIL;
            Py_ssize_t at = fam_get(&f, name);
            Py_DECREF(name);
            if (at < 0) FAIL;
            Fam *fam = &f.v[at];
            if (type) {
                fam->type = typ;
            } else {
                PyObject *h = substring(s, ta, te);
                if (h == NULL) FAIL;
                Py_SETREF(fam->help, h);
            }
            ctx = at;
            ctx_type = fam->type;
            ls = next;
            continue;
        }
        if (!name_start(c)) BAIL;
        /* A sample: the series part is the text before the line's last space. */
        Py_ssize_t sp = le - 1;
        while (sp > ls && s[sp] != ' ') sp--;
        if (sp == ls) BAIL;
        Py_ssize_t i = ls + 1;
        while (i < sp && name_char((unsigned char)s[i])) i++;
        Py_ssize_t name_end = i;
        int nlabels = 0;
        if (i < sp) {
            if (s[i] != '{') BAIL;
            i++;
            for (;;) {
                if (nlabels == MAX_LABELS) BAIL;
                if (i >= sp || !label_start((unsigned char)s[i])) BAIL;
                la[nlabels] = i++;
                while (i < sp && label_char((unsigned char)s[i])) i++;
                ll[nlabels] = i - la[nlabels];
                if (i + 1 >= sp || s[i] != '=' || s[i + 1] != '"') BAIL;
                i += 2;
                va[nlabels] = i;
                while (i < sp && s[i] != '"' && s[i] != '\\') i++;
                if (i >= sp || s[i] != '"') BAIL;
                vl[nlabels] = i - va[nlabels];
                nlabels++;
                i++;
                if (i < sp && s[i] == ',') { i++; continue; }
                if (i < sp && s[i] == '}') { i++; break; }
                BAIL;
            }
            if (i != sp) BAIL;
        }
        const char *val = s + sp + 1;
        Py_ssize_t vlen = le - sp - 1;
        if (!plain_decimal(val, vlen)) BAIL;
        for (int a = 0; a < nlabels; a++) {
            if (ll[a] == 8 && memcmp(s + la[a], "__name__", 8) == 0) BAIL; /* an error: the Python parser's */
            for (int b = 0; b < a; b++)
                if (ll[a] == ll[b] && memcmp(s + la[a], s + la[b], ll[a]) == 0) BAIL; /* a repeated name */
        }
        char *end = NULL;
        double v = PyOS_string_to_double(val, &end, NULL);
        if (v == -1.0 && PyErr_Occurred()) {
            PyErr_Clear();
            BAIL;
        }
        if (end != val + vlen || !isfinite(v)) BAIL; /* out of range: an error */

        /* The name, and its family. */
        Py_ssize_t nlen = name_end - ls;
        int same_name = prev_len == nlen && memcmp(s + prev_a, s + ls, nlen) == 0;
        PyObject *name;
        if (same_name) {
            name = prev_name;
            Py_INCREF(name);
        } else {
            name = interned(s, ls, name_end);
            if (name == NULL) FAIL;
        }
        Py_ssize_t fam_at;
        if (same_name && prev_ctx == ctx && prev_ctx_type == ctx_type) {
            fam_at = prev_fam;
            ctx = prev_ctx;
        } else {
            Py_ssize_t in_ctx = -1;
            if (ctx >= 0) {
                PyObject *base = f.v[ctx].name;
                Py_ssize_t blen = PyUnicode_GET_LENGTH(base);
                if (blen <= nlen && memcmp(PyUnicode_1BYTE_DATA(base), s + ls, blen) == 0 &&
                    suffix_allowed(ctx_type, s + ls + blen, nlen - blen))
                    in_ctx = ctx;
            }
            Py_ssize_t before = ctx;
            PyObject *before_type = ctx_type;
            if (in_ctx >= 0) {
                fam_at = in_ctx;
            } else {
                fam_at = fam_get(&f, name);
                if (fam_at < 0) {
                    Py_DECREF(name);
                    FAIL;
                }
                ctx = fam_at;
                ctx_type = s_untyped;
            }
            if (!same_name) {
                Py_XSETREF(prev_name, name);
                Py_INCREF(name);
                prev_a = ls;
                prev_len = nlen;
            }
            /* Remembered under the context the sample came in, and what it leaves (the same, or the
               sample's own family as untyped: reading the next sample of this name again gives it). */
            if (in_ctx >= 0) {
                prev_ctx = before;
                prev_ctx_type = before_type;
            } else {
                prev_ctx = ctx;
                prev_ctx_type = ctx_type;
            }
            prev_fam = fam_at;
        }

        /* The labels. */
        PyObject *labels = PyTuple_New(nlabels);
        if (labels == NULL) {
            Py_DECREF(name);
            FAIL;
        }
        int reuse = nlabels == n_prev_labels;
        for (int a = 0; a < nlabels; a++) {
            PyObject *lname;
            if (reuse && prev_ll[a] == ll[a] && memcmp(s + prev_la[a], s + la[a], ll[a]) == 0) {
                lname = prev_lname[a];
                Py_INCREF(lname);
            } else {
                lname = interned(s, la[a], la[a] + ll[a]);
                if (lname == NULL) {
                    Py_DECREF(labels);
                    Py_DECREF(name);
                    FAIL;
                }
            }
            PyObject *lval = substring(s, va[a], va[a] + vl[a]);
            PyObject *pair = lval == NULL ? NULL : PyTuple_New(2);
            if (pair == NULL) {
                Py_XDECREF(lval);
                Py_DECREF(lname);
                Py_DECREF(labels);
                Py_DECREF(name);
                FAIL;
            }
            PyTuple_SET_ITEM(pair, 0, lname);
            PyTuple_SET_ITEM(pair, 1, lval);
            PyTuple_SET_ITEM(labels, a, pair);
        }
        for (int a = 0; a < n_prev_labels; a++) Py_DECREF(prev_lname[a]);
        for (int a = 0; a < nlabels; a++) {
            prev_lname[a] = PyTuple_GET_ITEM(PyTuple_GET_ITEM(labels, a), 0);
            Py_INCREF(prev_lname[a]);
            prev_la[a] = la[a];
            prev_ll[a] = ll[a];
        }
        n_prev_labels = nlabels;

        PyObject *key = nlabels ? substring(s, ls, sp) : (Py_INCREF(name), name);
        PyObject *value = key == NULL ? NULL : PyFloat_FromDouble(v);
        PyObject *sample = value == NULL ? NULL : PyTuple_New(5);
        if (sample == NULL) {
            Py_XDECREF(value);
            Py_XDECREF(key);
            Py_DECREF(labels);
            Py_DECREF(name);
            FAIL;
        }
        Py_INCREF(Py_None);
        PyTuple_SET_ITEM(sample, 0, name);
        PyTuple_SET_ITEM(sample, 1, labels);
        PyTuple_SET_ITEM(sample, 2, value);
        PyTuple_SET_ITEM(sample, 3, Py_None);
        PyTuple_SET_ITEM(sample, 4, key);
        int err = PyList_Append(f.v[fam_at].samples, sample);
        Py_DECREF(sample);
        if (err < 0) FAIL;
        if (shaped) shape[n_shape++] = (int32_t)fam_at;
        ls = next;
    }

    result = PyList_New(f.n);
    if (result == NULL) FAIL;
    for (Py_ssize_t k = 0; k < f.n; k++) {
        Fam *fam = &f.v[k];
        PyObject *argv[5] = {fam->name, fam->type, fam->help, s_empty, fam->samples};
        PyObject *pf = PyObject_Vectorcall(family_type, argv, 5, NULL);
        if (pf == NULL) {
            Py_CLEAR(result);
            FAIL;
        }
        PyList_SET_ITEM(result, k, pf);
    }
    if (want_shape) {
        PyObject *sh = shaped ? PyBytes_FromStringAndSize((const char *)shape, n_shape * (Py_ssize_t)sizeof(int32_t))
                              : (Py_INCREF(Py_None), Py_None);
        if (sh == NULL) {
            Py_CLEAR(result);
            FAIL;
        }
        Py_SETREF(result, PyTuple_Pack(2, result, sh));
        Py_DECREF(sh);
        if (result == NULL) FAIL;
    }
    goto done;
bail:
    result = Py_None;
    Py_INCREF(result);
    goto done;
fail:
    result = NULL;
done:
    PyMem_Free(shape);
    for (int a = 0; a < n_prev_labels; a++) Py_DECREF(prev_lname[a]);
    Py_XDECREF(prev_name);
    fams_free(&f);
    return result;
}

/* ------------------------------------------------------------------ scraped_labels */

static Py_ssize_t varint_len(size_t n) {
    Py_ssize_t k = 1;
    while (n >= 0x80) { n >>= 7; k++; }
    return k;
}

static char *put_varint(char *o, size_t n) {
    while (n >= 0x80) {
        *o++ = (char)((n & 0x7F) | 0x80);
        n >>= 7;
    }
    *o++ = (char)n;
    return o;
}

/* One Label {1: name, 2: value} as a `labels` entry (field 1) of a TimeSeries. */
static int put_label(Buf *b, const char *k, Py_ssize_t kl, const char *v, Py_ssize_t vl) {
    size_t inner = 1 + varint_len(kl) + kl + 1 + varint_len(vl) + vl;
    if (buf_room(b, 1 + varint_len(inner) + inner) < 0) return -1;
    char *o = b->p + b->len;
    *o++ = 0x0A;
    o = put_varint(o, inner);
    *o++ = 0x0A;
    o = put_varint(o, kl);
    memcpy(o, k, kl);
    o += kl;
    *o++ = 0x12;
    o = put_varint(o, vl);
    memcpy(o, v, vl);
    o += vl;
    b->len = o - b->p;
    return 0;
}

/* UTF-8 of a str: its own data when ASCII, else a new bytes object left in *hold (or an error). */
static const char *utf8_of(PyObject *s, Py_ssize_t *len, PyObject **hold) {
    *hold = NULL;
    if (PyUnicode_IS_ASCII(s)) {
        *len = PyUnicode_GET_LENGTH(s);
        return (const char *)PyUnicode_1BYTE_DATA(s);
    }
    *hold = PyUnicode_AsUTF8String(s);
    if (*hold == NULL) return NULL;
    *len = PyBytes_GET_SIZE(*hold);
    return PyBytes_AS_STRING(*hold);
}

static int plain_label_name(PyObject *k) {
    if (!PyUnicode_IS_ASCII(k)) return 0;
    const unsigned char *s = PyUnicode_1BYTE_DATA(k);
    Py_ssize_t n = PyUnicode_GET_LENGTH(k);
    if (n == 0 || !label_start(s[0])) return 0;
    for (Py_ssize_t i = 1; i < n; i++) {
        if (!label_char(s[i]) || (s[i] == '_' && s[i - 1] == '_')) return 0;
    }
    return 1;
}

static PyObject *scraped_labels(PyObject *self, PyObject *args) {
    PyObject *name, *key;
    if (!PyArg_ParseTuple(args, "UO!:scraped_labels", &name, &PyTuple_Type, &key)) return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(key);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *pair = PyTuple_GET_ITEM(key, i);
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
            PyErr_SetString(PyExc_TypeError, "scraped_labels: the key holds (name, value) pairs");
            return NULL;
        }
        PyObject *k = PyTuple_GET_ITEM(pair, 0), *v = PyTuple_GET_ITEM(pair, 1);
        if (!PyUnicode_CheckExact(v)) Py_RETURN_NONE;
        if (!PyUnicode_Check(k)) {
            PyErr_SetString(PyExc_TypeError, "scraped_labels: a label name is not a str");
            return NULL;
        }
        if (!plain_label_name(k)) Py_RETURN_NONE;
    }
    Buf b;
    buf_init(&b);
    PyObject *result = NULL, *hold = NULL;
    Py_ssize_t nl;
    const char *nd = utf8_of(name, &nl, &hold);
    if (nd == NULL) goto done;
    int named = 0;
    for (Py_ssize_t i = 0; i <= n; i++) {
        PyObject *k = NULL, *v = NULL;
        Py_ssize_t kl = 0, vl = 0;
        const char *kd = NULL;
        if (i < n) {
            k = PyTuple_GET_ITEM(PyTuple_GET_ITEM(key, i), 0);
            v = PyTuple_GET_ITEM(PyTuple_GET_ITEM(key, i), 1);
            kd = (const char *)PyUnicode_1BYTE_DATA(k); /* ASCII: a plain label name */
            kl = PyUnicode_GET_LENGTH(k);
        }
        if (!named) {
            /* __name__ before the first label name greater than it (or last) */
            int greater = 1;
            if (k != NULL) {
                Py_ssize_t m = kl < 8 ? kl : 8;
                int c = memcmp(kd, "__name__", m);
                greater = c > 0 || (c == 0 && kl > 8);
            }
            if (greater) {
                if (put_label(&b, "__name__", 8, nd, nl) < 0) goto done;
                named = 1;
            }
        }
        if (k == NULL || PyUnicode_GET_LENGTH(v) == 0) continue;
        PyObject *vhold;
        const char *vd = utf8_of(v, &vl, &vhold);
        if (vd == NULL) goto done;
        int err = put_label(&b, kd, kl, vd, vl);
        Py_XDECREF(vhold);
        if (err < 0) goto done;
    }
    result = PyBytes_FromStringAndSize(b.p, b.len);
done:
    Py_XDECREF(hold);
    buf_free(&b);
    return result;
}

static PyMethodDef methods[] = {
    {"scraped_labels", scraped_labels, METH_VARARGS,
     "scraped_labels(name, key) -> the remote-write labels field, or None (see the module's header)."},
    {"parse_text", parse_text, METH_VARARGS,
     "parse_text(text, ParsedFamily[, shape]) -> families (and the body's shape), or None for a body not wholly "
     "in the plain form (see the module's header)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "integrations.prometheus._promfast",
                                    "The Prometheus bridge's work per new series, in C.", -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__promfast(void) {
#define INTERN(var, text) if ((var = PyUnicode_InternFromString(text)) == NULL) return NULL
    INTERN(s_counter, "counter");
    INTERN(s_gauge, "gauge");
    INTERN(s_histogram, "histogram");
    INTERN(s_summary, "summary");
    INTERN(s_untyped, "untyped");
    INTERN(s_empty, "");
#undef INTERN
    return PyModule_Create(&module);
}
