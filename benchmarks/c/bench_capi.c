/* Cost of the C API layer: the first call (starts the embedded Python and imports vnpu), then calls per
 * second of a cheap call (vnpuEventQuery) and of a 4 KiB host-to-device copy. Run by bench_capi.py. */
#include <stdio.h>
#include <time.h>

#include "vnpu.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(void) {
    int32_t version;
    vnpuPlatform p;
    vnpuDevice d;
    vnpuQueue q;
    vnpuEvent e;
    vnpuBuffer b;
    static char host[4096];
    double t0 = now();
    if (vnpuGetVersion(&version)) return 1;
    double t1 = now();
    if (vnpuPlatformOpenCards("tiny", 1, &p) || vnpuDeviceGet(p, 0, &d) || vnpuQueueCreate(d, &q) ||
        vnpuEventRecord(q, &e) || vnpuMemAlloc(d, sizeof host, &b))
        return 1;
    const int n = 100000, m = 20000;
    double t2 = now();
    for (int i = 0; i < n; i++)
        if (vnpuEventQuery(e) > VNPU_ERROR_NOT_READY) return 1;
    double t3 = now();
    for (int i = 0; i < m; i++)
        if (vnpuMemcpyHtoDAsync(b, 0, host, sizeof host, q)) return 1;
    double t4 = now();
    printf("{\"first_call_s\": %.4f, \"query_per_s\": %.0f, \"copy4k_per_s\": %.0f}\n", t1 - t0, n / (t3 - t2),
           m / (t4 - t3));
    vnpuPlatformClose(p);
    return 0;
}
