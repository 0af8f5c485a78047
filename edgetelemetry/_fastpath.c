/* The Python hot path: `handle.record(v)` as one METH_O call into et_record.
 *
 * A cffi call costs 240-320 ns (argument parsing, GIL release); a METH_O method on a heap type
 * costs about 40 ns.  Everything else (registration, drain, snapshots) goes through cffi.  This
 * module does not link the core: it records through the et_api table that the cffi module
 * exports, so there is one copy of the core (and of its thread and fork bookkeeping) per
 * process.  Built against the limited API so one wheel serves every CPython >= 3.9. */
#define Py_LIMITED_API 0x03090000
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>

#include "edgetelemetry.h"

typedef struct {
    PyObject_HEAD
    et_recorder *rec;   /* NULL once the recorder is closed: records become no-ops */
    const et_api *api;
    uint32_t series_id;
} SeriesObject;

static PyObject *series_record(PyObject *self_obj, PyObject *value) {
    SeriesObject *self = (SeriesObject *)self_obj;
    double v = PyFloat_AsDouble(value);
    if (v == -1.0 && PyErr_Occurred()) {
        /* never raise into the inference loop: count it and go on */
        PyErr_Clear();
        if (self->rec != NULL) self->api->count_reject(self->rec, self->series_id, ET_REJECT_TYPE);
        Py_RETURN_NONE;
    }
    if (self->rec != NULL) self->api->record(self->rec, self->series_id, v);
    Py_RETURN_NONE;
}

static int series_init(PyObject *self_obj, PyObject *args, PyObject *kwargs) {
    SeriesObject *self = (SeriesObject *)self_obj;
    unsigned long long api_address, rec_address;
    unsigned int series_id;
    static char *keywords[] = {"api_address", "recorder_address", "series_id", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "KKI", keywords, &api_address, &rec_address,
                                     &series_id))
        return -1;
    const et_api *api = (const et_api *)(uintptr_t)api_address;
    if (api == NULL || rec_address == 0) {
        PyErr_SetString(PyExc_ValueError, "api_address and recorder_address must be non-zero");
        return -1;
    }
    if (api->abi_version != ET_API_VERSION) {
        PyErr_Format(PyExc_RuntimeError, "et_api version %u, expected %u",
                     (unsigned)api->abi_version, (unsigned)ET_API_VERSION);
        return -1;
    }
    self->api = api;
    self->rec = (et_recorder *)(uintptr_t)rec_address;
    self->series_id = series_id;
    return 0;
}

static PyObject *series_detach(PyObject *self_obj, PyObject *unused) {
    (void)unused;
    ((SeriesObject *)self_obj)->rec = NULL;
    Py_RETURN_NONE;
}

static PyObject *series_get_id(PyObject *self_obj, void *closure) {
    (void)closure;
    return PyLong_FromUnsignedLong(((SeriesObject *)self_obj)->series_id);
}

static PyObject *series_get_attached(PyObject *self_obj, void *closure) {
    (void)closure;
    return PyBool_FromLong(((SeriesObject *)self_obj)->rec != NULL);
}

static PyMethodDef series_methods[] = {
    {"record", series_record, METH_O,
     "record(value) -> None\n\nRecord one value; never raises (bad values are counted)."},
    {"_detach", series_detach, METH_NOARGS, "Stop recording: the recorder is closing."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef series_getset[] = {
    {"series_id", series_get_id, NULL, "The core's id of this series.", NULL},
    {"attached", series_get_attached, NULL, "False once the recorder is closed.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot series_slots[] = {
    {Py_tp_init, series_init},
    {Py_tp_methods, series_methods},
    {Py_tp_getset, series_getset},
    {Py_tp_doc, "Base of the bound metric handles: the record hot path."},
    {0, NULL},
};

static PyType_Spec series_spec = {
    .name = "edgetelemetry._fastpath.SeriesBase",
    .basicsize = sizeof(SeriesObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .slots = series_slots,
};

static int fastpath_exec(PyObject *module) {
    PyObject *type = PyType_FromSpec(&series_spec);
    if (type == NULL) return -1;
    if (PyModule_AddObject(module, "SeriesBase", type) < 0) {
        Py_DECREF(type);
        return -1;
    }
    return 0;
}

static PyModuleDef_Slot fastpath_slots[] = {
    {Py_mod_exec, fastpath_exec},
    {0, NULL},
};

static struct PyModuleDef fastpath_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "edgetelemetry._fastpath",
    .m_doc = "The record hot path of edgetelemetry (private).",
    .m_size = 0,
    .m_slots = fastpath_slots,
};

PyMODINIT_FUNC PyInit__fastpath(void) { return PyModuleDef_Init(&fastpath_module); }
