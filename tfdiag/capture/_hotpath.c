/* The timed-call wrapper's common case, compiled: why it exists and what it costs.

   On a small tf.function (about 90 us per call on one CPU here), the pure-Python wrapper of
   timed_calls.py cost about 9 us per call, most of it finding the call site again: each
   bytecode of ours costs about 20 ns amid TensorFlow's own Python (caches cold), and even
   the shortest Python path was over 400 of them. This module does the same work for the
   calls that repeat the previous one, in C: about 1 us per call (benchmarks/interleaved_cost.py:
   +0.9 us on that call, +2.3 us on a 0.16 ms training step, sampled calls included). Even in C
   the cost is cache misses, not instructions: each attribute looked up by name cost 100-300
   cycles here, so the fields read on every call are read at their offsets (``Layout``, ``eager``).

   ``HotCall(original, slow, capture, clock, tape_is_empty, settle, light_size[, frame_type,
   stack_type])`` is the callable put on ``Function.__call__`` (the two types: LightFrame and
   CallStack, whose fields it then reads and writes in place). A call goes the fast way when it
   repeats what ``arm`` was last told by the Python wrapper (``slow``) for its thread, target,
   caller code and bytecode offset (SLOTS of them at once): not nested in a timed call, no
   keyword arguments, arguments of the same kinds (an EagerTensor's type, shape and dtype
   enum; a plain value's type), the same training flag (gradient tape), no profiler gate,
   and the call site's sampling countdown not yet due. Such a call is kept in place exactly as
   the Python wrapper keeps it (timed_calls.py, ``weight == 2``): the thread's spare
   LightFrame on its stack, and (start, duration, stack) appended to the call site's
   ``light`` list, or, when the call traced or a hook gave it a record of its own, the
   Python ``touched(frame, now, fields)`` makes its record. Every other call goes to
   ``slow``, which may arm again. Nothing here decides anything the Python wrapper does not.

   ``Gate(original, slow, toggle)`` is a phase entry point that stays on its class (such as
   ``ConcreteFunction._call_flat``): while ``toggle.users`` is 0 (no sampled call open) it
   calls ``original`` directly, else ``slow`` (the Python phase wrapper).

   Both bind as methods (``tp_descr_get``) and pass their arguments through with vectorcall.
   If this module cannot be built, the Python wrapper does all of it (timed_calls.py). */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <frameobject.h>
#include <structmember.h>
#include <time.h>

static PyObject *s_spare, *s_target, *s_last, *s_start, *s_extra, *s_stack, *s_users,
    *s_gates, *s_shape_tuple, *s_datatype_enum, *s_remove, *s_tensor_shape, *s_dims;

/* ------------------------------------------------------------------ HotCall */

/* What a call kept in place was, per thread, target and calling line: the calls that repeat it
   are kept in place here. A few at once, so that a loop calling two tf.functions (a training and
   a test step), or threads calling one, each keep theirs. */
#define SLOTS 8

typedef struct {
    uint64_t thread; /* the thread state's id (a thread's ``get_ident`` may be reused by a later thread) */
    PyObject *frames, *target_ref, *code, *parts, *state, *light, *sink, *touched, *fields;
    int lasti, training;
} Armed;

/* Where a ``__slots__`` class keeps the fields this module reads and writes on every call kept in
   place: an instance of exactly that type is read and written at those offsets, as CPython's
   member descriptors do it, without an attribute lookup (each one a few cache misses amid
   TensorFlow's own code); any other object goes through ``getattr``/``setattr``. */
enum { F_TARGET, F_LAST, F_START, F_EXTRA, F_STACK, FRAME_FIELDS };
enum { F_SPARE, STACK_FIELDS };
#define MAX_FIELDS 5

typedef struct {
    PyTypeObject *type; /* a strong reference, or NULL: no direct access */
    PyObject **names;   /* the fields' names, by index (for any other object) */
    Py_ssize_t offset[MAX_FIELDS];
} Layout;

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *dict;
    PyObject *weakreflist;
    /* fixed */
    PyObject *original, *slow, *capture, *clock, *tape_is_empty, *settle;
    Layout frame_layout, stack_layout; /* LightFrame's fields; CallStack's ``spare`` */
    Py_ssize_t light_size;
    int monotonic; /* ``clock`` is time.perf_counter: read here, as it reads it (CLOCK_MONOTONIC) */
    Armed slots[SLOTS]; /* ``parts`` NULL: a free slot */
    int next_slot; /* the slot a new arming takes when none is this thread's and target's */
    /* counts, for tests and benchmarks */
    Py_ssize_t fast_calls;
} HotCall;

