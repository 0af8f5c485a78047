/* A second native module in a Python process that uses edgetelemetry: it records, from C
 * threads of its own, into the recorder that Python created.
 *
 * It does not link libedgetelemetry and has no copy of the core: it is handed the process's
 * et_api table and the recorder (two addresses, the handle documented in
 * docs/native-sdk.md), registers its series through api->series_add and records through
 * api->record.  tests/test_native_sdk.py builds it with the system compiler and checks that
 * Python's snapshot, and the heartbeat built from it, carry both languages' records.
 *
 *   record_from_c(api_address, recorder_address, model, version, metric, n, threads)
 *       -> (series_id, kept, dropped)
 * registers (model, version, metric) and records the values 1..n from each of `threads` new
 * pthreads, with the GIL released; kept + dropped == n * threads.
 */
#define Py_LIMITED_API 0x03090000
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

#include "edgetelemetry.h"

#define MAX_THREADS 64

typedef struct job {
    const et_api *api;
    et_recorder *rec;
    uint32_t series_id;
    long n;
    long kept, dropped;
} job;

static void *producer(void *arg) {
    job *j = arg;
    for (long i = 1; i <= j->n; i++) {
        if (j->api->record(j->rec, j->series_id, (double)i) == ET_OK)
            j->kept++;
        else
            j->dropped++; /* ET_ERINGFULL / ET_ENORING: counted by the core too */
    }
    return NULL;
}

static PyObject *record_from_c(PyObject *self, PyObject *args) {
    (void)self;
    unsigned long long api_address, rec_address;
    const char *model, *version, *metric;
    long n;
    int threads;
    if (!PyArg_ParseTuple(args, "KKsssli", &api_address, &rec_address, &model, &version,
                          &metric, &n, &threads))
        return NULL;
    const et_api *api = (const et_api *)(uintptr_t)api_address;
    et_recorder *rec = (et_recorder *)(uintptr_t)rec_address;
    if (api == NULL || rec == NULL || n < 0 || threads < 1 || threads > MAX_THREADS) {
        PyErr_SetString(PyExc_ValueError, "bad handle, n or threads");
        return NULL;
    }
    /* the table is append-only: version 1 has everything this module uses */
    if (api->abi_version < 1) {
        PyErr_Format(PyExc_RuntimeError, "et_api version %u, this module needs 1 or later",
                     (unsigned)api->abi_version);
        return NULL;
    }
    uint32_t series_id = 0;
    const int rc = api->series_add(rec, model, version, metric, NULL, &series_id);
    if (rc != ET_OK) {
        PyErr_Format(PyExc_RuntimeError, "series_add: %s", api->strerror(rc));
        return NULL;
    }

    job jobs[MAX_THREADS];
    pthread_t tids[MAX_THREADS];
    int started = 0, failed = 0;
    Py_BEGIN_ALLOW_THREADS
    for (int t = 0; t < threads; t++) {
        jobs[t] = (job){api, rec, series_id, n, 0, 0};
        if (pthread_create(&tids[t], NULL, producer, &jobs[t]) != 0) {
            failed = 1;
            break;
        }
        started++;
    }
    for (int t = 0; t < started; t++) pthread_join(tids[t], NULL);
    Py_END_ALLOW_THREADS
    if (failed) {
        PyErr_SetString(PyExc_OSError, "pthread_create failed");
        return NULL;
    }
    long kept = 0, dropped = 0;
    for (int t = 0; t < started; t++) {
        kept += jobs[t].kept;
        dropped += jobs[t].dropped;
    }
    return Py_BuildValue("(Ill)", (unsigned int)series_id, kept, dropped);
}

static PyMethodDef methods[] = {
    {"record_from_c", record_from_c, METH_VARARGS,
     "record_from_c(api_address, recorder_address, model, version, metric, n, threads)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "et_native_ext", "Records into a recorder Python created.", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit_et_native_ext(void) { return PyModule_Create(&module); }
