// A plain thread's timer lateness, measured as the broker's stall detector
// measures a shard's (runtime/stall.rs): sleep 1 ms, see how late the wake-up
// came, and read the thread's run-queue wait from /proc/thread-self/schedstat
// around each tick. Prints, once per second, the longest lateness and the
// run-queue wait inside that tick, in µs.
// Usage: tick CPU SECONDS (pinned to CPU). Run it under `chrt -f 1` to see
// what is left when no other thread can take the core.
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static int schedstat_fd;

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

// Time this thread has waited on a run queue so far, ns (schedstat's 2nd field).
static uint64_t run_delay_ns(void) {
    char buf[128];
    ssize_t n = pread(schedstat_fd, buf, sizeof buf - 1, 0);
    buf[n > 0 ? n : 0] = 0;
    unsigned long long on_cpu = 0, waited = 0;
    sscanf(buf, "%llu %llu", &on_cpu, &waited);
    return waited;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: tick CPU SECONDS\n");
        return 2;
    }
    int cpu = atoi(argv[1]), seconds = atoi(argv[2]);
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    sched_setaffinity(0, sizeof set, &set);
    schedstat_fd = open("/proc/thread-self/schedstat", O_RDONLY);
    if (schedstat_fd < 0) {
        perror("/proc/thread-self/schedstat");
        return 1;
    }
    printf("second longest_lateness_us runqueue_wait_in_it_us\n");
    for (int s = 0; s < seconds; s++) {
        uint64_t end = now_ns() + 1000000000ull, worst = 0, worst_wait = 0;
        while (now_ns() < end) {
            uint64_t w0 = run_delay_ns(), t0 = now_ns();
            struct timespec tick = {0, 1000000};
            nanosleep(&tick, NULL);
            uint64_t late = now_ns() - t0 - 1000000, w1 = run_delay_ns();
            if (late > worst) {
                worst = late;
                worst_wait = w1 - w0;
            }
        }
        printf("%d %llu %llu\n", s, (unsigned long long)worst / 1000,
               (unsigned long long)worst_wait / 1000);
        fflush(stdout);
    }
    return 0;
}
