/* The Python hot path: `handle.record(v)` as one METH_O call into et_record, and
 * `group.record(a, b, c)` as one METH_FASTCALL call into et_record_group.
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
#include <time.h>

#include "edgetelemetry.h"

/* METH_FASTCALL has had this value and calling convention since CPython 3.7; the limited API
 * lists it from 3.10 only, and this module targets 3.9. */
#ifndef METH_FASTCALL
#define METH_FASTCALL 0x0080
#endif

/* et_record_group is in the table from version 2 */
#define API_VERSION_NEEDED 2

typedef struct {
    PyObject_HEAD
    et_recorder *rec;   /* NULL once the recorder is closed: records become no-ops */
    const et_api *api;
    uint32_t series_id;
    double ns_per_unit; /* for time(): 1e6 for a series in ms; 0 when the unit is no time */
} SeriesObject;

/* `with handle.time():` is the API's way to take a latency, so it is C end to end: a Python
 * context manager costs about 900 ns per use, this one about a tenth of that.  Used as a
 * decorator, a Timer hands the function to the Python function registered with
 * _set_decorator, which knows coroutines. */
typedef struct {
    PyObject_HEAD
    PyObject *series; /* strong reference: a SeriesObject */
    int64_t start_ns;
} TimerObject;

static PyObject *timer_type;   /* set at module exec */
static PyObject *decorate_fn;  /* decorate(series, ns_per_unit, fn) */

/* CLOCK_MONOTONIC, as time.perf_counter_ns on Linux */
static int64_t monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* A value as a double, -1.0 with an exception set when it is no number.  An exact int is
 * converted directly: PyFloat_AsDouble would make (and free) a float object for it, and in a
 * loop whose inference has evicted the caches that detour costs more than the record. */
static inline double value_as_double(PyObject *value) {
    if (PyLong_CheckExact(value)) return PyLong_AsDouble(value);
    return PyFloat_AsDouble(value);
}

/* The (table, recorder) handle as two addresses, checked: what every handle type holds. */
static int bind_recorder(unsigned long long api_address, unsigned long long rec_address,
                         const et_api **api, et_recorder **rec) {
    const et_api *table = (const et_api *)(uintptr_t)api_address;
    if (table == NULL || rec_address == 0) {
        PyErr_SetString(PyExc_ValueError, "api_address and recorder_address must be non-zero");
        return -1;
    }
    if (table->abi_version < API_VERSION_NEEDED) {
        PyErr_Format(PyExc_RuntimeError, "et_api version %u, need %u or later",
                     (unsigned)table->abi_version, (unsigned)API_VERSION_NEEDED);
        return -1;
    }
    *api = table;
    *rec = (et_recorder *)(uintptr_t)rec_address;
    return 0;
}

static PyObject *series_record(PyObject *self_obj, PyObject *value) {
    SeriesObject *self = (SeriesObject *)self_obj;
    double v = value_as_double(value);
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
    if (bind_recorder(api_address, rec_address, &self->api, &self->rec) < 0) return -1;
    self->series_id = series_id;
    return 0;
}

