"""dstack_ctypes.py - the public libdstack API (include/dstack.h) from Python.

Just enough of it for the oracle tests: create a context, register a model
(zoo, ONNX file or ONNX bytes), run one request through dstack_submit and
dstack_poll, read dstack_model_info. The struct layouts mirror dstack.h; the
test compares their sizes with the C compiler's (dstack_export --sizes).
"""
import ctypes as C
import os

import numpy as np

MAX_IO = 16
MAX_RANK = 8
NAME_LEN = 64

BACKEND_CPU = 1
BACKEND_CUDA = 2
SOURCE_ONNX_FILE = 1
SOURCE_ONNX_BYTES = 2
SOURCE_ZOO = 3


class Options(C.Structure):
    _fields_ = [("struct_size", C.c_size_t), ("backend", C.c_int), ("device", C.c_int),
                ("partitioning", C.c_int), ("policy", C.c_int),
                ("queue_capacity", C.c_uint32), ("cpu_threads", C.c_uint32),
                ("sim_sm_count", C.c_uint32), ("max_model_memory_bytes", C.c_uint64),
                ("max_request_ops", C.c_uint64),
                ("log_fn", C.c_void_p), ("log_user", C.c_void_p), ("log_level", C.c_int),
                ("profile_cache_dir", C.c_char_p)]


class ModelDesc(C.Structure):
    _fields_ = [("struct_size", C.c_size_t), ("source", C.c_int), ("path", C.c_char_p),
                ("bytes", C.c_void_p), ("n_bytes", C.c_size_t), ("name", C.c_char_p),
                ("slo_us", C.c_uint64), ("max_batch", C.c_uint32),
                ("fixed_sm_count", C.c_uint32), ("fixed_batch", C.c_uint32),
                ("precision", C.c_int), ("seed", C.c_uint64), ("zoo_image_size", C.c_uint32),
                ("zoo_classes", C.c_uint32)]


class TensorInfo(C.Structure):
    _fields_ = [("name", C.c_char * NAME_LEN), ("rank", C.c_uint32),
                ("dims", C.c_int64 * MAX_RANK), ("bytes", C.c_size_t)]


class ModelInfo(C.Structure):
    _fields_ = [("struct_size", C.c_size_t), ("name", C.c_char * NAME_LEN),
                ("n_inputs", C.c_uint32), ("n_outputs", C.c_uint32),
                ("inputs", TensorInfo * MAX_IO), ("outputs", TensorInfo * MAX_IO),
                ("param_count", C.c_uint64), ("flops_per_request", C.c_uint64),
                ("max_batch", C.c_uint32), ("batch_size", C.c_uint32), ("sm_count", C.c_uint32),
                ("predicted_latency_us", C.c_uint64), ("slo_us", C.c_uint64),
                ("precision", C.c_int), ("batchable", C.c_uint32)]


class Buffer(C.Structure):
    _fields_ = [("data", C.c_void_p), ("bytes", C.c_size_t)]


class Request(C.Structure):
    _fields_ = [("struct_size", C.c_size_t), ("inputs", C.POINTER(Buffer)),
                ("n_inputs", C.c_uint32), ("outputs", C.POINTER(Buffer)),
                ("n_outputs", C.c_uint32), ("user_data", C.c_void_p),
                ("deadline_ns", C.c_uint64), ("n_samples", C.c_uint32)]


class Completion(C.Structure):
    _fields_ = [("ticket", C.c_uint64), ("user_data", C.c_void_p), ("model", C.c_void_p),
                ("status", C.c_int), ("batch_size", C.c_uint32), ("submit_ns", C.c_uint64),
                ("start_ns", C.c_uint64), ("end_ns", C.c_uint64), ("deadline_ns", C.c_uint64)]


STRUCT_SIZES = {"options": Options, "model_desc": ModelDesc, "model_info": ModelInfo,
                "request": Request, "completion": Completion}


class DstackError(RuntimeError):
    def __init__(self, call, status, message):
        super().__init__(f"{call}: status {status}: {message}")
        self.status = status


