#!/bin/sh
# What a user does after `make`: make install into a fresh prefix, then build
# a program against it with pkg-config, once shared and once static (the
# README's two lines), and run both. Prints PASS/FAIL lines.
set -u
MAKE=${MAKE:-make}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pass() { echo "PASS $*"; }
fail() { echo "FAIL $*"; }
if ! command -v pkg-config >/dev/null 2>&1; then
    fail "pkg-config is missing (apt-get install pkg-config; tools/setup.sh installs it)"
    exit 1
fi
if $MAKE --no-print-directory install PREFIX="$work/prefix" >"$work/install.log" 2>&1; then
    pass "make install PREFIX=<tmp>"
else
    fail "make install PREFIX=<tmp>"; tail -20 "$work/install.log"; exit 1
fi
PKG_CONFIG_PATH=$(dirname "$(find "$work/prefix" -name dstack.pc | head -1)")
export PKG_CONFIG_PATH
cat > "$work/app.c" <<'C'
#include <dstack.h>
#include <stdio.h>
int main(void)
{
    dstack_options o;
    dstack_options_init(&o);
    o.backend = DSTACK_BACKEND_SIM;
    dstack_ctx *ctx;
    if (dstack_create(&o, &ctx) != DSTACK_OK) {
        fprintf(stderr, "dstack_create: %s\n", dstack_last_error());
        return 1;
    }
    dstack_ctx_info ci;
    dstack_ctx_info_init(&ci);
    if (dstack_ctx_info_get(ctx, &ci) != DSTACK_OK)
        return 1;
    printf("libdstack %s on %s\n", dstack_version_string(), ci.device_name);
    dstack_destroy(ctx);
    return 0;
}
C
CC=${CC:-cc}
# shared, as README.md says
if $CC "$work/app.c" $(pkg-config --cflags --libs dstack) -o "$work/app_shared" 2>"$work/cc.log" &&
    out=$(LD_LIBRARY_PATH="$(pkg-config --variable=libdir dstack)" "$work/app_shared" 2>&1); then
    pass "shared: cc app.c \$(pkg-config --cflags --libs dstack): $out"
else
    fail "shared link or run"; cat "$work/cc.log"
fi
# static, as README.md says: no libdstack.so needed at run time
if $CC "$work/app.c" $(pkg-config --cflags dstack) $(pkg-config --variable=static_libs dstack) \
        -o "$work/app_static" 2>"$work/cc.log" && out=$("$work/app_static" 2>&1); then
    if command -v ldd >/dev/null 2>&1 && ldd "$work/app_static" | grep -q 'libdstack\.so'; then
        fail "static: the program still needs libdstack.so: $(ldd "$work/app_static" | grep libdstack)"
    else
        pass "static: cc app.c \$(pkg-config --cflags dstack) \$(pkg-config --variable=static_libs dstack): $out"
    fi
else
    fail "static link or run"; cat "$work/cc.log"
fi
# a program with names of its own that the library uses inside (ds_log,
# protobuf-c's onnx__*) links against the static library, and the library
# still calls its own: the program's ds_log is never called by it
cat > "$work/clash.c" <<'C'
#include <dstack.h>
#include <stdio.h>
static int own_calls, lib_messages;
void ds_log(void);
void ds_log(void) { own_calls++; }
int onnx__model_proto__init;
static void sink(void *user, dstack_log_level level, const char *msg)
{
    (void)user; (void)level; (void)msg;
    lib_messages++;
}
int main(void)
{
    dstack_options o;
    dstack_options_init(&o);
    o.backend = DSTACK_BACKEND_SIM;
    o.log_fn = sink;
    o.log_level = DSTACK_LOG_INFO;
    dstack_ctx *ctx;
    if (dstack_create(&o, &ctx) != DSTACK_OK)
        return 1;
    dstack_destroy(ctx);
    onnx__model_proto__init = 1;
    printf("library log messages %d, calls of the program's ds_log %d\n", lib_messages, own_calls);
    return lib_messages > 0 && own_calls == 0 ? 0 : 1;
}
C
if $CC "$work/clash.c" $(pkg-config --cflags dstack) $(pkg-config --variable=static_libs dstack) \
        -o "$work/clash" 2>"$work/cc.log" && out=$("$work/clash" 2>&1); then
    pass "static: a program defining ds_log and onnx__model_proto__init links, and the library keeps its own: $out"
else
    fail "static: a program defining ds_log and onnx__model_proto__init: ${out:-does not link}"; cat "$work/cc.log"
fi
