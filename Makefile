# libdstack - build, test, install.
#
#   make                 lib/libdstack.so.X.Y.Z (+ symlinks) and lib/libdstack.a
#   make check           every test (unit, integration, ONNX conformance, ORT oracle)
#   make sanitize        the tests under ASan + UBSan (build/asan)
#   make tsan            the concurrency tests under ThreadSanitizer (build/tsan)
#   make examples        examples/ against the freshly built library
#   make install PREFIX=/usr/local DESTDIR=   /  make uninstall
#   make bench           benchmarks (bench/), results under bench/results/
#   make fuzz            libFuzzer harnesses (tests/fuzz/), FUZZ_TIME seconds each (default 300)
#   make fuzz-smoke      replay the corpora, then fuzz FUZZ_SMOKE_TIME s each (make check runs it)
#   make soak            the 60 s overload soak (tests/api_soak.c) and its valgrind run
#
# WITH_CUDA=1 builds the cuda backend (needs $(CUDA_HOME) with cuDNN and
# cuBLAS); the default is 1 when cudnn.h is found there. libcuda is never
# linked: driver entry points are fetched at run time.
#
# The cuda backend (src/exec/cuda, src/gpu, every .cu) is a module of its
# own, lib/libdstack-cuda.so.MAJOR, linked against cuDNN/cuBLAS/cudart and
# opened by libdstack.so only when a context wants cuda (src/exec/cuda_module.h);
# libdstack.so links no CUDA library. libdstack.a holds the cuda objects
# themselves: static programs link the CUDA libraries (the static_libs
# variable of dstack.pc names libdstack.a and them).
# Every other folder under src/ goes into libdstack.so and libdstack.a.

VERSION_MAJOR := $(shell sed -n 's/^\#define DSTACK_VERSION_MAJOR \([0-9]*\)/\1/p' include/dstack.h)
VERSION_MINOR := $(shell sed -n 's/^\#define DSTACK_VERSION_MINOR \([0-9]*\)/\1/p' include/dstack.h)
VERSION_PATCH := $(shell sed -n 's/^\#define DSTACK_VERSION_PATCH \([0-9]*\)/\1/p' include/dstack.h)
VERSION := $(VERSION_MAJOR).$(VERSION_MINOR).$(VERSION_PATCH)

PREFIX  ?= /usr/local
LIBDIR_INSTALL ?= $(PREFIX)/lib
INCDIR_INSTALL ?= $(PREFIX)/include
PKGDIR_INSTALL ?= $(LIBDIR_INSTALL)/pkgconfig
DESTDIR ?=

CUDA_HOME ?= /usr/local/cuda
WITH_CUDA ?= $(if $(wildcard $(CUDA_HOME)/include/cudnn.h),1,0)
NVCC ?= $(CUDA_HOME)/bin/nvcc
CUDA_ARCHS ?= -gencode=arch=compute_80,code=sm_80 -gencode=arch=compute_90,code=sm_90 \
              -gencode=arch=compute_90,code=compute_90

ONNX_PROTO ?= /usr/include/onnx/onnx.proto

BUILD ?= build
LIBOUT ?= lib
CC ?= cc
OPT ?= -O2 -g
SAN ?=
WARN := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wpointer-arith \
        -Wno-missing-field-initializers
CPPFLAGS_ALL := -Iinclude -Isrc -I$(BUILD)/gen -DDSTACK_BUILDING_LIBRARY -D_GNU_SOURCE \
                -DDS_WITH_CUDA=$(WITH_CUDA)
# -fno-lto last: libdstack.a is one `ld -r` object whose internal symbols
# objcopy makes local, and LTO objects keep theirs in IR objcopy cannot see
# (a distribution's -flto in CFLAGS left ds_* global and broke the link).
CFLAGS_ALL := -std=c11 $(OPT) $(WARN) -fPIC -fvisibility=hidden -pthread $(SAN) $(CFLAGS) -fno-lto
OBJCOPY ?= objcopy
CORE_LIBS := -lprotobuf-c -lpthread -lm -ldl
LIBS := $(CORE_LIBS)

# The cuda module's sources; the two stand-ins for it are
# src/exec/exec_nocuda.c (WITH_CUDA=0) and src/exec/cuda_loader.c (libdstack.so).
CUDA_DIRS := src/exec/cuda src/gpu
CORE_C_SRC := $(shell find src -name '*.c' $(CUDA_DIRS:%=! -path '%/*') ! -name exec_nocuda.c \
                ! -name cuda_loader.c | sort)
