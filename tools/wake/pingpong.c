// The machine's floor for a cross-shard hop: the round trip of a wake-up
// between two plain threads pinned to CPU 0 and CPU 1, with no broker code.
//   mode 0 (default): each side sleeps in a blocking eventfd read until the
//     other writes, as an idle glommio shard sleeps in the kernel;
//   mode 1: each side spins on a shared atomic (nobody sleeps).
// Prints the round trip's p50, p90, p99 and max over 20,000 trips.
// Build and run: tools/wake/run.sh (BENCHMARKS.md, "Shard stalls and the
// cross-shard hop").
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define TRIPS 20000

static int ping_fd, pong_fd, mode;
static atomic_int flag;

static void pin(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static void *peer(void *arg) {
    (void)arg;
    pin(1);
    uint64_t v;
    for (int i = 0; i < TRIPS; i++) {
        if (mode == 0) {
            if (read(ping_fd, &v, 8) != 8) exit(1);
            v = 1;
            if (write(pong_fd, &v, 8) != 8) exit(1);
        } else {
            while (atomic_load(&flag) != 1) {}
            atomic_store(&flag, 0);
        }
    }
    return NULL;
}

static int cmp(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    static uint64_t trip[TRIPS];
    mode = argc > 1 ? atoi(argv[1]) : 0;
    ping_fd = eventfd(0, 0);
    pong_fd = eventfd(0, 0);
    pin(0);
    pthread_t t;
    pthread_create(&t, NULL, peer, NULL);
    usleep(1000);
    for (int i = 0; i < TRIPS; i++) {
        uint64_t v = 1, start = now_ns();
        if (mode == 0) {
            if (write(ping_fd, &v, 8) != 8 || read(pong_fd, &v, 8) != 8) return 1;
        } else {
            atomic_store(&flag, 1);
            while (atomic_load(&flag) != 0) {}
        }
        trip[i] = now_ns() - start;
    }
    pthread_join(t, NULL);
    qsort(trip, TRIPS, sizeof trip[0], cmp);
    printf("%s: round trip p50 %.1f us, p90 %.1f, p99 %.1f, max %.1f\n",
           mode ? "spin" : "eventfd sleep", trip[TRIPS / 2] / 1e3,
           trip[TRIPS * 9 / 10] / 1e3, trip[TRIPS * 99 / 100] / 1e3, trip[TRIPS - 1] / 1e3);
    return 0;
}
