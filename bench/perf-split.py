#!/usr/bin/env python3
"""perf-split.py: CPU samples of `perf record -e cpu-clock -g` split by thread
and by what the code was doing, from `perf script` on stdin.

Usage: perf script -i rill.data -F tid,ip,sym,dso | bench/perf-split.py [--loop TID] [--whole]
The loop thread is the process's first thread (lowest tid) unless --loop is
given; the others are grouped together (the store's workers are libuv's pool
threads, then the watchdog). A sample in the kernel goes to the first kernel
category of CATEGORIES that any frame of its chain matches (the work a
system call does is charged to that call, a page fault to page faults); a
sample in user space to the category of its leaf-most frame that matches.
"""
import re
import sys
from collections import Counter, defaultdict

# (name, test on "sym dso" of a frame), tried in order on each frame from the leaf.
CATEGORIES = [
    ("kernel: page faults", r"exc_page_fault|do_user_addr_fault"),
    ("kernel: mprotect/madvise/munmap/mmap", r"__x64_sys_(mprotect|madvise|munmap|mmap)|__vm_munmap"),
    ("kernel: socket write", r"__x64_sys_(write|sendto|sendmsg|writev)|ksys_write"),
    ("kernel: socket/file read", r"__x64_sys_(read|recvfrom|recvmsg|pread64)|ksys_read"),
    ("kernel: file write (WAL, db)", r"__x64_sys_pwrite64|ksys_pwrite64"),
    ("kernel: fsync", r"__x64_sys_(fsync|fdatasync)"),
    ("kernel: epoll", r"__x64_sys_epoll"),
    ("kernel: futex/wakeups", r"__x64_sys_futex|futex_"),
    ("kernel: other syscalls", r"do_syscall_64"),
    ("kernel: other", r"\[kernel"),
    ("cjson encode/decode", r"^json_|^strbuf_|lua_cjson|^fpconv"),
    ("batch marshal (C<->Lua)", r"^(batch_|value_|push_outcome|push_result|stmt_|push_json)"),
    ("sqlite", r"libsqlite3"),
    ("malloc/free", r"^(_int_malloc|_int_free|malloc|free|cfree|calloc|realloc|__libc_calloc|__libc_malloc|"
        r"unlink_chunk|malloc_consolidate|sysmalloc|_int_realloc|rill_alloc|tcache|__GI___libc_free)"),
    ("memcpy/memmove/strlen", r"^__(mem|str)"),
    ("crypto (HMAC, ids)", r"libcrypto"),
    ("http parser", r"libhttp_parser"),
    ("postgres: WAL", r"^(XLog|XLogInsert|XLogRecordAssemble|XLogFlush|XLogWrite|pg_comp_crc32c).* .*postgres"),
    ("postgres: btree indexes", r"^(_bt_|bt|btinsert|index_insert|heap_index_delete_tuples).* .*postgres"),
    ("postgres: heap", r"^(heap_|heapam_|Heap|RelationGetBufferForTuple|PageAdd|toast).* .*postgres"),
    ("postgres: parse/plan/exec setup", r"^(raw_parser|base_yyparse|parse_|transform|pg_plan|planner|standard_planner|"
        r"subquery_planner|ExecInit|ExecutorStart|CreateQueryDesc|exec_bind_message|CheckExprStillValid|"
        r"ExprEvalPushStep|expression_tree_walker|GetCachedPlan|RevalidateCachedQuery|BuildCachedPlan|"
        r"ExecReady|ExecBuildProjectionInfo|check_stack_depth).* .*postgres"),
    ("postgres: locks, buffers, hash tables", r"^(hash_search|hash_bytes|LWLock|LockAcquire|LockRelease|"
        r"ReadBuffer|ReleaseBuffer|PinBuffer|UnpinBuffer|BufTable).* .*postgres"),
    ("postgres: other", r" .*bin/postgres$"),
    ("LuaJIT (VM, GC, compiled code)", r"libluajit|\[JIT\]|perf-\d+\.map"),
    ("rill C", r" rill$|/rill$"),
    ("libuv", r"libuv"),
    ("libc other", r"libc"),
]
COMPILED = [(n, re.compile(t)) for n, t in CATEGORIES]


def samples(stream):
    tid, frames = None, []
    for line in stream:
        line = line.rstrip("\n")
        if not line.strip():
            if tid is not None:
                yield tid, frames
            tid, frames = None, []
        elif not line.startswith("\t"):  # a sample's header: its tid (padded with spaces)
            tid, frames = int(line.split()[0]), []
        else:
            parts = line.split(None, 1)
            rest = parts[1] if len(parts) > 1 else ""
            m = re.match(r"(.*) \((.*)\)$", rest)
            sym, dso = (m.group(1), m.group(2)) if m else (rest, "")
            sym = re.sub(r"\+0x[0-9a-f]+$", "", sym)
            frames.append(sym + " " + dso)
    if tid is not None:
        yield tid, frames


def category(frames):
    # kernel work: by the first category (in order) any frame of the chain
    # shows; user-space work: by the leaf-most frame that matches one
    if frames and "[kernel" in frames[0]:
        for name, test in COMPILED:
            if name.startswith("kernel") and any(test.search(f) for f in frames):
                return name
    for f in frames:
        for name, test in COMPILED:
            if test.search(f):
                return name
    return "unknown"


def main():
    loop = None
    whole = "--whole" in sys.argv  # one group: every thread or process together (a Postgres server)
    if "--loop" in sys.argv:
        loop = int(sys.argv[sys.argv.index("--loop") + 1])
    by_thread = defaultdict(Counter)
    for tid, frames in samples(sys.stdin):
        by_thread[tid][category(frames)] += 1
    if not by_thread:
        sys.exit("perf-split: no samples")
    loop = loop or min(by_thread)
    groups = {"loop": Counter(), "other threads": Counter()}
    if whole:
        groups = {"all": Counter()}
    for tid, c in by_thread.items():
        groups["all" if whole else "loop" if tid == loop else "other threads"].update(c)
    total = sum(sum(c.values()) for c in groups.values())
    for name, c in groups.items():
        n = sum(c.values())
        print(f"## {name}: {n} samples, {100 * n / total:.1f}% of the process")
        for cat, k in c.most_common():
            print(f"  {100 * k / n:5.1f}%  {cat}")


if __name__ == "__main__":
    main()
