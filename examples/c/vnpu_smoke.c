/* A host program in C on vnpu: allocate, copy a tensor in, run a library kernel, check the result, read
 * the cycles, then provoke and report errors (bad handles, out of memory, a bad module, a faulting kernel
 * and the reset that recovers from it, a race caught by the sanitizer) while the other card keeps working.
 *
 *   vnpu capi build -o build/capi
 *   cc examples/c/vnpu_smoke.c -I build/capi -L build/capi -lvnpu -Wl,-rpath,build/capi -o vnpu_smoke
 *   ./vnpu_smoke            # the default platform (six reference cards)
 *   ./vnpu_smoke tiny       # two small cards: quicker
 *
 * Prints one line per check and "vnpu_smoke: OK" at the end; exits 1 on the first failed check.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vnpu.h"

static int checks = 0;

/* A call that must succeed. */
#define OK(call)                                                                                        \
    do {                                                                                                \
        vnpuStatus s_ = (call);                                                                         \
        if (s_ != VNPU_SUCCESS) {                                                                       \
            fprintf(stderr, "FAILED %s:%d: %s -> %s: %s\n", __FILE__, __LINE__, #call,                  \
                    vnpuGetErrorName(s_), vnpuGetLastErrorMessage());                                   \
            exit(1);                                                                                    \
        }                                                                                               \
    } while (0)

/* A call that must fail with `want`; prints the message the C API gives for it. */
#define EXPECT(want, call)                                                                              \
    do {                                                                                                \
        vnpuStatus s_ = (call);                                                                         \
        if (s_ != (want)) {                                                                             \
            fprintf(stderr, "FAILED %s:%d: %s -> %s, expected %s (%s)\n", __FILE__, __LINE__, #call,    \
                    vnpuGetErrorName(s_), vnpuGetErrorName(want), vnpuGetLastErrorMessage());            \
            exit(1);                                                                                    \
        }                                                                                               \
        checks++;                                                                                       \
        printf("expected %-30s %s\n", vnpuGetErrorName(s_), vnpuGetLastErrorMessage());                 \
    } while (0)