static void
slot_clear(Armed *slot)
{
    Py_CLEAR(slot->parts); /* first: the mark of a slot in use */
    Py_CLEAR(slot->frames);
    Py_CLEAR(slot->target_ref);
    Py_CLEAR(slot->code);
    Py_CLEAR(slot->state);
    Py_CLEAR(slot->light);
    Py_CLEAR(slot->sink);
    Py_CLEAR(slot->touched);
    Py_CLEAR(slot->fields);
}

static void
hot_disarm(HotCall *self)
{
    for (int index = 0; index < SLOTS; index++)
        slot_clear(&self->slots[index]);
}

static int
hot_traverse(HotCall *self, visitproc visit, void *arg)
{
    Py_VISIT(self->dict);
    Py_VISIT(self->original);
    Py_VISIT(self->slow);
    Py_VISIT(self->capture);
    Py_VISIT(self->clock);
    Py_VISIT(self->tape_is_empty);
    Py_VISIT(self->settle);
    Py_VISIT(self->frame_layout.type);
    Py_VISIT(self->stack_layout.type);
    for (int index = 0; index < SLOTS; index++) {
        Armed *slot = &self->slots[index];
        Py_VISIT(slot->frames);
        Py_VISIT(slot->target_ref);
        Py_VISIT(slot->code);
        Py_VISIT(slot->parts);
        Py_VISIT(slot->state);
        Py_VISIT(slot->light);
        Py_VISIT(slot->sink);
        Py_VISIT(slot->touched);
        Py_VISIT(slot->fields);
    }
    return 0;
}

static int
hot_clear(HotCall *self)
{
    Py_CLEAR(self->dict);
    Py_CLEAR(self->original);
    Py_CLEAR(self->slow);
    Py_CLEAR(self->capture);
    Py_CLEAR(self->clock);
    Py_CLEAR(self->tape_is_empty);
    Py_CLEAR(self->settle);
    Py_CLEAR(self->frame_layout.type);
    Py_CLEAR(self->stack_layout.type);
    hot_disarm(self);
    return 0;
}

/* Both types' dealloc: what their ``tp_clear`` drops, once no weak reference can reach them. */
static void
wrapper_dealloc(PyObject *self)
{
    PyObject_GC_UnTrack(self);
    PyObject_ClearWeakRefs(self);
    Py_TYPE(self)->tp_clear(self);
    Py_TYPE(self)->tp_free(self);
}

/* Whether the weak reference ``ref`` refers to ``obj``. */
static int
refers_to(PyObject *ref, PyObject *obj)
{
#if PY_VERSION_HEX >= 0x030D0000
    PyObject *referent = NULL;
    if (PyWeakref_GetRef(ref, &referent) < 0) {
        PyErr_Clear();
        return 0;
    }
    int same = referent == obj;
    Py_XDECREF(referent);
    return same;
#else
    return PyWeakref_GetObject(ref) == obj;
#endif
}

static PyObject *s_frame_names[FRAME_FIELDS], *s_stack_names[STACK_FIELDS];

/* 1 when ``descriptor`` is of kind ``kind`` and belongs to ``type`` or a base of it (what
   CPython checks before it reads an instance at a descriptor's offset). */
static int
descriptor_of(PyObject *descriptor, PyTypeObject *kind, PyTypeObject *type)
{
    return descriptor != NULL && Py_IS_TYPE(descriptor, kind)
           && PyType_IsSubtype(type, PyDescr_TYPE((PyDescrObject *)descriptor));
}

/* ``layout`` for ``type`` (None: none): each of ``names`` must be a writable object slot of its
   own (a member descriptor, as ``__slots__`` makes), else the type gets no direct access. */
static void
layout_init(Layout *layout, PyObject *type, PyObject **names, int count)
{
    Py_CLEAR(layout->type);
    layout->names = names;
    if (type == Py_None || !PyType_Check(type))
        return;
    for (int index = 0; index < count; index++) {
        PyObject *descriptor = PyObject_GetAttr(type, names[index]);
        if (descriptor == NULL) {
            PyErr_Clear();
            return;
        }
        int usable = descriptor_of(descriptor, &PyMemberDescr_Type, (PyTypeObject *)type);
        if (usable) {
            PyMemberDef *member = ((PyMemberDescrObject *)descriptor)->d_member;
            usable = member->type == T_OBJECT_EX && !(member->flags & READONLY);
            layout->offset[index] = member->offset;
        }
        Py_DECREF(descriptor);
        if (!usable)
            return;
    }
    layout->type = (PyTypeObject *)Py_NewRef(type);
}

