// What glommio pays each time a shard goes to sleep: the time of one
// membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED), called every 200 µs from
// CPU 0 for N seconds, while CPU 1 either spins in a thread of this process
// (mode 1: the call must interrupt it and wait) or is left idle (mode 0).
// Prints p50, p99, p99.9 and max. Build and run: tools/wake/run.sh
// (BENCHMARKS.md, "What a shard pays to sleep").
#define _GNU_SOURCE
#include <linux/membarrier.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static atomic_int stop;

static void pin(int cpu) {
  cpu_set_t s;
  CPU_ZERO(&s);
  CPU_SET(cpu, &s);
  sched_setaffinity(0, sizeof s, &s);
}

static void *spin(void *arg) {
  (void)arg;
  pin(1);
  while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
  }
  return NULL;
}

static double now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  int busy = argc > 1 ? atoi(argv[1]) : 1;
  int secs = argc > 2 ? atoi(argv[2]) : 10;
  if (syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) != 0) {
    perror("membarrier register");
    return 1;
  }
  pthread_t t;
  if (busy && pthread_create(&t, NULL, spin, NULL) != 0) {
    perror("pthread_create");
    return 1;
  }
  pin(0);
  usleep(200000);
  int cap = secs * 10000 + 1, n = 0;
  double *lat = malloc(sizeof *lat * cap);
  if (!lat) return 1;
  double end = now_us() + secs * 1e6;
  while (n < cap && now_us() < end) {
    double a = now_us();
    syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0);
    lat[n++] = now_us() - a;
    usleep(200);
  }
  atomic_store(&stop, 1);
  if (busy) pthread_join(t, NULL);
  qsort(lat, n, sizeof *lat, cmp);
  printf("membarrier, CPU 1 %s: n=%d p50 %.1f us, p99 %.1f us, p99.9 %.1f us, max %.1f us\n",
         busy ? "spinning in this process" : "idle", n, lat[n / 2], lat[(int)(n * 0.99)],
         lat[(int)(n * 0.999)], lat[n - 1]);
  free(lat);
  return 0;
}