class Library:
    def __init__(self, libdir):
        self.lib = C.CDLL(os.path.join(libdir, "libdstack.so"))
        L = self.lib
        L.dstack_last_error.restype = C.c_char_p
        L.dstack_create.argtypes = [C.POINTER(Options), C.POINTER(C.c_void_p)]
        L.dstack_destroy.argtypes = [C.c_void_p]
        L.dstack_register_model.argtypes = [C.c_void_p, C.POINTER(ModelDesc),
                                            C.POINTER(C.c_void_p)]
        L.dstack_unregister_model.argtypes = [C.c_void_p, C.c_void_p]
        L.dstack_model_info_get.argtypes = [C.c_void_p, C.c_void_p, C.POINTER(ModelInfo)]
        L.dstack_submit.argtypes = [C.c_void_p, C.c_void_p, C.POINTER(Request),
                                    C.POINTER(C.c_uint64)]
        L.dstack_poll.argtypes = [C.c_void_p, C.POINTER(Completion), C.c_size_t, C.c_int64,
                                  C.POINTER(C.c_size_t)]

    def check(self, call, status):
        if status != 0:
            raise DstackError(call, status, self.lib.dstack_last_error().decode())


class Context:
    def __init__(self, lib, backend=BACKEND_CPU):
        self.L = lib
        o = Options()
        lib.lib.dstack_options_init(C.byref(o))
        o.backend = backend
        self.ctx = C.c_void_p()
        lib.check("dstack_create", lib.lib.dstack_create(C.byref(o), C.byref(self.ctx)))

    def close(self):
        if self.ctx:
            self.L.lib.dstack_destroy(self.ctx)
            self.ctx = C.c_void_p()

    def register(self, source, path=None, data=None, seed=0, image_size=224, classes=1000,
                 max_batch=1):
        d = ModelDesc()
        self.L.lib.dstack_model_desc_init(C.byref(d))
        d.source = source
        d.max_batch = max_batch
        keep = None
        if path is not None:
            d.path = path.encode()
        if data is not None:
            keep = C.create_string_buffer(data, len(data))
            d.bytes = C.cast(keep, C.c_void_p)
            d.n_bytes = len(data)
        d.seed = seed
        d.zoo_image_size = image_size
        d.zoo_classes = classes
        m = C.c_void_p()
        self.L.check("dstack_register_model",
                     self.L.lib.dstack_register_model(self.ctx, C.byref(d), C.byref(m)))
        return Model(self, m)


class Model:
    def __init__(self, ctx, handle):
        self.ctx = ctx
        self.m = handle
        self.info = ModelInfo()
        L = ctx.L
        L.lib.dstack_model_info_init(C.byref(self.info))
        L.check("dstack_model_info_get",
                L.lib.dstack_model_info_get(ctx.ctx, self.m, C.byref(self.info)))

    def shapes(self, which):
        tis = self.info.inputs if which == "in" else self.info.outputs
        n = self.info.n_inputs if which == "in" else self.info.n_outputs
        return [tuple(tis[i].dims[:tis[i].rank]) for i in range(n)]

    def run(self, inputs, samples=1):
        """One request of `samples` samples (dstack_request.n_samples); inputs
        are float32 arrays in model order, each holding `samples` consecutive
        samples. The outputs have dims[0] = samples x the per-sample dims[0]."""
        L = self.ctx.L
        ins = [np.ascontiguousarray(x, dtype=np.float32) for x in inputs]
        outs = [np.zeros((samples * s[0],) + tuple(s[1:]) if s else s, dtype=np.float32)
                for s in self.shapes("out")]
        in_bufs = (Buffer * len(ins))(*[Buffer(x.ctypes.data, x.nbytes) for x in ins])
        out_bufs = (Buffer * len(outs))(*[Buffer(y.ctypes.data, y.nbytes) for y in outs])
        r = Request()
        L.lib.dstack_request_init(C.byref(r))
        r.inputs = in_bufs
        r.n_inputs = len(ins)
        r.outputs = out_bufs
        r.n_outputs = len(outs)
        r.n_samples = samples
        t = C.c_uint64()
        L.check("dstack_submit", L.lib.dstack_submit(self.ctx.ctx, self.m, C.byref(r),
                                                     C.byref(t)))
        c = Completion()
        n = C.c_size_t()
        L.check("dstack_poll", L.lib.dstack_poll(self.ctx.ctx, C.byref(c), 1,
                                                 300 * 1000000, C.byref(n)))
        if n.value != 1 or c.ticket != t.value:
            raise DstackError("dstack_poll", -1, "no completion")
        if c.status != 0:
            raise DstackError("completion", c.status, "request failed")
        return outs

    def close(self):
        self.ctx.L.check("dstack_unregister_model",
                         self.ctx.L.lib.dstack_unregister_model(self.ctx.ctx, self.m))