/* ``obj.<field>`` (a new reference; NULL with an error set). */
static PyObject *
get_field(Layout *layout, PyObject *obj, int field)
{
    if (layout->type == NULL || Py_TYPE(obj) != layout->type)
        return PyObject_GetAttr(obj, layout->names[field]);
    PyObject *value = *(PyObject **)((char *)obj + layout->offset[field]);
    if (value == NULL) {
        PyErr_SetObject(PyExc_AttributeError, layout->names[field]);
        return NULL;
    }
    return Py_NewRef(value);
}

/* ``obj.<field> = value``: 0, or -1 with an error set. */
static int
set_field(Layout *layout, PyObject *obj, int field, PyObject *value)
{
    if (layout->type == NULL || Py_TYPE(obj) != layout->type)
        return PyObject_SetAttr(obj, layout->names[field], value);
    PyObject **address = (PyObject **)((char *)obj + layout->offset[field]);
    PyObject *old = *address;
    *address = Py_NewRef(value);
    Py_XDECREF(old);
    return 0;
}

/* The calling Python frame's code (a new reference) and bytecode offset (as ``f_lasti``). */
static PyCodeObject *
caller_code(int *lasti)
{
    PyFrameObject *frame = PyEval_GetFrame();
    if (frame == NULL)
        return NULL;
#if PY_VERSION_HEX >= 0x030B0000
    *lasti = PyFrame_GetLasti(frame);
#else
    {
        PyObject *value = PyObject_GetAttrString((PyObject *)frame, "f_lasti");
        if (value == NULL) {
            PyErr_Clear();
            return NULL;
        }
        *lasti = (int)PyLong_AsLong(value);
        Py_DECREF(value);
    }
#endif
    return PyFrame_GetCode(frame);
}

/* How an EagerTensor's shape and dtype are read, found once from its type (``tensor``): its
   ``_tensor_shape`` getter (the TensorShape TensorFlow caches on the tensor: every tf.function
   call reads ``.shape`` to find the call's concrete function), that TensorShape's ``_dims`` slot,
   and its ``_datatype_enum`` method, each called or read directly, as the attribute lookup would
   find them (no lookup: a few cache misses each amid TensorFlow's own code). ``state``: 0 not
   looked at yet, 1 found, -1 not found (then, and for any other type, the attributes are looked
   up by name). Where the tensor has no cached TensorShape yet, ``_shape_tuple()`` builds the
   tuple (a call into TensorFlow's C++: several times slower). */
static struct {
    int state;
    PyTypeObject *tensor, *shape;
    getter shape_get;
    void *shape_closure;
    Py_ssize_t dims_offset;
    PyCFunction dtype_enum;
} eager;

static void
eager_init(PyTypeObject *tensor, PyObject *cached)
{
    eager.state = -1;
    PyObject *getset = PyObject_GetAttr((PyObject *)tensor, s_tensor_shape);
    PyErr_Clear();
    PyObject *method = PyObject_GetAttr((PyObject *)tensor, s_datatype_enum);
    PyErr_Clear();
    PyObject *dims = PyObject_GetAttr((PyObject *)Py_TYPE(cached), s_dims);
    PyErr_Clear();
    if (descriptor_of(getset, &PyGetSetDescr_Type, tensor) && descriptor_of(method, &PyMethodDescr_Type, tensor)
        && descriptor_of(dims, &PyMemberDescr_Type, Py_TYPE(cached))) {
        PyGetSetDef *def = ((PyGetSetDescrObject *)getset)->d_getset;
        PyMethodDef *meth = ((PyMethodDescrObject *)method)->d_method;
        PyMemberDef *member = ((PyMemberDescrObject *)dims)->d_member;
        if (def->get != NULL && (meth->ml_flags & (METH_NOARGS | METH_VARARGS | METH_KEYWORDS | METH_O
                                                   | METH_FASTCALL)) == METH_NOARGS
            && member->type == T_OBJECT_EX) {
            eager.tensor = (PyTypeObject *)Py_NewRef(tensor);
            eager.shape = (PyTypeObject *)Py_NewRef(Py_TYPE(cached));
            eager.shape_get = def->get;
            eager.shape_closure = def->closure;
            eager.dims_offset = member->offset;
            eager.dtype_enum = meth->ml_meth;
            eager.state = 1;
        }
    }
    Py_XDECREF(getset);
    Py_XDECREF(method);
    Py_XDECREF(dims);
}

