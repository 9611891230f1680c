/* Cached DNS answers over UDP without Python: the hot path of s25rbl.dns.fast.
 *
 * Udp: one recvmmsg into fixed buffers per readiness event; each datagram whose bytes past
 * the ID are a key of the answer cache's dict (AnswerCache._entries: what AnswerCache.answer
 * looks up first), whose value is well formed and not expired (CLOCK_MONOTONIC, which
 * time.monotonic reads), is answered here: ID + header + the request's own question +
 * records, written into the send buffer, and counted (Hits). The others are handed back to
 * Python, which may queue answers for them; one sendmmsg sends all. The dict is only read,
 * with the GIL held and no Python code run (bytes keys hash and compare in C), so the
 * Python cache stays the one store: nothing to mirror, no memory per entry.
 *
 * Every length comes from the kernel (msg_len, msg_namelen) and is checked against the
 * buffers before use; a datagram that is cut short, too small, too large or odd goes to
 * Python, as does any value that is not what AnswerCache stores. Linux only; compiled at
 * install time, and the server runs without it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>

#define SLOT 65536     /* octets per datagram buffer: more than any UDP payload */
#define NAME 128       /* octets per address buffer (sockaddr_storage) */
/* The longest request that can have a cache entry: header, a 255-octet name, type and
 * class, an OPT record without options. Longer ones go to Python unhashed. */
#define MAX_REQUEST 512
#define MAX_BATCH 1024

/* --- hits counted between drains ----------------------------------------------------------- */

/* A hit is counted twice, as AnswerCache.answer counts it: on the answer's counter key (few
 * exist: a table by the key object's identity, holding a reference until the drain) and on
 * the list entry that decided (a table by entry id, with the time of its last hit). Both are
 * bounded; a hit that finds no room is handed to Python, which counts it itself. */

#define KEY_SLOTS 8192        /* counter keys: AnswerCache interns at most 4096 */
#define ENTRY_SLOTS_MIN 1024
#define ENTRY_SLOTS_MAX (1 << 18) /* entries hit between two drains: at most half of these */

typedef struct {
    PyObject *key; /* a strong reference, or NULL */
    unsigned long long count;
} KeyCount;

typedef struct {
    long long entry_id;
    unsigned long long count; /* 0: an empty slot */
    double last;
} EntryCount;

typedef struct {
    PyObject_HEAD
    KeyCount *keys;
    size_t keys_used;
    EntryCount *entries;
    size_t entries_mask, entries_used;
    unsigned long long total;
} Hits;

static int
Hits_init(Hits *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "", kwlist))
        return -1;
    if (self->keys != NULL)
        return 0;
    self->keys = PyMem_Calloc(KEY_SLOTS, sizeof(KeyCount));
    self->entries = PyMem_Calloc(ENTRY_SLOTS_MIN, sizeof(EntryCount));
    if (self->keys == NULL || self->entries == NULL) {
        PyMem_Free(self->keys);
        PyMem_Free(self->entries);
        self->keys = NULL;
        self->entries = NULL;
        PyErr_NoMemory();
        return -1;
    }
    self->entries_mask = ENTRY_SLOTS_MIN - 1;
    return 0;
}

static void
hits_forget_keys(Hits *self)
{
    for (size_t i = 0; i < KEY_SLOTS; i++) {
        Py_CLEAR(self->keys[i].key);
        self->keys[i].count = 0;
    }
    self->keys_used = 0;
}

