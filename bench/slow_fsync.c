/* A disk whose flush takes longer: LD_PRELOAD this library and every fsync() and fdatasync() of
 * the process sleeps SLOW_FSYNC_US microseconds (default 1000) before doing the real call.
 *
 * This machine's virtual disk answers a flush in well under a millisecond, far faster than most
 * real disks, which hides what a design costs in commits. bench.py --slow-fsync US builds this
 * and preloads it into Runbase and the ceilings alike, so both pay the same per commit.
 *
 *     cc -O2 -shared -fPIC -o slow_fsync.so bench/slow_fsync.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>

static void flush_delay(void) {
    const char *s = getenv("SLOW_FSYNC_US");
    long us = s ? atol(s) : 1000;
    struct timespec t = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&t, NULL);
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    flush_delay();
    return real(fd);
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    flush_delay();
    return real(fd);
}