CORE_OBJ := $(CORE_C_SRC:%.c=$(BUILD)/obj/%.o) $(BUILD)/obj/gen/onnx.pb-c.o

SONAME := libdstack.so.$(VERSION_MAJOR)
SHARED := $(LIBOUT)/libdstack.so.$(VERSION)
STATIC := $(LIBOUT)/libdstack.a
# The same objects as plain members, internal names global: for the unit
# tests, the bench tools and the fuzz harnesses, which call ds_* directly.
INTERNAL := $(BUILD)/libdstack-internal.a

ifeq ($(WITH_CUDA),1)
CPPFLAGS_ALL += -I$(CUDA_HOME)/include
CUDA_LIBS := -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcudnn -lcublas -lcudart -lstdc++
LIBS += $(CUDA_LIBS)
CUDA_C_SRC := $(shell find $(CUDA_DIRS) -name '*.c' | sort)
CU_SRC := $(shell find src -name '*.cu' | sort)
CUDA_OBJ := $(CUDA_C_SRC:%.c=$(BUILD)/obj/%.o) $(CU_SRC:%.cu=$(BUILD)/obj/%.cu.o)
SHARED_OBJ := $(CORE_OBJ) $(BUILD)/obj/src/exec/cuda_loader.o
STATIC_OBJ := $(CORE_OBJ) $(CUDA_OBJ)
CUDA_SONAME := libdstack-cuda.so.$(VERSION_MAJOR)
CUDA_MODULE := $(LIBOUT)/libdstack-cuda.so.$(VERSION)
# The core objects the module needs (error messages, graph queries) come
# from this archive: only what it refers to is linked in.
CORE_ARCHIVE := $(BUILD)/libdstack-core.a
else
CUDA_OBJ :=
SHARED_OBJ := $(CORE_OBJ) $(BUILD)/obj/src/exec/exec_nocuda.o
STATIC_OBJ := $(SHARED_OBJ)
CUDA_MODULE :=
endif
OBJ := $(sort $(SHARED_OBJ) $(STATIC_OBJ))