static void
Hits_dealloc(Hits *self)
{
    if (self->keys != NULL)
        hits_forget_keys(self);
    PyMem_Free(self->keys);
    PyMem_Free(self->entries);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static size_t
mix(unsigned long long x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return (size_t)x;
}

/* The slot of counter key `key`, claimed if new; NULL if the table is full. */
static KeyCount *
key_slot(Hits *self, PyObject *key)
{
    size_t i = mix((unsigned long long)(uintptr_t)key) & (KEY_SLOTS - 1);
    for (;;) {
        KeyCount *k = &self->keys[i];
        if (k->key == key)
            return k;
        if (k->key == NULL) {
            if (self->keys_used * 2 >= KEY_SLOTS)
                return NULL;
            Py_INCREF(key);
            k->key = key;
            self->keys_used++;
            return k;
        }
        i = (i + 1) & (KEY_SLOTS - 1);
    }
}

static int
entries_grow(Hits *self)
{
    size_t size = (self->entries_mask + 1) * 2;
    if (size > ENTRY_SLOTS_MAX)
        return -1;
    EntryCount *fresh = PyMem_Calloc(size, sizeof(EntryCount));
    if (fresh == NULL)
        return -1;
    for (size_t i = 0; i <= self->entries_mask; i++) {
        EntryCount *e = &self->entries[i];
        if (e->count == 0)
            continue;
        size_t j = mix((unsigned long long)e->entry_id) & (size - 1);
        while (fresh[j].count != 0)
            j = (j + 1) & (size - 1);
        fresh[j] = *e;
    }
    PyMem_Free(self->entries);
    self->entries = fresh;
    self->entries_mask = size - 1;
    return 0;
}

/* The slot of list entry `entry_id`, claimed if new; NULL if there is no room. */
static EntryCount *
entry_slot(Hits *self, long long entry_id)
{
    if ((self->entries_used + 1) * 2 > self->entries_mask + 1 && entries_grow(self) < 0)
        return NULL;
    size_t i = mix((unsigned long long)entry_id) & self->entries_mask;
    for (;;) {
        EntryCount *e = &self->entries[i];
        if (e->count == 0) {
            e->entry_id = entry_id;
            self->entries_used++;
            return e;
        }
        if (e->entry_id == entry_id)
            return e;
        i = (i + 1) & self->entries_mask;
    }
}

/* Add one entry's hits to HitCounter's tables: counts[id] += n, last[id] = max(last[id], t). */
static int
add_entry(PyObject *counts, PyObject *lasts, EntryCount *e)
{
    int ok = -1;
    PyObject *id = PyLong_FromLongLong(e->entry_id), *sum = NULL, *when = NULL;
    if (id == NULL)
        return -1;
    PyObject *had = PyDict_GetItemWithError(counts, id); /* borrowed */
    if (had == NULL && PyErr_Occurred())
        goto done;
    if (had == NULL)
        sum = PyLong_FromUnsignedLongLong(e->count);
    else {
        PyObject *more = PyLong_FromUnsignedLongLong(e->count);
        if (more == NULL)
            goto done;
        sum = PyNumber_Add(had, more);
        Py_DECREF(more);
    }
    if (sum == NULL || PyDict_SetItem(counts, id, sum) < 0)
        goto done;
    PyObject *before = PyDict_GetItemWithError(lasts, id); /* borrowed */
    if (before == NULL && PyErr_Occurred())
        goto done;
    if (before == NULL || !PyFloat_Check(before) || PyFloat_AS_DOUBLE(before) < e->last) {
        when = PyFloat_FromDouble(e->last);
        if (when == NULL || PyDict_SetItem(lasts, id, when) < 0)
            goto done;
    }
    ok = 0;
done:
    Py_DECREF(id);
    Py_XDECREF(sum);
    Py_XDECREF(when);
    return ok;
}

/* drain(counts, last): the entries' hits added to HitCounter's two dicts (by entry id: hits,
 * and the monotonic time of the last one); returns ([(counter key, n)], total). */
static PyObject *
Hits_drain(Hits *self, PyObject *args)
{
    PyObject *counts, *lasts;
    if (!PyArg_ParseTuple(args, "O!O!:drain", &PyDict_Type, &counts, &PyDict_Type, &lasts))
        return NULL;
    PyObject *keys = PyList_New(0), *item;
    if (keys == NULL)
        return NULL;
    for (size_t i = 0; i < KEY_SLOTS; i++) {
        KeyCount *k = &self->keys[i];
        if (k->key == NULL || k->count == 0)
            continue;
        item = Py_BuildValue("(OK)", k->key, k->count);
        if (item == NULL || PyList_Append(keys, item) < 0) {
            Py_XDECREF(item);
            Py_DECREF(keys);
            return NULL;
        }
        Py_DECREF(item);
    }
    for (size_t i = 0; i <= self->entries_mask; i++) {
        EntryCount *e = &self->entries[i];
        if (e->count == 0)
            continue;
        if (add_entry(counts, lasts, e) < 0) {
            Py_DECREF(keys);
            return NULL;
        }
        e->count = 0; /* added: not again, should a later one fail */
    }
    /* all taken: start afresh (a large entry table shrinks back) */
    hits_forget_keys(self);
    if (self->entries_mask + 1 > ENTRY_SLOTS_MIN) {
        EntryCount *fresh = PyMem_Calloc(ENTRY_SLOTS_MIN, sizeof(EntryCount));
        if (fresh != NULL) {
            PyMem_Free(self->entries);
            self->entries = fresh;
            self->entries_mask = ENTRY_SLOTS_MIN - 1;
        }
        else
            memset(self->entries, 0, (self->entries_mask + 1) * sizeof(EntryCount));
    }
    else
        memset(self->entries, 0, (self->entries_mask + 1) * sizeof(EntryCount));
    self->entries_used = 0;
    unsigned long long total = self->total;
    self->total = 0;
    return Py_BuildValue("(NK)", keys, total);
}

static PyMethodDef Hits_methods[] = {
    {"drain", (PyCFunction)Hits_drain, METH_VARARGS, "drain(counts, last): add what was counted"},
    {NULL}};

static PyTypeObject HitsType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "s25rbl.dns._fastpath.Hits",
    .tp_basicsize = sizeof(Hits),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Hits_init,
    .tp_dealloc = (destructor)Hits_dealloc,
    .tp_methods = Hits_methods,
    .tp_doc = "Cache hits counted in C, by counter key and by list entry, until drained.",
};

