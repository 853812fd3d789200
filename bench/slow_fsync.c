/* A disk whose flush takes longer: LD_PRELOAD this library and every fsync() and fdatasync() of
 * the process sleeps SLOW_FSYNC_US microseconds (default 1000; 0 or less: no delay) before doing
 * the real call.
 *
 * This machine's virtual disk answers a flush in well under a millisecond, far faster than most
 * real disks, which hides what a design costs in commits. `bench.py --sqlite-creates
 * --slow-fsync US` builds this and preloads it into Runbase and the SQLite ceiling alike, so both
 * pay the same per commit.
 *
 *     cc -O2 -shared -fPIC -o slow_fsync.so bench/slow_fsync.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static long delay_us = 1000;

/* Resolved when the library is loaded, before any thread of the program runs (and again by the
 * first call, should another library's constructor flush before this one ran). */
__attribute__((constructor)) static void init(void) {
    real_fsync = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    real_fdatasync = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    if (!real_fsync || !real_fdatasync) {
        fprintf(stderr, "slow_fsync: fsync or fdatasync not found\n");
        abort();
    }
    const char *s = getenv("SLOW_FSYNC_US");
    if (s) delay_us = atol(s);
}

static void flush_delay(void) {
    if (!real_fsync) init();
    if (delay_us <= 0) return;
    int saved = errno;
    struct timespec t = {delay_us / 1000000, (delay_us % 1000000) * 1000};
    /* A signal cuts a sleep short: sleep the rest. */
    while (nanosleep(&t, &t) == -1 && errno == EINTR) {
    }
    errno = saved;
}

int fsync(int fd) {
    flush_delay();
    return real_fsync(fd);
}

int fdatasync(int fd) {
    flush_delay();
    return real_fdatasync(fd);
}
