# triton/triton.mk - the Triton Inference Server backend, included by the
# top Makefile.
#
#   make triton         $(BUILD)/triton/backends/dstack/libtriton_dstack.so, with
#                       libdstack.so.MAJOR beside it (found through $ORIGIN)
#   make triton-check   its unit tests, then a real tritonserver (pip's
#                       nvidia-pytriton wheel) serving ONNX models through it
#   make triton-tsan    the backend against a stand-in server, under ThreadSanitizer
#
# Needs cJSON (Debian: libcjson-dev) for the model configs. The TRITON*
# symbols stay undefined here: tritonserver provides them at load time, so
# this is linked without --no-undefined.

TRITON_OUT := $(BUILD)/triton
TRITON_BACKEND_DIR := $(TRITON_OUT)/backends/dstack
TRITON_SO := $(TRITON_BACKEND_DIR)/libtriton_dstack.so
TRITON_SRC := triton/backend.c triton/execute.c triton/config.c
TRITON_UNIT := $(TRITON_OUT)/test_triton_config $(TRITON_OUT)/test_triton_backend
TRITON_EXPORT := $(TRITON_OUT)/dstack_export
TRITON_CFLAGS := -Iinclude -std=c11 $(OPT) $(WARN) -Wconversion -fPIC -fvisibility=hidden \
                 -pthread -D_GNU_SOURCE $(CFLAGS)
HAVE_CJSON := $(wildcard /usr/include/cjson/cJSON.h)

.PHONY: triton triton-check
triton: $(TRITON_SO) $(TRITON_BACKEND_DIR)/$(SONAME) $(TRITON_UNIT) $(TRITON_EXPORT)

$(TRITON_SO): $(TRITON_SRC) $(wildcard triton/*.h) include/dstack.h $(SHARED)
	@mkdir -p $(dir $@)
	$(CC) $(TRITON_CFLAGS) -shared -Wl,-soname,libtriton_dstack.so -o $@ $(TRITON_SRC) \
	    -L$(LIBOUT) -Wl,-rpath,'$$ORIGIN' -ldstack -lcjson -lpthread

$(TRITON_BACKEND_DIR)/$(SONAME): $(SHARED)
	@mkdir -p $(dir $@)
	cp $(SHARED) $@

$(TRITON_OUT)/test_triton_config: tests/triton/test_triton_config.c triton/config.c triton/config.h include/dstack.h
	@mkdir -p $(dir $@)
	$(CC) -Iinclude -Itriton -std=c11 $(OPT) $(WARN) -Wno-missing-prototypes -pthread $(SAN) \
	    -o $@ tests/triton/test_triton_config.c triton/config.c -lcjson -lcmocka

# The backend against a stand-in for the server (the test defines the
# TRITON* functions), linked with the backend's sources and libdstack.
$(TRITON_OUT)/test_triton_backend: tests/triton/test_triton_backend.c $(TRITON_SRC) \
        $(wildcard triton/*.h) include/dstack.h $(SHARED)
	@mkdir -p $(dir $@)
	$(CC) -Iinclude -Itriton -std=c11 $(OPT) $(WARN) -Wno-missing-prototypes -pthread \
	    -D_GNU_SOURCE $(SAN) -o $@ tests/triton/test_triton_backend.c $(TRITON_SRC) \
	    -L$(LIBOUT) -Wl,-rpath,$(abspath $(LIBOUT)) -ldstack -lcjson -lcmocka

# Writes zoo models as ONNX files for the server test (the exporter is
# internal to the library, so this links the static library).
$(TRITON_EXPORT): tests/python/dstack_export.c $(INTERNAL)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS_ALL) -std=c11 $(OPT) $(SAN) -o $@ $< $(INTERNAL) $(LIBS)

triton-check: triton
	BUILD=$(BUILD) LIBOUT=$(LIBOUT) sh tests/triton/run.sh

# make check runs the backend's tests too (tools/run_tests.sh finds the
# build), when cJSON is there to build it; run_tests.sh says when it is not.
ifneq ($(HAVE_CJSON),)
check test: triton
endif

# The backend's threads (execute, pollers, finalize) under ThreadSanitizer,
# with a ThreadSanitizer libdstack (as make tsan builds it).
.PHONY: triton-tsan
triton-tsan:
	$(MAKE) BUILD=build/tsan LIBOUT=build/tsan/lib OPT="-O1 -g" SAN="-fsanitize=thread" \
	    build/tsan/triton/test_triton_backend
	TSAN_OPTIONS=halt_on_error=1 build/tsan/triton/test_triton_backend