/* --- the UDP loop ------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    Hits *hits;
    int fd;
    unsigned int size;
    unsigned int received; /* datagrams read by the last serve() */
    unsigned int queued;   /* answers waiting for send() */
    unsigned char *in, *out, *names;
    size_t in_size, out_size, names_size;
    struct iovec *iov_in, *iov_out;
    struct mmsghdr *msgs_in, *msgs_out;
    unsigned long long dropped, truncated, calls, total, answered;
} Udp;

static int
transient(int code)
{
    return code == EAGAIN || code == EWOULDBLOCK || code == EINTR || code == ENOBUFS || code == ENOMEM
           || code == ECONNREFUSED || code == EHOSTUNREACH || code == ENETUNREACH || code == EACCES
           || code == EPERM || code == EMSGSIZE;
}

static void
udp_free(Udp *self)
{
    if (self->in != NULL && self->in != MAP_FAILED)
        munmap(self->in, self->in_size);
    if (self->out != NULL && self->out != MAP_FAILED)
        munmap(self->out, self->out_size);
    if (self->names != NULL && self->names != MAP_FAILED)
        munmap(self->names, self->names_size);
    self->in = self->out = self->names = NULL;
    PyMem_Free(self->iov_in);
    PyMem_Free(self->iov_out);
    PyMem_Free(self->msgs_in);
    PyMem_Free(self->msgs_out);
    self->iov_in = self->iov_out = NULL;
    self->msgs_in = self->msgs_out = NULL;
    self->received = self->queued = 0;
}

static void *
anonymous(size_t size)
{
    return mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
}

static int
Udp_init(Udp *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"fd", "size", "hits", NULL};
    int fd;
    unsigned int size;
    PyObject *hits;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iIO!", kwlist, &fd, &size, &HitsType, &hits))
        return -1;
    if (self->msgs_in != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "already initialised");
        return -1;
    }
    if (size < 1 || size > MAX_BATCH || fd < 0) {
        PyErr_SetString(PyExc_ValueError, "a batch of 1 to 1024 datagrams on an open socket");
        return -1;
    }
    Py_INCREF(hits);
    self->hits = (Hits *)hits;
    self->fd = fd;
    self->size = size;
    self->in_size = self->out_size = (size_t)size * SLOT;
    self->names_size = (size_t)size * NAME;
    self->in = anonymous(self->in_size);
    self->out = anonymous(self->out_size);
    self->names = anonymous(self->names_size);
    self->iov_in = PyMem_Calloc(size, sizeof(struct iovec));
    self->iov_out = PyMem_Calloc(size, sizeof(struct iovec));
    self->msgs_in = PyMem_Calloc(size, sizeof(struct mmsghdr));
    self->msgs_out = PyMem_Calloc(size, sizeof(struct mmsghdr));
    if (self->in == MAP_FAILED || self->out == MAP_FAILED || self->names == MAP_FAILED) {
        udp_free(self);
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    if (!self->iov_in || !self->iov_out || !self->msgs_in || !self->msgs_out) {
        udp_free(self);
        PyErr_NoMemory();
        return -1;
    }
    for (unsigned int i = 0; i < size; i++) {
        self->iov_in[i].iov_base = self->in + (size_t)i * SLOT;
        self->iov_in[i].iov_len = SLOT;
        self->msgs_in[i].msg_hdr.msg_iov = &self->iov_in[i];
        self->msgs_in[i].msg_hdr.msg_iovlen = 1;
        self->msgs_out[i].msg_hdr.msg_iov = &self->iov_out[i];
        self->msgs_out[i].msg_hdr.msg_iovlen = 1;
    }
    return 0;
}