# Unit tests (tests/test_*.c) link the internal archive and may use internal
# headers; integration tests (tests/api_*.c) link the shared library and see
# only include/dstack.h, as a user would.
UNIT_SRC := $(sort $(wildcard tests/test_*.c))
API_SRC := $(sort $(wildcard tests/api_*.c))
UNIT_BIN := $(UNIT_SRC:tests/%.c=$(BUILD)/tests/%)
API_BIN := $(API_SRC:tests/%.c=$(BUILD)/tests/%)
CONFORMANCE := $(if $(filter build,$(BUILD)),tests/onnx_conformance,$(BUILD)/tests/onnx_conformance)
EXAMPLE_SRC := $(sort $(wildcard examples/*.c))
EXAMPLE_BIN := $(EXAMPLE_SRC:examples/%.c=$(BUILD)/examples/%)
TEST_LIBS := -lcmocka $(LIBS)

.PHONY: all lib check test sanitize tsan examples install uninstall clean bench demo fuzz fuzz-smoke \
        fuzz-build soak bench-tools
all: lib
lib: $(SHARED) $(STATIC) $(CUDA_MODULE)

$(BUILD)/gen/onnx.pb-c.c: $(ONNX_PROTO)
	@mkdir -p $(BUILD)/gen
	protoc-c --proto_path=$(dir $(ONNX_PROTO)) --c_out=$(BUILD)/gen $(ONNX_PROTO)
$(BUILD)/gen/onnx.pb-c.h: $(BUILD)/gen/onnx.pb-c.c

$(BUILD)/obj/gen/onnx.pb-c.o: $(BUILD)/gen/onnx.pb-c.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS_ALL) -std=c11 $(OPT) -fPIC -fvisibility=hidden $(SAN) -w -c $< -o $@

$(BUILD)/obj/%.o: %.c | $(BUILD)/gen/onnx.pb-c.h
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS_ALL) $(CFLAGS_ALL) -MMD -MP -c $< -o $@

$(BUILD)/obj/%.cu.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(CUDA_ARCHS) -O2 -std=c++17 -Iinclude -Isrc -DDSTACK_BUILDING_LIBRARY \
	    -Xcompiler -fPIC,-fvisibility=hidden -c $< -o $@

$(SHARED): $(SHARED_OBJ)
	@mkdir -p $(LIBOUT)
	$(CC) -shared -Wl,-soname,$(SONAME) -Wl,--no-undefined -Wl,--as-needed $(SAN) -pthread -o $@ \
	    $(SHARED_OBJ) $(CORE_LIBS)
	ln -sf libdstack.so.$(VERSION) $(LIBOUT)/$(SONAME)
	ln -sf $(SONAME) $(LIBOUT)/libdstack.so

# One relocatable object with every hidden (internal) symbol made local, so
# libdstack.a defines only the dstack_* API, like libdstack.so: a program's
# own ds_* or protobuf-c onnx__* names do not clash with ours.
$(STATIC): $(STATIC_OBJ)
	@mkdir -p $(LIBOUT)
	rm -f $@ $(BUILD)/libdstack-static.o
	$(LD) -r -o $(BUILD)/libdstack-static.o $(STATIC_OBJ)
	$(OBJCOPY) --localize-hidden --localize-symbol=ds_cuda_module_open $(BUILD)/libdstack-static.o
	ar rcs $@ $(BUILD)/libdstack-static.o

$(INTERNAL): $(STATIC_OBJ)
	rm -f $@
	ar rcs $@ $(STATIC_OBJ)

$(CORE_ARCHIVE): $(CORE_OBJ)
	rm -f $@
	ar rcs $@ $(CORE_OBJ)

# Exports ds_cuda_module_open and nothing else (tools/cuda_module.map).
$(CUDA_MODULE): $(CUDA_OBJ) $(CORE_ARCHIVE) tools/cuda_module.map
	@mkdir -p $(LIBOUT)
	$(CC) -shared -Wl,-soname,$(CUDA_SONAME) -Wl,--no-undefined -Wl,--version-script=tools/cuda_module.map \
	    $(SAN) -pthread -o $@ $(CUDA_OBJ) $(CORE_ARCHIVE) $(CUDA_LIBS) $(CORE_LIBS)
	ln -sf libdstack-cuda.so.$(VERSION) $(LIBOUT)/$(CUDA_SONAME)

$(BUILD)/tests/test_%: tests/test_%.c $(INTERNAL) $(wildcard tests/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS_ALL) $(CFLAGS_ALL) -Wno-missing-prototypes -o $@ $< $(INTERNAL) $(TEST_LIBS)

$(BUILD)/tests/api_%: tests/api_%.c $(SHARED) $(CUDA_MODULE) $(wildcard tests/*.h)
	@mkdir -p $(dir $@)
	$(CC) -Iinclude -std=c11 $(OPT) $(WARN) -pthread $(SAN) -Wno-missing-prototypes -o $@ $< \
	    -L$(LIBOUT) -Wl,-rpath,$(abspath $(LIBOUT)) -ldstack -lcmocka -lpthread -lm

$(CONFORMANCE): tests/onnx_conformance.c $(SHARED) $(CUDA_MODULE)
	@mkdir -p $(dir $@)
	$(CC) -Iinclude -Isrc -I$(BUILD)/gen -std=c11 $(OPT) $(WARN) -D_GNU_SOURCE -pthread $(SAN) -o $@ $< \
	    $(BUILD)/obj/gen/onnx.pb-c.o -L$(LIBOUT) -Wl,-rpath,$(abspath $(LIBOUT)) -ldstack -lprotobuf-c -lm

$(BUILD)/examples/%: examples/%.c $(SHARED) $(CUDA_MODULE)
	@mkdir -p $(dir $@)
	$(CC) -Iinclude -std=c11 $(OPT) $(WARN) -pthread $(SAN) -o $@ $< \
	    -L$(LIBOUT) -Wl,-rpath,$(abspath $(LIBOUT)) -ldstack -lpthread -lm

examples: $(EXAMPLE_BIN)

TEST_BINS := $(UNIT_BIN) $(API_BIN) $(if $(wildcard tests/onnx_conformance.c),$(CONFORMANCE))
check test: lib $(INTERNAL) $(TEST_BINS) $(EXAMPLE_BIN) $(BUILD)/bench/sched_compare
	@BUILD=$(BUILD) LIBOUT=$(LIBOUT) CONFORMANCE=$(CONFORMANCE) SANITIZED=$(if $(SAN),1,) sh tools/run_tests.sh $(UNIT_BIN) $(API_BIN)

sanitize:
	$(MAKE) BUILD=build/asan LIBOUT=build/asan/lib OPT="-O1 -g -fno-omit-frame-pointer" \
	    SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined" check

tsan:
	$(MAKE) BUILD=build/tsan LIBOUT=build/tsan/lib OPT="-O1 -g" SAN="-fsanitize=thread" \
	    build/tsan/tests/api_concurrency build/tsan/tests/api_soak
	TSAN_OPTIONS=halt_on_error=1 build/tsan/tests/api_concurrency
	TSAN_OPTIONS=halt_on_error=1 DSTACK_SOAK_SECONDS=3 build/tsan/tests/api_soak

# ---- overload soak (tests/api_soak.c): 60 s at 10x the served rate, 10 s
# unpolled, 10 s resumed; then valgrind on serve_demo and on a small soak.
VALGRIND ?= valgrind --error-exitcode=1 --suppressions=tools/valgrind.supp --leak-check=full --errors-for-leak-kinds=definite,indirect
soak: lib $(BUILD)/tests/api_soak $(BUILD)/examples/serve_demo
	DSTACK_SOAK_SECONDS=60 DSTACK_SOAK_STOP_SECONDS=10 $(BUILD)/tests/api_soak
	$(VALGRIND) $(BUILD)/examples/serve_demo --backend cpu --requests 12 --image 32
	DSTACK_SOAK_SECONDS=2 DSTACK_SOAK_STOP_SECONDS=1 DSTACK_SOAK_THREADS=4 $(VALGRIND) \
	    $(BUILD)/tests/api_soak

# ---- fuzzing (clang's libFuzzer with ASan + UBSan) ----
# The library is rebuilt with clang under build/fuzz; each harness links its
# static archive. Corpora grow under build/fuzz/corpus/NAME, seeded from the
# ONNX conformance models and tiny_cnn; inputs that once failed are kept in
# tests/fuzz/regressions/NAME and replayed first. Per-input limits: a slow
# or huge input is a defect like a crash. fuzz_requests keeps its context
# from input to input, so libFuzzer's per-input leak check (which fires on
# every input that registers a model) is off there; ASan's check at exit and
# make sanitize still see leaks.
FUZZ_CC ?= clang
FUZZ_TIME ?= 300
FUZZ_SMOKE_TIME ?= 15
FUZZ_FLAGS ?= -timeout=10 -rss_limit_mb=2048 -max_len=1048576
FUZZ_SAN := -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZERS := onnx requests
FUZZ_BIN := $(FUZZERS:%=build/fuzz/fuzz_%)
ONNX_NODE_DATA ?= /usr/share/libonnx-testdata/data/node

fuzz-build:
	$(MAKE) BUILD=build/fuzz LIBOUT=build/fuzz/lib CC=$(FUZZ_CC) WITH_CUDA=0 OPT="-O1 -g" \
	    SAN="$(FUZZ_SAN) -fsanitize=fuzzer-no-link" build/fuzz/libdstack-internal.a
	for f in $(FUZZERS); do \
	    $(FUZZ_CC) -Iinclude -std=c11 -O1 -g $(FUZZ_SAN) -fsanitize=fuzzer -o build/fuzz/fuzz_$$f \
	        tests/fuzz/fuzz_$$f.c build/fuzz/libdstack-internal.a -lprotobuf-c -lpthread -lm -ldl || exit 1; \
	done
	mkdir -p build/fuzz/corpus/onnx build/fuzz/corpus/requests
	cp tests/data/tiny_cnn.onnx build/fuzz/corpus/onnx/
	if [ -d $(ONNX_NODE_DATA) ]; then for d in $(ONNX_NODE_DATA)/*/; do \
	    cp $$d/model.onnx build/fuzz/corpus/onnx/$$(basename $$d).onnx 2>/dev/null; done; true; fi
	cp tests/fuzz/seeds/requests/* build/fuzz/corpus/requests/

FUZZ_EXTRA = $$([ $$f = requests ] && echo -detect_leaks=0)
fuzz: fuzz-build
	for f in $(FUZZERS); do \
	    build/fuzz/fuzz_$$f $(FUZZ_FLAGS) $(FUZZ_EXTRA) -max_total_time=$(FUZZ_TIME) -print_final_stats=1 \
	        -artifact_prefix=build/fuzz/crash-$$f- build/fuzz/corpus/$$f tests/fuzz/regressions/$$f \
	        || exit 1; \
	done

fuzz-smoke: fuzz-build
	for f in $(FUZZERS); do \
	    build/fuzz/fuzz_$$f $(FUZZ_FLAGS) $(FUZZ_EXTRA) -runs=0 build/fuzz/corpus/$$f \
	        tests/fuzz/regressions/$$f || exit 1; \
	    build/fuzz/fuzz_$$f $(FUZZ_FLAGS) $(FUZZ_EXTRA) -max_total_time=$(FUZZ_SMOKE_TIME) -print_final_stats=1 \
	        -artifact_prefix=build/fuzz/crash-$$f- build/fuzz/corpus/$$f || exit 1; \
	done

demo: lib $(BUILD)/examples/serve_demo
	$(BUILD)/examples/serve_demo

bench: lib
	sh bench/run.sh

# Registration time of hostile-sized models: $(BUILD)/bench/register_scale 100000 1000000
$(BUILD)/bench/register_scale: bench/register_scale.c tests/hostile_models.h $(SHARED)
	@mkdir -p $(dir $@)
	$(CC) -Iinclude -Itests -std=c11 $(OPT) $(WARN) $(SAN) -o $@ $< \
	    -L$(LIBOUT) -Wl,-rpath,$(abspath $(LIBOUT)) -ldstack

install: lib
	install -d $(DESTDIR)$(LIBDIR_INSTALL) $(DESTDIR)$(INCDIR_INSTALL) $(DESTDIR)$(PKGDIR_INSTALL)
	install -m 644 include/dstack.h $(DESTDIR)$(INCDIR_INSTALL)/dstack.h
	install -m 755 $(SHARED) $(DESTDIR)$(LIBDIR_INSTALL)/
	ln -sf libdstack.so.$(VERSION) $(DESTDIR)$(LIBDIR_INSTALL)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR_INSTALL)/libdstack.so
	install -m 644 $(STATIC) $(DESTDIR)$(LIBDIR_INSTALL)/
	$(if $(CUDA_MODULE),install -m 755 $(CUDA_MODULE) $(DESTDIR)$(LIBDIR_INSTALL)/)
	$(if $(CUDA_MODULE),ln -sf libdstack-cuda.so.$(VERSION) $(DESTDIR)$(LIBDIR_INSTALL)/$(CUDA_SONAME))
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR_INSTALL)|' -e 's|@INCDIR@|$(INCDIR_INSTALL)|' \
	    -e 's|@VERSION@|$(VERSION)|' -e 's|@LIBS_PRIVATE@|$(LIBS)|' pkgconfig/dstack.pc.in \
	    > $(DESTDIR)$(PKGDIR_INSTALL)/dstack.pc

uninstall:
	rm -f $(DESTDIR)$(INCDIR_INSTALL)/dstack.h $(DESTDIR)$(LIBDIR_INSTALL)/libdstack.so.$(VERSION) \
	      $(DESTDIR)$(LIBDIR_INSTALL)/$(SONAME) $(DESTDIR)$(LIBDIR_INSTALL)/libdstack.so \
	      $(DESTDIR)$(LIBDIR_INSTALL)/libdstack.a $(DESTDIR)$(PKGDIR_INSTALL)/dstack.pc \
	      $(DESTDIR)$(LIBDIR_INSTALL)/libdstack-cuda.so.$(VERSION) \
	      $(DESTDIR)$(LIBDIR_INSTALL)/libdstack-cuda.so.$(VERSION_MAJOR)

clean:
	rm -rf build lib/libdstack* tests/onnx_conformance

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

# Bench tools: bench/<name>.c -> $(BUILD)/bench/<name>, against the internal
# archive and headers (make bench builds and runs them).
BENCH_SRC := $(sort $(wildcard bench/*.c))
BENCH_BIN := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)
$(BUILD)/bench/%: bench/%.c $(INTERNAL)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS_ALL) $(CFLAGS_ALL) -Wno-missing-prototypes -o $@ $< $(INTERNAL) $(LIBS)
bench-tools: $(BENCH_BIN)
bench: bench-tools

# The Triton Inference Server backend: make triton, make triton-check.
include triton/triton.mk