/* An EagerTensor's shape as a tuple (a new reference), or NULL (an error set). */
static PyObject *
shape_of(PyObject *value)
{
    int direct = eager.state == 1 && Py_TYPE(value) == eager.tensor;
    PyObject *cached = direct ? eager.shape_get(value, eager.shape_closure) : PyObject_GetAttr(value, s_tensor_shape);
    if (cached == NULL)
        PyErr_Clear();
    else if (cached != Py_None) {
        if (eager.state == 0)
            eager_init(Py_TYPE(value), cached);
        PyObject *dims;
        if (eager.state == 1 && Py_TYPE(cached) == eager.shape) {
            dims = *(PyObject **)((char *)cached + eager.dims_offset);
            Py_XINCREF(dims);
        }
        else
            dims = PyObject_GetAttr(cached, s_dims);
        Py_DECREF(cached);
        if (dims != NULL && PyTuple_CheckExact(dims))
            return dims;
        Py_XDECREF(dims);
        PyErr_Clear();
    }
    else
        Py_DECREF(cached);
    return PyObject_CallMethodNoArgs(value, s_shape_tuple);
}

/* An EagerTensor's dtype enum (a new reference), or NULL (an error set). */
static PyObject *
dtype_of(PyObject *value)
{
    if (eager.state == 1 && Py_TYPE(value) == eager.tensor)
        return eager.dtype_enum(value, NULL);
    return PyObject_CallMethodNoArgs(value, s_datatype_enum);
}

/* 1: ``value`` is of the kind ``part`` says (a type: that exact type; a tuple (type, shape tuple,
   dtype enum): an EagerTensor of that shape and dtype); 0: not; -1: an error (cleared). */
static int
same_kind(PyObject *value, PyObject *part)
{
    if (PyType_Check(part))
        return (PyObject *)Py_TYPE(value) == part;
    if (!PyTuple_Check(part) || PyTuple_GET_SIZE(part) != 3)
        return 0;
    if ((PyObject *)Py_TYPE(value) != PyTuple_GET_ITEM(part, 0))
        return 0;
    PyObject *shape = shape_of(value);
    if (shape == NULL) {
        PyErr_Clear();
        return -1;
    }
    int same = PyObject_RichCompareBool(shape, PyTuple_GET_ITEM(part, 1), Py_EQ);
    Py_DECREF(shape);
    if (same != 1) {
        if (same < 0)
            PyErr_Clear();
        return same;
    }
    PyObject *dtype = dtype_of(value);
    if (dtype == NULL) {
        PyErr_Clear();
        return -1;
    }
    same = PyObject_RichCompareBool(dtype, PyTuple_GET_ITEM(part, 2), Py_EQ);
    Py_DECREF(dtype);
    if (same < 0)
        PyErr_Clear();
    return same;
}

/* What a call kept in place here uses of the slot it repeats, held from the moment it is
   matched: from then on Python code may run (a garbage collection's callbacks, the user's call,
   which releases the GIL), and another thread may arm that slot again meanwhile. */
typedef struct {
    PyObject *parts, *state, *frames, *light, *sink, *touched, *fields;
    int training;
} Kept;

static void
keep(Armed *slot, Kept *kept)
{
    kept->parts = Py_NewRef(slot->parts);
    kept->state = Py_NewRef(slot->state);
    kept->frames = Py_NewRef(slot->frames);
    kept->light = Py_NewRef(slot->light);
    kept->sink = Py_NewRef(slot->sink);
    kept->touched = Py_NewRef(slot->touched);
    kept->fields = Py_NewRef(slot->fields);
    kept->training = slot->training;
}

static void
let_go(Kept *kept)
{
    Py_DECREF(kept->parts);
    Py_DECREF(kept->state);
    Py_DECREF(kept->frames);
    Py_DECREF(kept->light);
    Py_DECREF(kept->sink);
    Py_DECREF(kept->touched);
    Py_DECREF(kept->fields);
}

/* 1 when this call repeats an armed slot (see the module's comment): ``kept`` then holds that
   slot; else 0 (errors cleared, nothing held). */
static int
repeats(HotCall *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, Kept *kept)
{
    if (kwnames != NULL && PyTuple_GET_SIZE(kwnames))
        return 0;
    int lasti = -1;
    PyCodeObject *code = caller_code(&lasti);
    if (code == NULL)
        return 0;
    Py_DECREF(code); /* only its identity is compared: an armed slot holds a reference */
    uint64_t thread = PyThreadState_GetID(PyThreadState_Get());
    Armed *slot = NULL;
    for (int index = 0; index < SLOTS && slot == NULL; index++) { /* no Python code runs here */
        Armed *candidate = &self->slots[index];
        if (candidate->parts != NULL && candidate->thread == thread && candidate->code == (PyObject *)code
            && candidate->lasti == lasti && refers_to(candidate->target_ref, args[0]))
            slot = candidate;
    }
    if (slot == NULL)
        return 0;
    keep(slot, kept);
    if (nargs - 1 != PyTuple_GET_SIZE(kept->parts))
        goto differs;
    PyObject *gates = PyObject_GetAttr(self->capture, s_gates);
    if (gates == NULL)
        goto differs;
    int busy = PyObject_IsTrue(gates);
    Py_DECREF(gates);
    if (busy != 0)
        goto differs;
    for (Py_ssize_t index = 0; index < nargs - 1; index++) {
        if (same_kind(args[index + 1], PyTuple_GET_ITEM(kept->parts, index)) != 1)
            goto differs;
    }
    PyObject *empty = PyObject_CallNoArgs(self->tape_is_empty);
    if (empty == NULL)
        goto differs;
    int outside_tape = PyObject_IsTrue(empty);
    Py_DECREF(empty);
    if (outside_tape < 0 || (!outside_tape) != kept->training)
        goto differs;
    return 1;
differs:
    PyErr_Clear();
    let_go(kept);
    return 0;
}