static PyObject *series_time(PyObject *self_obj, PyObject *unused) {
    (void)unused;
    SeriesObject *self = (SeriesObject *)self_obj;
    if (!(self->ns_per_unit > 0.0)) {
        PyErr_SetString(PyExc_ValueError,
                        "time() records durations in the series' unit: create the handle with "
                        "unit= one of ns, us, ms, s");
        return NULL;
    }
    allocfunc alloc = (allocfunc)PyType_GetSlot((PyTypeObject *)timer_type, Py_tp_alloc);
    TimerObject *timer = (TimerObject *)alloc((PyTypeObject *)timer_type, 0);
    if (timer == NULL) return NULL;
    Py_INCREF(self_obj);
    timer->series = self_obj;
    timer->start_ns = 0;
    return (PyObject *)timer;
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

static PyObject *series_get_ns_per_unit(PyObject *self_obj, void *closure) {
    (void)closure;
    return PyFloat_FromDouble(((SeriesObject *)self_obj)->ns_per_unit);
}

static int series_set_ns_per_unit(PyObject *self_obj, PyObject *value, void *closure) {
    (void)closure;
    double v = value == NULL ? 0.0 : PyFloat_AsDouble(value);
    if (v == -1.0 && PyErr_Occurred()) return -1;
    ((SeriesObject *)self_obj)->ns_per_unit = v;
    return 0;
}

static PyObject *series_get_attached(PyObject *self_obj, void *closure) {
    (void)closure;
    return PyBool_FromLong(((SeriesObject *)self_obj)->rec != NULL);
}

static PyMethodDef series_methods[] = {
    {"record", series_record, METH_O,
     "record(value) -> None\n\nRecord one value; never raises (bad values are counted)."},
    {"time", series_time, METH_NOARGS,
     "time() -> Timer\n\nTime a block (with) or a function (decorator, async def included) "
     "in the series' unit."},
    {"_detach", series_detach, METH_NOARGS, "Stop recording: the recorder is closing."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef series_getset[] = {
    {"series_id", series_get_id, NULL, "The core's id of this series.", NULL},
    {"attached", series_get_attached, NULL, "False once the recorder is closed.", NULL},
    {"_ns_per_unit", series_get_ns_per_unit, series_set_ns_per_unit,
     "Nanoseconds per unit of the series, for time(); 0 when its unit is not a time.", NULL},
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
    .name = "edgetelemetry._native._fastpath.SeriesBase",
    .basicsize = sizeof(SeriesObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .slots = series_slots,
};

/* ---- Timer ---- */

static PyObject *timer_enter(PyObject *self_obj, PyObject *unused) {
    (void)unused;
    ((TimerObject *)self_obj)->start_ns = monotonic_ns();
    Py_INCREF(self_obj);
    return self_obj;
}

static PyObject *timer_exit(PyObject *self_obj, PyObject *const *args, Py_ssize_t nargs) {
    (void)args, (void)nargs;
    const int64_t end = monotonic_ns();
    TimerObject *timer = (TimerObject *)self_obj;
    SeriesObject *series = (SeriesObject *)timer->series;
    if (series->rec != NULL)
        series->api->record(series->rec, series->series_id,
                            (double)(end - timer->start_ns) / series->ns_per_unit);
    Py_RETURN_FALSE; /* never swallow the block's exception */
}

static PyObject *timer_call(PyObject *self_obj, PyObject *args, PyObject *kwargs) {
    TimerObject *timer = (TimerObject *)self_obj;
    if (decorate_fn == NULL) {
        PyErr_SetString(PyExc_TypeError, "Timer cannot decorate: no decorator registered");
        return NULL;
    }
    PyObject *fn;
    if (kwargs != NULL || !PyArg_UnpackTuple(args, "Timer", 1, 1, &fn)) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "Timer takes one function");
        return NULL;
    }
    return PyObject_CallFunction(decorate_fn, "OdO", timer->series,
                                 ((SeriesObject *)timer->series)->ns_per_unit, fn);
}

static void timer_dealloc(PyObject *self_obj) {
    PyTypeObject *type = Py_TYPE(self_obj);
    Py_XDECREF(((TimerObject *)self_obj)->series);
    freefunc free_fn = (freefunc)PyType_GetSlot(type, Py_tp_free);
    free_fn(self_obj);
    Py_DECREF(type);
}

static PyMethodDef timer_methods[] = {
    {"__enter__", timer_enter, METH_NOARGS, NULL},
    /* fast call: no argument tuple per block */
    {"__exit__", (PyCFunction)(void (*)(void))timer_exit, METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot timer_slots[] = {
    {Py_tp_methods, timer_methods},
    {Py_tp_call, timer_call},
    {Py_tp_dealloc, timer_dealloc},
    {Py_tp_doc, "Records the time a with-block or a decorated function takes."},
    {0, NULL},
};

static PyType_Spec timer_spec = {
    .name = "edgetelemetry._native._fastpath.Timer",
    .basicsize = sizeof(TimerObject),
    .flags = Py_TPFLAGS_DEFAULT,
    .slots = timer_slots,
};

/* ---- Group: the metrics of one inference, recorded with one call ---- */

#define GROUP_MAX 16

typedef struct {
    PyObject_HEAD
    et_recorder *rec; /* NULL once the recorder is closed: records become no-ops */
    const et_api *api;
    /* api->record_group, on this object's cache line: one line fewer to miss per record */
    int64_t (*record_group)(et_recorder *rec, const uint32_t *series_ids, const double *values,
                            size_t n);
    double ns_per_unit; /* of the first series, for record_since; 0 when it is not a time */
    uint32_t n;
    uint32_t ids[GROUP_MAX];
} GroupObject;

static int group_init(PyObject *self_obj, PyObject *args, PyObject *kwargs) {
    GroupObject *self = (GroupObject *)self_obj;
    unsigned long long api_address, rec_address;
    PyObject *ids;
    double ns_per_unit;
    static char *keywords[] = {"api_address", "recorder_address", "series_ids", "ns_per_unit",
                               NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "KKOd", keywords, &api_address,
                                     &rec_address, &ids, &ns_per_unit))
        return -1;
    const et_api *api;
    et_recorder *rec;
    if (bind_recorder(api_address, rec_address, &api, &rec) < 0) return -1;
    if (!PyTuple_Check(ids) || PyTuple_Size(ids) < 1 || PyTuple_Size(ids) > GROUP_MAX) {
        PyErr_Format(PyExc_ValueError, "series_ids must be a tuple of 1 to %d ids", GROUP_MAX);
        return -1;
    }
    const Py_ssize_t n = PyTuple_Size(ids);
    for (Py_ssize_t i = 0; i < n; i++) {
        const unsigned long long id = PyLong_AsUnsignedLongLong(PyTuple_GetItem(ids, i));
        if (id == (unsigned long long)-1 && PyErr_Occurred()) return -1;
        if (id > UINT32_MAX) {
            PyErr_SetString(PyExc_ValueError, "a series id is a uint32");
            return -1;
        }
        self->ids[i] = (uint32_t)id;
    }
    self->n = (uint32_t)n;
    self->api = api;
    self->record_group = api->record_group;
    self->rec = rec;
    self->ns_per_unit = ns_per_unit;
    return 0;
}

/* values[0..n) into the group's series from `first` on, with one et_record_group.  A value
 * that is no number is counted as rejected in its own series and left out; never raises.
 * Converting a value may run Python code (__float__, __index__) that closes the recorder, so
 * the recorder is looked at only after every value is converted. */
static void group_push(GroupObject *self, uint32_t first, const double *head_value,
                       PyObject *const *values, Py_ssize_t n) {
    uint32_t ids[GROUP_MAX], rejected[GROUP_MAX];
    double v[GROUP_MAX];
    uint32_t k = 0, r = 0;
    if (head_value != NULL) {
        ids[k] = self->ids[0];
        v[k++] = *head_value;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        const uint32_t id = self->ids[first + (uint32_t)i];
        const double x = value_as_double(values[i]);
        if (x == -1.0 && PyErr_Occurred()) {
            PyErr_Clear();
            rejected[r++] = id;
            continue;
        }
        ids[k] = id;
        v[k++] = x;
    }
    if (self->rec == NULL) return;
    for (uint32_t j = 0; j < r; j++)
        self->api->count_reject(self->rec, rejected[j], ET_REJECT_TYPE);
    self->record_group(self->rec, ids, v, k);
}

static PyObject *group_record(PyObject *self_obj, PyObject *const *args, Py_ssize_t nargs) {
    GroupObject *self = (GroupObject *)self_obj;
    if (nargs != (Py_ssize_t)self->n) {
        PyErr_Format(PyExc_TypeError, "record() takes %u values, one per series, got %zd",
                     (unsigned)self->n, nargs);
        return NULL;
    }
    if (self->rec != NULL) group_push(self, 0, NULL, args, nargs);
    Py_RETURN_NONE;
}

static PyObject *group_start(PyObject *self_obj, PyObject *unused) {
    (void)self_obj, (void)unused;
    return PyLong_FromLongLong(monotonic_ns());
}

static PyObject *group_record_since(PyObject *self_obj, PyObject *const *args,
                                    Py_ssize_t nargs) {
    const int64_t end = monotonic_ns();
    GroupObject *self = (GroupObject *)self_obj;
    if (!(self->ns_per_unit > 0.0)) {
        PyErr_SetString(PyExc_ValueError,
                        "record_since() records a duration in the group's first series: its "
                        "unit must be one of ns, us, ms, s");
        return NULL;
    }
    if (nargs != (Py_ssize_t)self->n) {
        PyErr_Format(PyExc_TypeError,
                     "record_since() takes start and %u values, one per series after the "
                     "first, got %zd arguments",
                     (unsigned)self->n - 1, nargs);
        return NULL;
    }
    if (self->rec == NULL) Py_RETURN_NONE;
    const long long start = PyLong_AsLongLong(args[0]);
    if (start == -1 && PyErr_Occurred()) {
        /* not a start() value: the duration is lost, counted; the other values are kept */
        PyErr_Clear();
        if (self->rec != NULL) self->api->count_reject(self->rec, self->ids[0], ET_REJECT_TYPE);
        group_push(self, 1, NULL, args + 1, nargs - 1);
    } else {
        double elapsed = (double)(end - (int64_t)start) / self->ns_per_unit;
        group_push(self, 1, &elapsed, args + 1, nargs - 1);
    }
    Py_RETURN_NONE;
}

static PyObject *group_detach(PyObject *self_obj, PyObject *unused) {
    (void)unused;
    ((GroupObject *)self_obj)->rec = NULL;
    Py_RETURN_NONE;
}

static PyObject *group_get_size(PyObject *self_obj, void *closure) {
    (void)closure;
    return PyLong_FromUnsignedLong(((GroupObject *)self_obj)->n);
}

static PyObject *group_get_attached(PyObject *self_obj, void *closure) {
    (void)closure;
    return PyBool_FromLong(((GroupObject *)self_obj)->rec != NULL);
}

static PyMethodDef group_methods[] = {
    {"record", (PyCFunction)(void (*)(void))group_record, METH_FASTCALL,
     "record(*values) -> None\n\nOne value per series, in the group's order, with one ring "
     "update; never raises for a bad value (it is counted)."},
    {"start", group_start, METH_NOARGS,
     "start() -> int\n\nThe monotonic clock in ns, for record_since()."},
    {"record_since", (PyCFunction)(void (*)(void))group_record_since, METH_FASTCALL,
     "record_since(start, *values) -> None\n\nThe time since start (from start()) into the "
     "first series, in its unit, and one value per other series."},
    {"_detach", group_detach, METH_NOARGS, "Stop recording: the recorder is closing."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef group_getset[] = {
    {"size", group_get_size, NULL, "How many series the group records into.", NULL},
    {"attached", group_get_attached, NULL, "False once the recorder is closed.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot group_slots[] = {
    {Py_tp_init, group_init},
    {Py_tp_methods, group_methods},
    {Py_tp_getset, group_getset},
    {Py_tp_doc, "Base of Group: the series of one inference, recorded with one call."},
    {0, NULL},
};

static PyType_Spec group_spec = {
    .name = "edgetelemetry._native._fastpath.GroupBase",
    .basicsize = sizeof(GroupObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .slots = group_slots,
};

static PyObject *set_decorator(PyObject *module, PyObject *fn) {
    (void)module;
    if (!PyCallable_Check(fn)) {
        PyErr_SetString(PyExc_TypeError, "the decorator must be callable");
        return NULL;
    }
    PyObject *old = decorate_fn;
    Py_INCREF(fn);
    decorate_fn = fn;
    Py_XDECREF(old);
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"_set_decorator", set_decorator, METH_O,
     "Register decorate(series, ns_per_unit, fn), used when a Timer decorates."},
    {NULL, NULL, 0, NULL},
};

static int fastpath_exec(PyObject *module) {
    PyObject *type = PyType_FromSpec(&series_spec);
    if (type == NULL) return -1;
    if (PyModule_AddObject(module, "SeriesBase", type) < 0) {
        Py_DECREF(type);
        return -1;
    }
    PyObject *group_type = PyType_FromSpec(&group_spec);
    if (group_type == NULL) return -1;
    if (PyModule_AddObject(module, "GroupBase", group_type) < 0) {
        Py_DECREF(group_type);
        return -1;
    }
    if (PyModule_AddIntConstant(module, "GROUP_MAX", GROUP_MAX) < 0) return -1;
    timer_type = PyType_FromSpec(&timer_spec);
    if (timer_type == NULL) return -1;
    Py_INCREF(timer_type);
    if (PyModule_AddObject(module, "Timer", timer_type) < 0) {
        Py_DECREF(timer_type);
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
    .m_name = "edgetelemetry._native._fastpath",
    .m_doc = "The record hot path of edgetelemetry (private).",
    .m_size = 0,
    .m_methods = module_methods,
    .m_slots = fastpath_slots,
};

PyMODINIT_FUNC PyInit__fastpath(void) { return PyModuleDef_Init(&fastpath_module); }