static void
Udp_dealloc(Udp *self)
{
    udp_free(self);
    Py_XDECREF(self->hits);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
ready(Udp *self)
{
    if (self->msgs_in == NULL) {
        PyErr_SetString(PyExc_ValueError, "closed");
        return 0;
    }
    return 1;
}

/* Queue an answer of `length` octets (already in the out slot `queued`) to datagram i. */
static void
queue_slot(Udp *self, unsigned int i, size_t length)
{
    unsigned int q = self->queued++;
    self->iov_out[q].iov_base = self->out + (size_t)q * SLOT;
    self->iov_out[q].iov_len = length;
    self->msgs_out[q].msg_hdr.msg_name = self->names + (size_t)i * NAME;
    self->msgs_out[q].msg_hdr.msg_namelen = self->msgs_in[i].msg_hdr.msg_namelen;
    self->msgs_out[q].msg_hdr.msg_control = NULL;
    self->msgs_out[q].msg_hdr.msg_controllen = 0;
    self->msgs_out[q].msg_hdr.msg_flags = 0;
}

/* The parts of an AnswerCache value, ((header, rest, count key), expires, entry id); 0 if
 * it is not one (then Python answers). */
static int
parts(PyObject *value, PyObject **header, PyObject **rest, PyObject **count, double *expires,
      long long *entry_id)
{
    if (!PyTuple_CheckExact(value) || PyTuple_GET_SIZE(value) != 3)
        return 0;
    PyObject *template = PyTuple_GET_ITEM(value, 0), *when = PyTuple_GET_ITEM(value, 1),
             *entry = PyTuple_GET_ITEM(value, 2);
    if (!PyTuple_CheckExact(template) || PyTuple_GET_SIZE(template) != 3 || !PyFloat_CheckExact(when))
        return 0;
    *header = PyTuple_GET_ITEM(template, 0);
    *rest = PyTuple_GET_ITEM(template, 1);
    *count = PyTuple_GET_ITEM(template, 2);
    if (!PyBytes_CheckExact(*header) || PyBytes_GET_SIZE(*header) != 10 || !PyBytes_CheckExact(*rest))
        return 0;
    *expires = PyFloat_AS_DOUBLE(when);
    if (entry == Py_None) {
        *entry_id = -1;
        return 1;
    }
    if (!PyLong_CheckExact(entry))
        return 0;
    int overflow = 0;
    *entry_id = PyLong_AsLongLongAndOverflow(entry, &overflow);
    if (overflow || (*entry_id == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return 0;
    }
    return *entry_id >= 0;
}

/* Answer datagram i from `entries` (AnswerCache._entries) if it can be; 1 if it was, 0 if
 * Python is to answer it, -1 on an error (an exception set). */
static int
answer_hit(Udp *self, PyObject *entries, unsigned int i, size_t length, double *now)
{
    const unsigned char *d = self->in + (size_t)i * SLOT;
    /* shorter than a header and a root question, or longer than any key; QR/opcode/AA/TC */
    if (length < 17 || length > MAX_REQUEST || d[2] >= 2)
        return 0;
    PyObject *key = PyBytes_FromStringAndSize((const char *)d + 2, (Py_ssize_t)(length - 2));
    if (key == NULL)
        return -1;
    PyObject *value = PyDict_GetItemWithError(entries, key); /* borrowed */
    Py_DECREF(key);
    if (value == NULL)
        return PyErr_Occurred() ? -1 : 0;
    PyObject *header, *rest, *count;
    double expires;
    long long entry_id;
    if (!parts(value, &header, &rest, &count, &expires, &entry_id))
        return 0;
    if (*now < 0) {
        struct timespec ts;
        if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
            return 0;
        *now = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
    }
    if (expires <= *now) /* expired: Python drops it and answers anew */
        return 0;
    const unsigned char *zero = memchr(d + 12, 0, length - 12);
    if (zero == NULL)
        return 0;
    size_t qend = (size_t)(zero - d) + 5;
    size_t size = (size_t)PyBytes_GET_SIZE(rest);
    if (qend > length || size > SLOT - qend)
        return 0;
    /* count first: with no room to count it, Python answers (and counts) it */
    Hits *h = self->hits;
    KeyCount *k = key_slot(h, count);
    if (k == NULL)
        return 0;
    EntryCount *e = NULL;
    if (entry_id >= 0 && (e = entry_slot(h, entry_id)) == NULL)
        return 0;
    k->count++;
    if (e != NULL) {
        e->count++;
        e->last = *now;
    }
    h->total++;
    self->answered++;
    unsigned char *o = self->out + (size_t)self->queued * SLOT;
    memcpy(o, d, 2);
    memcpy(o + 2, PyBytes_AS_STRING(header), 10);
    memcpy(o + 12, d + 12, qend - 12);
    memcpy(o + qend, PyBytes_AS_STRING(rest), size);
    queue_slot(self, i, qend + size);
    return 1;
}

/* Read what is waiting; answer hits; None if nothing was, else [(i, bytes)] of the rest. */
static PyObject *
Udp_serve(Udp *self, PyObject *entries)
{
    if (!ready(self))
        return NULL;
    if (!PyDict_CheckExact(entries)) {
        PyErr_SetString(PyExc_TypeError, "serve(entries): the answer cache's dict");
        return NULL;
    }
    if (self->queued) { /* answers of a batch whose handling failed: never sent */
        self->dropped += self->queued;
        self->queued = 0;
    }
    for (unsigned int i = 0; i < self->size; i++) {
        self->msgs_in[i].msg_hdr.msg_name = self->names + (size_t)i * NAME;
        self->msgs_in[i].msg_hdr.msg_namelen = NAME;
        self->msgs_in[i].msg_hdr.msg_control = NULL;
        self->msgs_in[i].msg_hdr.msg_controllen = 0;
        self->msgs_in[i].msg_hdr.msg_flags = 0;
        self->msgs_in[i].msg_len = 0;
    }
    self->received = 0;
    int got = recvmmsg(self->fd, self->msgs_in, self->size, MSG_DONTWAIT, NULL);
    if (got < 0) {
        if (transient(errno))
            Py_RETURN_NONE;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    if (got == 0)
        Py_RETURN_NONE;
    if ((unsigned int)got > self->size)
        got = (int)self->size;
    self->received = (unsigned int)got;
    self->calls++;
    self->total += (unsigned int)got;
    PyObject *misses = PyList_New(0);
    if (misses == NULL)
        return NULL;
    double now = -1.0;
    for (unsigned int i = 0; i < (unsigned int)got; i++) {
        struct msghdr *h = &self->msgs_in[i].msg_hdr;
        size_t length = self->msgs_in[i].msg_len;
        if ((h->msg_flags & MSG_TRUNC) || length > SLOT || h->msg_namelen > NAME) {
            self->truncated++;
            continue;
        }
        int hit = answer_hit(self, entries, i, length, &now);
        if (hit < 0) {
            Py_DECREF(misses);
            self->queued = 0;
            return NULL;
        }
        if (hit)
            continue;
        unsigned char *d = self->in + (size_t)i * SLOT;
        PyObject *item = Py_BuildValue("(Iy#)", i, (const char *)d, (Py_ssize_t)length);
        if (item == NULL || PyList_Append(misses, item) < 0) {
            Py_XDECREF(item);
            Py_DECREF(misses);
            self->queued = 0;
            return NULL;
        }
        Py_DECREF(item);
        if (length > 4096) /* a large one (padding, an attack): give its pages back */
            madvise(d, SLOT, MADV_DONTNEED);
    }
    return misses;
}

/* Queue `answer` to datagram i; False if it does not fit a slot (send it on its own). */
static PyObject *
Udp_queue(Udp *self, PyObject *args)
{
    unsigned int i;
    Py_buffer answer;
    if (!ready(self) || !PyArg_ParseTuple(args, "Iy*:queue", &i, &answer))
        return NULL;
    if (i >= self->received || self->queued >= self->size) {
        PyBuffer_Release(&answer);
        PyErr_SetString(PyExc_IndexError, "no such datagram in this batch");
        return NULL;
    }
    if (answer.len > SLOT) {
        PyBuffer_Release(&answer);
        Py_RETURN_FALSE;
    }
    memcpy(self->out + (size_t)self->queued * SLOT, answer.buf, (size_t)answer.len);
    queue_slot(self, i, (size_t)answer.len);
    PyBuffer_Release(&answer);
    Py_RETURN_TRUE;
}

/* Send what is queued; an answer the socket refuses is dropped and the rest go on. */
static PyObject *
Udp_send(Udp *self, PyObject *Py_UNUSED(ignored))
{
    if (!ready(self))
        return NULL;
    unsigned int count = self->queued, done = 0;
    self->queued = 0;
    while (done < count) {
        int sent = sendmmsg(self->fd, self->msgs_out + done, count - done, MSG_DONTWAIT);
        if (sent > 0) {
            done += (unsigned int)sent;
            continue;
        }
        if (sent < 0 && !transient(errno))
            return PyErr_SetFromErrno(PyExc_OSError);
        self->dropped++;
        done++;
    }
    Py_RETURN_NONE;
}

/* The source address of datagram i, as the kernel wrote it (sockaddr_in or sockaddr_in6). */
static PyObject *
Udp_name(Udp *self, PyObject *arg)
{
    if (!ready(self))
        return NULL;
    unsigned long i = PyLong_AsUnsignedLong(arg);
    if (PyErr_Occurred())
        return NULL;
    if (i >= self->received) {
        PyErr_SetString(PyExc_IndexError, "no such datagram in this batch");
        return NULL;
    }
    socklen_t length = self->msgs_in[i].msg_hdr.msg_namelen;
    if (length > NAME)
        length = NAME;
    return PyBytes_FromStringAndSize((const char *)self->names + i * NAME, (Py_ssize_t)length);
}

static PyObject *
Udp_close(Udp *self, PyObject *Py_UNUSED(ignored))
{
    udp_free(self);
    Py_RETURN_NONE;
}

static PyObject *
Udp_stats(Udp *self, PyObject *Py_UNUSED(ignored))
{
    return Py_BuildValue("{sKsKsKsKsKsI}", "dropped", self->dropped, "truncated", self->truncated,
                         "calls", self->calls, "received", self->total, "hits", self->answered,
                         "last", self->received);
}

static PyMethodDef Udp_methods[] = {
    {"serve", (PyCFunction)Udp_serve, METH_O, "serve(entries): read, answer the hits; the rest"},
    {"queue", (PyCFunction)Udp_queue, METH_VARARGS, "queue(i, answer): send answer to datagram i"},
    {"send", (PyCFunction)Udp_send, METH_NOARGS, "send every queued answer"},
    {"name", (PyCFunction)Udp_name, METH_O, "name(i): datagram i's source address, raw"},
    {"stats", (PyCFunction)Udp_stats, METH_NOARGS, "counters"},
    {"close", (PyCFunction)Udp_close, METH_NOARGS, "give the buffers back"},
    {NULL}};

static PyMemberDef Udp_members[] = {
    {"last", T_UINT, offsetof(Udp, received), READONLY, "datagrams read by the last serve()"},
    {NULL}};

static PyTypeObject UdpType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "s25rbl.dns._fastpath.Udp",
    .tp_basicsize = sizeof(Udp),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Udp_init,
    .tp_dealloc = (destructor)Udp_dealloc,
    .tp_methods = Udp_methods,
    .tp_members = Udp_members,
    .tp_doc = "recvmmsg/sendmmsg on one socket, cached answers without Python.",
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fastpath", "Cached DNS answers over UDP in C.", -1, NULL,
};

PyMODINIT_FUNC
PyInit__fastpath(void)
{
    if (PyType_Ready(&HitsType) < 0 || PyType_Ready(&UdpType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddIntConstant(m, "MAX_REQUEST", MAX_REQUEST) < 0
        || PyModule_AddIntConstant(m, "ENTRY_SLOTS_MAX", ENTRY_SLOTS_MAX) < 0
        || PyModule_AddType(m, &HitsType) < 0 || PyModule_AddType(m, &UdpType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