/* The call site's sampling countdown, counted down in place (sampling.py): 1 when this call is
   not sampled, 0 when it is due (the Python wrapper takes it). */
static int
count_down(Kept *kept)
{
    if (!PyList_Check(kept->state) || PyList_GET_SIZE(kept->state) < 1)
        return 0;
    long left = PyLong_AsLong(PyList_GET_ITEM(kept->state, 0));
    if (left == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    if (left - 1 <= 0)
        return 0;
    PyObject *value = PyLong_FromLong(left - 1);
    if (value == NULL) {
        PyErr_Clear();
        return 0;
    }
    PyList_SetItem(kept->state, 0, value); /* steals the reference */
    return 1;
}

/* The frame off the thread's stack (it may not be on top: a hook's frame left above it). */
static int
pop_frame(PyObject *frames, PyObject *frame)
{
    Py_ssize_t size = PyList_GET_SIZE(frames);
    if (size > 0 && PyList_GET_ITEM(frames, size - 1) == frame)
        return PyList_SetSlice(frames, size - 1, size, NULL);
    int present = PySequence_Contains(frames, frame);
    if (present <= 0)
        return present;
    PyObject *done = PyObject_CallMethodOneArg(frames, s_remove, frame);
    if (done == NULL)
        return -1;
    Py_DECREF(done);
    return 0;
}

/* 1 when the call left the frame as it found it: no record of its own (``extra``), no phase
   switch (each sets ``last``: while it is still the start's object, no time was charged) and
   its stack at rest. */
static int
left_untouched(HotCall *self, PyObject *frame, PyObject *start)
{
    Layout *layout = &self->frame_layout;
    PyObject *value = get_field(layout, frame, F_EXTRA);
    if (value == NULL)
        return -1;
    int untouched = value == Py_None;
    Py_DECREF(value);
    if (!untouched)
        return 0;
    value = get_field(layout, frame, F_LAST);
    if (value == NULL)
        return -1;
    untouched = value == start;
    Py_DECREF(value);
    if (!untouched)
        return 0;
    value = get_field(layout, frame, F_STACK);
    if (value == NULL)
        return -1;
    untouched = PyList_Check(value) && PyList_GET_SIZE(value) == 1;
    Py_DECREF(value);
    return untouched;
}

/* ``clock()``: time.perf_counter's value, computed as it computes it on Linux, without the call;
   an injected clock (tests) is called. */
static PyObject *
read_clock(HotCall *self)
{
#if defined(CLOCK_MONOTONIC) && defined(__linux__)
    if (self->monotonic) {
        struct timespec ts;
        if (clock_gettime(CLOCK_MONOTONIC, &ts) == 0) {
            long long ns = (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
            double seconds = ns % 1000000000LL == 0 ? (double)(ns / 1000000000LL) : (double)ns / 1e9;
            return PyFloat_FromDouble(seconds);
        }
    }
#endif
    return PyObject_CallNoArgs(self->clock);
}

/* What the Python wrapper does after an unsampled call kept in place (timed_calls.py): 0, or -1
   when an exception that is not an ``Exception`` (KeyboardInterrupt) came up in its Python parts
   (``settle``, ``touched``): it is left set, for the caller to raise. Any other error of ours is
   cleared: the user's call has returned already. The frame comes off the stack whatever happens. */
static int
finish(HotCall *self, Kept *kept, PyObject *frame, PyObject *start)
{
    PyObject *now = read_clock(self);
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback); /* a failed clock read: the frame still comes off first */
    int failed = pop_frame(kept->frames, frame) < 0
                 || set_field(&self->frame_layout, frame, F_TARGET, Py_None) < 0;
    if (type != NULL)
        PyErr_Restore(type, value, traceback);
    if (failed || now == NULL)
        goto error;
    int untouched = left_untouched(self, frame, start);
    if (untouched < 0)
        goto error;
    if (untouched) {
        PyObject *duration = PyFloat_FromDouble(PyFloat_AsDouble(now) - PyFloat_AsDouble(start));
        if (duration == NULL)
            goto error;
        Py_ssize_t size = PyList_GET_SIZE(kept->light);
        int appended = PyList_Append(kept->light, start) == 0 && PyList_Append(kept->light, duration) == 0
                       && PyList_Append(kept->light, kept->frames) == 0;
        Py_DECREF(duration);
        if (!appended) { /* never a part of an entry: ``add_light`` reads them three by three */
            PyObject *saved_type, *saved_value, *saved_traceback;
            PyErr_Fetch(&saved_type, &saved_value, &saved_traceback);
            PyList_SetSlice(kept->light, size, PyList_GET_SIZE(kept->light), NULL);
            PyErr_Restore(saved_type, saved_value, saved_traceback);
            goto error;
        }
        if (set_field(&self->stack_layout, kept->frames, F_SPARE, frame) < 0)
            goto error;
        if (PyList_GET_SIZE(kept->light) >= self->light_size) {
            PyObject *done = PyObject_CallOneArg(self->settle, kept->sink);
            if (done == NULL)
                goto error;
            Py_DECREF(done);
        }
    }
    else {
        PyObject *done = PyObject_CallFunctionObjArgs(kept->touched, frame, now, kept->fields, NULL);
        if (done == NULL)
            goto error;
        Py_DECREF(done);
    }
    Py_DECREF(now);
    return 0;
error:
    Py_XDECREF(now);
    if (PyErr_Occurred() && !PyErr_ExceptionMatches(PyExc_Exception))
        return -1;
    PyErr_Clear();
    return 0;
}

static PyObject *
hot_vectorcall(HotCall *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    Kept kept;
    if (nargs < 1 || !repeats(self, args, nargs, kwnames, &kept))
        return PyObject_Vectorcall(self->slow, args, nargsf, kwnames);
    PyObject *result;
    if (PyList_GET_SIZE(kept.frames) > 0) { /* nested in a timed call: part of it */
        let_go(&kept);
        return PyObject_Vectorcall(self->original, args, nargsf, kwnames);
    }
    PyObject *frame = get_field(&self->stack_layout, kept.frames, F_SPARE);
    if (frame == NULL)
        PyErr_Clear();
    if (frame == NULL || frame == Py_None || !count_down(&kept)) {
        Py_XDECREF(frame);
        let_go(&kept);
        return PyObject_Vectorcall(self->slow, args, nargsf, kwnames);
    }
    PyObject *start = read_clock(self);
    Layout *layout = &self->frame_layout;
    if (start == NULL || set_field(&self->stack_layout, kept.frames, F_SPARE, Py_None) < 0
        || set_field(layout, frame, F_TARGET, args[0]) < 0
        || set_field(layout, frame, F_LAST, start) < 0
        || set_field(layout, frame, F_START, start) < 0 || PyList_Append(kept.frames, frame) < 0) {
        PyErr_Clear();
        Py_XDECREF(start);
        Py_DECREF(frame);
        let_go(&kept);
        return PyObject_Vectorcall(self->original, args, nargsf, kwnames); /* untimed, never broken */
    }
    self->fast_calls++;
    result = PyObject_Vectorcall(self->original, args, nargsf, kwnames);
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    if (finish(self, &kept, frame, start) < 0) { /* an interrupt in our bookkeeping: it wins, as in Python */
        Py_XDECREF(result);
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(traceback);
        result = NULL;
    }
    else
        PyErr_Restore(type, value, traceback);
    Py_DECREF(start);
    Py_DECREF(frame);
    let_go(&kept);
    return result;
}

static int
hot_init(HotCall *self, PyObject *args, PyObject *kwargs)
{
    PyObject *original, *slow, *capture, *clock, *tape_is_empty, *settle, *frame_type = Py_None,
        *stack_type = Py_None;
    Py_ssize_t light_size;
    if (!PyArg_ParseTuple(args, "OOOOOOn|OO", &original, &slow, &capture, &clock, &tape_is_empty, &settle,
                          &light_size, &frame_type, &stack_type))
        return -1;
    hot_clear(self);
    self->original = Py_NewRef(original);
    self->slow = Py_NewRef(slow);
    self->capture = Py_NewRef(capture);
    self->clock = Py_NewRef(clock);
    self->tape_is_empty = Py_NewRef(tape_is_empty);
    self->settle = Py_NewRef(settle);
    self->light_size = light_size;
    layout_init(&self->frame_layout, frame_type, s_frame_names, FRAME_FIELDS);
    layout_init(&self->stack_layout, stack_type, s_stack_names, STACK_FIELDS);
    self->monotonic = 0;
    PyObject *time = PyImport_ImportModule("time");
    if (time == NULL)
        return -1;
    PyObject *perf_counter = PyObject_GetAttrString(time, "perf_counter");
    Py_DECREF(time);
    if (perf_counter == NULL)
        return -1;
    self->monotonic = clock == perf_counter;
    Py_DECREF(perf_counter);
    self->vectorcall = (vectorcallfunc)hot_vectorcall;
    return 0;
}

static PyObject *
hot_arm(HotCall *self, PyObject *args)
{
    PyObject *frames, *target, *code, *parts, *state, *light, *sink, *touched, *fields;
    int lasti, training;
    uint64_t thread = PyThreadState_GetID(PyThreadState_Get()); /* arm is called by the calling thread */
    if (!PyArg_ParseTuple(args, "OOOiO!pO!O!OOO!", &frames, &target, &code, &lasti, &PyTuple_Type,
                          &parts, &training, &PyList_Type, &state, &PyList_Type, &light, &sink, &touched,
                          &PyTuple_Type, &fields))
        return NULL;
    if (!PyList_Check(frames)) {
        PyErr_SetString(PyExc_TypeError, "frames must be a list");
        return NULL;
    }
    PyObject *target_ref = PyWeakref_NewRef(target, NULL);
    if (target_ref == NULL)
        return NULL;
    Armed *slot = NULL;
    for (int index = 0; index < SLOTS && slot == NULL; index++) {
        Armed *candidate = &self->slots[index];
        if (candidate->parts != NULL && candidate->thread == thread && candidate->code == code
            && candidate->lasti == lasti && refers_to(candidate->target_ref, target))
            slot = candidate;
    }
    if (slot == NULL) {
        slot = &self->slots[self->next_slot];
        self->next_slot = (self->next_slot + 1) % SLOTS;
    }
    slot_clear(slot);
    slot->thread = thread;
    slot->frames = Py_NewRef(frames);
    slot->target_ref = target_ref;
    slot->code = Py_NewRef(code);
    slot->lasti = lasti;
    slot->training = training;
    slot->state = Py_NewRef(state);
    slot->light = Py_NewRef(light);
    slot->sink = Py_NewRef(sink);
    slot->touched = Py_NewRef(touched);
    slot->fields = Py_NewRef(fields);
    slot->parts = Py_NewRef(parts); /* last: the slot is in use from now on */
    Py_RETURN_NONE;
}

static PyObject *
hot_disarm_method(HotCall *self, PyObject *Py_UNUSED(ignored))
{
    hot_disarm(self);
    Py_RETURN_NONE;
}

static PyObject *
hot_armed(HotCall *self, void *Py_UNUSED(closure))
{
    for (int index = 0; index < SLOTS; index++) {
        if (self->slots[index].parts != NULL)
            Py_RETURN_TRUE;
    }
    Py_RETURN_FALSE;
}

static PyObject *
bind(PyObject *self, PyObject *obj, PyObject *Py_UNUSED(type))
{
    if (obj == NULL || obj == Py_None)
        return Py_NewRef(self);
    return PyMethod_New(self, obj);
}

static PyMethodDef hot_methods[] = {
    {"arm", (PyCFunction)hot_arm, METH_VARARGS,
     "arm(frames, target, code, lasti, parts, training, state, light, sink, touched, fields), from the "
     "calling thread: "
     "calls that repeat this one are kept in place here."},
    {"disarm", (PyCFunction)hot_disarm_method, METH_NOARGS, "every call goes to the Python wrapper."},
    {NULL}
};

static PyMemberDef hot_members[] = {
    {"fast_calls", T_PYSSIZET, offsetof(HotCall, fast_calls), READONLY, "calls kept in place here"},
    {"__wrapped__", T_OBJECT, offsetof(HotCall, original), READONLY, "the wrapped function"},
    {NULL}
};

static PyGetSetDef hot_getset[] = {
    {"armed", (getter)hot_armed, NULL, "whether calls can be kept in place here", NULL},
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL, NULL},
    {NULL}
};

