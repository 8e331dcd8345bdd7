/* Optional native checks for the structured-mode signal decoder (jido._codec).
 *
 * Two predicates the decoder's fast path calls once per message. Each answers exactly what the
 * pure-Python fallback in jido._codec answers (tests/jido/test_speedups.py holds them to it on
 * generated input); a False only sends the message down the slower, complete check, so these
 * functions never raise and never decide an error message.
 *
 * Built when a C compiler is present at install time (setup.py marks the extension optional);
 * without it, or with JIDO_PURE_PYTHON=1 in the environment, the Python versions run.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static inline int is_digit(Py_UCS1 c) { return c >= '0' && c <= '9'; }
static inline int is_lower_hex(Py_UCS1 c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}
static inline int two_digits(const Py_UCS1 *p) { return (p[0] - '0') * 10 + (p[1] - '0'); }

/* The ASCII data of an exact str of the given length, or NULL. */
static const Py_UCS1 *ascii_of(PyObject *s, Py_ssize_t length) {
    if (!PyUnicode_CheckExact(s)) {
        return NULL;
    }
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(s) < 0) {
        PyErr_Clear();
        return NULL;
    }
#endif
    if (!PyUnicode_IS_ASCII(s) || PyUnicode_GET_LENGTH(s) != length) {
        return NULL;
    }
    return PyUnicode_1BYTE_DATA(s);
}

PyDoc_STRVAR(canonical_time_doc,
             "canonical_time(value, /)\n--\n\n"
             "True iff value is a str YYYY-MM-DDTHH:MM:SS.ffffffZ naming a real UTC date and "
             "time\n(years 0001-9999, no leap second).");

static PyObject *canonical_time(PyObject *module, PyObject *value) {
    static const char shape[] = "dddd-dd-ddTdd:dd:dd.ddddddZ";
    static const int days_in_month[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    const Py_UCS1 *p = ascii_of(value, 27);
    if (p == NULL) {
        Py_RETURN_FALSE;
    }
    for (int i = 0; i < 27; i++) {
        if (shape[i] == 'd' ? !is_digit(p[i]) : p[i] != (Py_UCS1)shape[i]) {
            Py_RETURN_FALSE;
        }
    }
    int year = two_digits(p) * 100 + two_digits(p + 2);
    int month = two_digits(p + 5);
    int day = two_digits(p + 8);
    if (year < 1 || month < 1 || month > 12 || day < 1) {
        Py_RETURN_FALSE;
    }
    int last_day = days_in_month[month - 1];
    if (month == 2 && year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)) {
        last_day = 29;
    }
    if (day > last_day || two_digits(p + 11) > 23 || two_digits(p + 14) > 59 ||
        two_digits(p + 17) > 59) {
        Py_RETURN_FALSE;
    }
    Py_RETURN_TRUE;
}

PyDoc_STRVAR(valid_traceparent_doc,
             "valid_traceparent(value, /)\n--\n\n"
             "True iff value is a str W3C traceparent: version-traceid-spanid-flags in lower-case "
             "hex,\nversion not ff, trace id and span id not all zero.");

static PyObject *valid_traceparent(PyObject *module, PyObject *value) {
    const Py_UCS1 *p = ascii_of(value, 55);
    if (p == NULL || p[2] != '-' || p[35] != '-' || p[52] != '-' || (p[0] == 'f' && p[1] == 'f')) {
        Py_RETURN_FALSE;
    }
    int trace_zero = 1, span_zero = 1;
    for (int i = 0; i < 55; i++) {
        if (i == 2 || i == 35 || i == 52) {
            continue;
        }
        if (!is_lower_hex(p[i])) {
            Py_RETURN_FALSE;
        }
        if (p[i] != '0') {
            if (i > 2 && i < 35) {
                trace_zero = 0;
            } else if (i > 35 && i < 52) {
                span_zero = 0;
            }
        }
    }
    if (trace_zero || span_zero) {
        Py_RETURN_FALSE;
    }
    Py_RETURN_TRUE;
}

static PyMethodDef speedups_methods[] = {
    {"canonical_time", canonical_time, METH_O, canonical_time_doc},
    {"valid_traceparent", valid_traceparent, METH_O, valid_traceparent_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    "jido._speedups",
    "Native checks for the signal decoder's fast path (optional; see jido._codec).",
    0,
    speedups_methods,
};

PyMODINIT_FUNC PyInit__speedups(void) { return PyModuleDef_Init(&speedups_module); }