#define CHECK(cond, ...)                                                                                \
    do {                                                                                                \
        if (!(cond)) {                                                                                  \
            fprintf(stderr, "FAILED %s:%d: %s: ", __FILE__, __LINE__, #cond);                            \
            fprintf(stderr, __VA_ARGS__);                                                               \
            fprintf(stderr, "\n");                                                                      \
            exit(1);                                                                                    \
        }                                                                                               \
        checks++;                                                                                       \
    } while (0)

/* out = a + b on `dev` with the library's fp32 add kernel; returns the kernel's cycles. */
static uint64_t run_add(vnpuDevice dev, const float *a, const float *b, float *out, int n) {
    size_t bytes = (size_t)n * sizeof(float);
    vnpuBuffer da, db, dout;
    vnpuModule mod;
    vnpuKernel add;
    vnpuQueue q;
    vnpuEvent start, end;
    uint64_t cycles = 0;
    double ns = 0;
    OK(vnpuMemAlloc(dev, bytes, &da));
    OK(vnpuMemAlloc(dev, bytes, &db));
    OK(vnpuMemAlloc(dev, bytes, &dout));
    OK(vnpuModuleLoadLibrary(dev, "add", "fp32", &mod));
    OK(vnpuModuleGetKernel(mod, "add", &add));
    OK(vnpuQueueCreate(dev, &q));
    OK(vnpuEventRecord(q, &start));
    OK(vnpuMemcpyHtoDAsync(da, 0, a, bytes, q));
    OK(vnpuMemcpyHtoDAsync(db, 0, b, bytes, q));
    vnpuArg args[4] = {{VNPU_ARG_BUFFER, da, 0, 0}, {VNPU_ARG_BUFFER, db, 0, 0},
                       {VNPU_ARG_BUFFER, dout, 0, 0}, {VNPU_ARG_INT, 0, n, 0}};
    OK(vnpuLaunchKernel(q, add, args, 4, &cycles));
    OK(vnpuMemcpyDtoHAsync(out, dout, 0, bytes, q));
    OK(vnpuEventRecord(q, &end));
    OK(vnpuQueueSynchronize(q));
    OK(vnpuEventElapsedTime(&ns, start, end));
    printf("add of %d floats: %llu card cycles, %.1f us from first copy to last (virtual time)\n", n,
           (unsigned long long)cycles, ns / 1e3);
    OK(vnpuEventDestroy(start));
    OK(vnpuEventDestroy(end));
    OK(vnpuQueueDestroy(q));
    OK(vnpuModuleUnload(mod));
    OK(vnpuMemFree(da));
    OK(vnpuMemFree(db));
    OK(vnpuMemFree(dout));
    return cycles;
}

static void check_add(const float *a, const float *b, const float *out, int n) {
    int i = 0;
    while (i < n && out[i] == a[i] + b[i])
        i++;
    CHECK(i == n, "out[%d] = %g, expected %g", i, out[i], a[i] + b[i]);
}

int main(int argc, char **argv) {
    vnpuPlatform platform;
    int32_t version = 0, count;
    OK(vnpuInit(0));   /* optional: starts the embedded Python now (any first call would) */
    if (argc > 1)
        OK(vnpuPlatformOpenCards(argv[1], 2, &platform));
    else
        OK(vnpuPlatformOpen(NULL, &platform));
    OK(vnpuGetVersion(&version));
    OK(vnpuDeviceGetCount(platform, &count));
    CHECK(version == VNPU_API_VERSION, "API version %d", version);
    CHECK(count >= 2, "%d cards", count);

    vnpuDevice dev, other;
    vnpuDeviceProperties props;
    uint64_t free_bytes, total_bytes;
    OK(vnpuDeviceGet(platform, 0, &dev));
    OK(vnpuDeviceGet(platform, 1, &other));
    OK(vnpuDeviceGetProperties(dev, &props));
    OK(vnpuMemGetInfo(dev, &free_bytes, &total_bytes));
    printf("%d cards; card 0: %s, %d PEs at %.2f GHz, %.1f GiB DRAM (%.1f free), PCIe Gen%d x%d\n", count,
           props.name, props.pes, props.clock_ghz, total_bytes / 1073741824.0, free_bytes / 1073741824.0,
           props.pcie_gen, props.pcie_lanes);

    /* 1. a tensor in, a library kernel, the result out and checked, the cycles read */
    const int n = 10000;
    float *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float)), *out = malloc(n * sizeof(float));
    for (int i = 0; i < n; i++) {
        a[i] = (float)i * 0.5f;
        b[i] = 1.0f / (float)(i + 1);
    }
    uint64_t cycles = run_add(dev, a, b, out, n);
    check_add(a, b, out, n);
    CHECK(cycles > 0, "the launch reported %llu cycles", (unsigned long long)cycles);
    printf("result checked against the host: %d elements equal\n", n);

    /* 2. bad handles: freed, made up, the wrong kind */
    vnpuBuffer buf;
    vnpuQueue q;
    OK(vnpuMemAlloc(dev, 4096, &buf));
    OK(vnpuQueueCreate(dev, &q));
    OK(vnpuMemFree(buf));
    EXPECT(VNPU_ERROR_INVALID_HANDLE, vnpuMemFree(buf));
    EXPECT(VNPU_ERROR_INVALID_HANDLE, vnpuMemcpyHtoDAsync(buf, 0, a, 16, q));
    EXPECT(VNPU_ERROR_INVALID_HANDLE, vnpuMemFree((vnpuBuffer)(uintptr_t)12345));
    EXPECT(VNPU_ERROR_INVALID_HANDLE, vnpuMemFree((vnpuBuffer)q));

    /* 3. bad arguments: the call changes nothing */
    OK(vnpuMemAlloc(dev, 64, &buf));
    EXPECT(VNPU_ERROR_INVALID_ARGUMENT, vnpuMemcpyHtoDAsync(buf, 32, a, 64, q));
    EXPECT(VNPU_ERROR_INVALID_ARGUMENT, vnpuMemcpyDtoHAsync(NULL, buf, 0, 64, q));
    EXPECT(VNPU_ERROR_INVALID_ARGUMENT, vnpuMemAlloc(dev, 0, &buf));
    OK(vnpuMemFree(buf));

    /* 4. out of memory, and the failed call leaves the free memory as it was */
    uint64_t before, after;
    OK(vnpuMemGetInfo(dev, &before, &total_bytes));
    EXPECT(VNPU_ERROR_OUT_OF_MEMORY, vnpuMemAlloc(dev, total_bytes + 65536, &buf));
    OK(vnpuMemGetInfo(dev, &after, &total_bytes));
    CHECK(before == after, "free memory %llu before, %llu after", (unsigned long long)before,
          (unsigned long long)after);

    /* 5. a bad module image and bad assembly */
    const char junk[64] = "this is not a vnpu module";
    vnpuModule mod;
    EXPECT(VNPU_ERROR_INVALID_MODULE, vnpuModuleLoadData(dev, junk, sizeof junk, &mod));
    EXPECT(VNPU_ERROR_ASSEMBLER, vnpuModuleLoadAssembly(dev, ".kernel k\n  frobnicate r1\n  halt\n", &mod));

    /* 6. a kernel that faults: the fault is sticky on its card until reset; the other card keeps working */
    vnpuKernel crash;
    OK(vnpuModuleLoadAssembly(dev, ".kernel crash\n  li r5, -8\n  lw r6, 0(r5)\n  halt\n", &mod));
    OK(vnpuModuleGetKernel(mod, "crash", &crash));
    EXPECT(VNPU_ERROR_INVALID_ARGUMENT, vnpuLaunchKernel(q, crash, NULL, 1, NULL));
    OK(vnpuLaunchKernel(q, crash, NULL, 0, NULL));   /* accepted; the fault shows on the next call */
    EXPECT(VNPU_ERROR_ILLEGAL_ADDRESS, vnpuQueueSynchronize(q));
    EXPECT(VNPU_ERROR_ILLEGAL_ADDRESS, vnpuMemAlloc(dev, 4096, &buf));
    EXPECT(VNPU_ERROR_ILLEGAL_ADDRESS, vnpuDeviceGetStatus(dev));
    OK(vnpuDeviceGetStatus(other));
    memset(out, 0, n * sizeof(float));
    run_add(other, a, b, out, n);
    check_add(a, b, out, n);
    printf("card 1 still computes while card 0 is faulted\n");
    OK(vnpuDeviceReset(dev));
    OK(vnpuDeviceGetStatus(dev));
    EXPECT(VNPU_ERROR_INVALID_HANDLE, vnpuModuleGetKernel(mod, "crash", &crash));   /* stale after the reset */
    memset(out, 0, n * sizeof(float));
    run_add(dev, a, b, out, n);
    check_add(a, b, out, n);
    printf("card 0 computes again after its reset\n");

    /* 7. the race sanitizer, on for one queue: a kernel reads local memory a DMA is still writing */
    static const char racy_source[] = ".kernel racy\n.arg a, buffer, f32\n  li r9, 1024\n  li r10, 4096\n"
                                      "  dma e0, r10, a, r9, s0\n  lw r5, 0(r10)\n  wait s0, 1\n  halt\n";
    vnpuQueue checked;
    vnpuKernel racy;
    uint32_t flags = 0;
    OK(vnpuQueueCreateWithFlags(dev, VNPU_QUEUE_SANITIZE, &checked));
    OK(vnpuQueueGetFlags(checked, &flags));
    CHECK(flags == VNPU_QUEUE_SANITIZE, "queue flags %u", (unsigned)flags);
    OK(vnpuModuleLoadAssembly(dev, racy_source, &mod));
    OK(vnpuModuleGetKernel(mod, "racy", &racy));
    OK(vnpuMemAlloc(dev, 4096, &buf));
    vnpuArg racy_args[1] = {{VNPU_ARG_BUFFER, buf, 0, 0}};
    OK(vnpuLaunchKernel(q, racy, racy_args, 1, NULL));           /* no sanitizer on q: it runs */
    OK(vnpuQueueSynchronize(q));
    OK(vnpuLaunchKernel(checked, racy, racy_args, 1, NULL));     /* accepted; the race is sticky */
    EXPECT(VNPU_ERROR_RACE, vnpuQueueSynchronize(checked));
    EXPECT(VNPU_ERROR_RACE, vnpuMemFree(buf));
    OK(vnpuDeviceReset(dev));
    OK(vnpuQueueDestroy(checked));

    /* 8. a closed platform: the platform handle is closed, every device is lost */
    OK(vnpuPlatformClose(platform));
    EXPECT(VNPU_ERROR_DEVICE_LOST, vnpuMemAlloc(dev, 4096, &buf));
    EXPECT(VNPU_ERROR_INVALID_HANDLE, vnpuDeviceGetCount(platform, &count));

    free(a);
    free(b);
    free(out);
    printf("vnpu_smoke: OK (%d checks)\n", checks);
    return 0;
}