static PyTypeObject HotCallType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tfdiag.capture._hotpath.HotCall",
    .tp_basicsize = sizeof(HotCall),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_METHOD_DESCRIPTOR,
    .tp_doc = "The timed-call wrapper's common case (see the module's comment).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)hot_init,
    .tp_dealloc = wrapper_dealloc,
    .tp_traverse = (traverseproc)hot_traverse,
    .tp_clear = (inquiry)hot_clear,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(HotCall, vectorcall),
    .tp_descr_get = bind,
    .tp_dictoffset = offsetof(HotCall, dict),
    .tp_weaklistoffset = offsetof(HotCall, weakreflist),
    .tp_methods = hot_methods,
    .tp_members = hot_members,
    .tp_getset = hot_getset,
};

/* ------------------------------------------------------------------ Gate */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *dict;
    PyObject *weakreflist;
    PyObject *original, *slow, *toggle;
} Gate;

static int
gate_traverse(Gate *self, visitproc visit, void *arg)
{
    Py_VISIT(self->dict);
    Py_VISIT(self->original);
    Py_VISIT(self->slow);
    Py_VISIT(self->toggle);
    return 0;
}

static int
gate_clear(Gate *self)
{
    Py_CLEAR(self->dict);
    Py_CLEAR(self->original);
    Py_CLEAR(self->slow);
    Py_CLEAR(self->toggle);
    return 0;
}

static PyObject *
gate_vectorcall(Gate *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    PyObject *users = PyObject_GetAttr(self->toggle, s_users);
    if (users == NULL) {
        PyErr_Clear();
        return PyObject_Vectorcall(self->slow, args, nargsf, kwnames);
    }
    int busy = PyObject_IsTrue(users);
    Py_DECREF(users);
    if (busy == 0)
        return PyObject_Vectorcall(self->original, args, nargsf, kwnames);
    if (busy < 0)
        PyErr_Clear();
    return PyObject_Vectorcall(self->slow, args, nargsf, kwnames);
}

static int
gate_init(Gate *self, PyObject *args, PyObject *kwargs)
{
    PyObject *original, *slow, *toggle;
    if (!PyArg_ParseTuple(args, "OOO", &original, &slow, &toggle))
        return -1;
    gate_clear(self);
    self->original = Py_NewRef(original);
    self->slow = Py_NewRef(slow);
    self->toggle = Py_NewRef(toggle);
    self->vectorcall = (vectorcallfunc)gate_vectorcall;
    return 0;
}

static PyMemberDef gate_members[] = {
    {"__wrapped__", T_OBJECT, offsetof(Gate, original), READONLY, "the wrapped function"},
    {NULL}
};

static PyGetSetDef gate_getset[] = {
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL, NULL},
    {NULL}
};

static PyTypeObject GateType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tfdiag.capture._hotpath.Gate",
    .tp_basicsize = sizeof(Gate),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_METHOD_DESCRIPTOR,
    .tp_doc = "A phase entry point's pass-through while no sampled call is open (see the module's comment).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)gate_init,
    .tp_dealloc = wrapper_dealloc,
    .tp_traverse = (traverseproc)gate_traverse,
    .tp_clear = (inquiry)gate_clear,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Gate, vectorcall),
    .tp_descr_get = bind,
    .tp_dictoffset = offsetof(Gate, dict),
    .tp_weaklistoffset = offsetof(Gate, weakreflist),
    .tp_members = gate_members,
    .tp_getset = gate_getset,
};

/* ------------------------------------------------------------------ module */

static struct PyModuleDef hotpath_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "tfdiag.capture._hotpath",
    .m_doc = "The timed-call wrapper's common case, compiled (see _hotpath.c).",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__hotpath(void)
{
    struct { PyObject **name; const char *text; } names[] = {
        {&s_spare, "spare"}, {&s_target, "target"}, {&s_last, "last"}, {&s_start, "start"},
        {&s_extra, "extra"}, {&s_stack, "stack"}, {&s_users, "users"},
        {&s_gates, "gates"}, {&s_shape_tuple, "_shape_tuple"}, {&s_datatype_enum, "_datatype_enum"},
        {&s_remove, "remove"}, {&s_tensor_shape, "_tensor_shape"}, {&s_dims, "_dims"},
    };
    for (size_t index = 0; index < sizeof(names) / sizeof(names[0]); index++) {
        if (*names[index].name == NULL && (*names[index].name = PyUnicode_InternFromString(names[index].text)) == NULL)
            return NULL;
    }
    PyObject *frame_names[FRAME_FIELDS] = {s_target, s_last, s_start, s_extra, s_stack};
    memcpy(s_frame_names, frame_names, sizeof frame_names);
    s_stack_names[F_SPARE] = s_spare;
    if (PyType_Ready(&HotCallType) < 0 || PyType_Ready(&GateType) < 0)
        return NULL;
    PyObject *module = PyModule_Create(&hotpath_module);
    if (module == NULL)
        return NULL;
    if (PyModule_AddObjectRef(module, "HotCall", (PyObject *)&HotCallType) < 0
        || PyModule_AddObjectRef(module, "Gate", (PyObject *)&GateType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
