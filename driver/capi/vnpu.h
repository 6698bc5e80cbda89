/* vnpu.h: the C API of vnpu, the virtual inference-accelerator platform.
 *
 * Shaped like CUDA's driver API: a platform of cards (devices), device memory (buffers), modules and
 * their kernels, in-order queues with asynchronous copies and launches, events on a queue's timeline.
 * Every call returns a vnpuStatus; on failure vnpuGetLastErrorMessage() says what was wrong and where,
 * the call changed nothing and wrote no out-pointer. No function returns VNPU_SUCCESS for work it did not
 * do: if the embedded Python cannot start, or a call is interrupted, the status is VNPU_ERROR_INTERNAL.
 *
 * Handles are opaque pointers of a distinct type per kind (vnpuQueue, vnpuBuffer, ...), so the compiler
 * catches a queue passed as a buffer; the library never dereferences them but looks them up in a table on
 * every call: a freed, destroyed, stale (a buffer, module or kernel from before a reset), made-up or
 * wrong-kind handle, or a handle of another platform where two must belong together, is
 * VNPU_ERROR_INVALID_HANDLE, never a crash.
 *
 * Device faults (a kernel's illegal address, a race seen by the sanitizer, a watchdog timeout, ...) are
 * sticky, as in CUDA: the launch that faults is accepted, and from then on every call that names the card
 * or anything on it (its device handle, buffers, modules, kernels, queues, events) returns the fault's
 * status, vnpuDeviceGetStatus and vnpuEventQuery included, until vnpuDeviceReset(); the other cards keep
 * working. After vnpuPlatformClose, the platform handle is VNPU_ERROR_INVALID_HANDLE (it was closed, like
 * a freed buffer) and every handle of its devices and their objects is VNPU_ERROR_DEVICE_LOST.
 *
 * Times are the emulator's virtual time; a host thread's clock moves when it synchronizes, and by poll_ns
 * (1 us) each time vnpuEventQuery or vnpuEventElapsedTime says "not ready". The first call starts an
 * embedded Python; the host's signal dispositions (SIGINT stays as the host left it) and locale are as they
 * were before that call. Build the library with `vnpu capi build -o DIR` (docs/c-api.md); link with
 * -L DIR -lvnpu -Wl,-rpath,DIR.
 */
#ifndef VNPU_H
#define VNPU_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* VNPU_API_BEGIN: the part between the markers is also the declaration cffi compiles the library from */
#define VNPU_API_VERSION 2

typedef enum {
    VNPU_SUCCESS = 0,
    VNPU_ERROR_INVALID_ARGUMENT = 1,     /* wrong size, offset, type, signature, NULL pointer */
    VNPU_ERROR_INVALID_HANDLE = 2,       /* freed, stale after a reset, another card's, or not that kind */
    VNPU_ERROR_OUT_OF_MEMORY = 3,        /* an allocation does not fit the card's DRAM */
    VNPU_ERROR_INVALID_MODULE = 4,       /* a module image failed validation (message has the byte offset) */
    VNPU_ERROR_ASSEMBLER = 5,            /* assembly text did not assemble (message has line:column) */
    VNPU_ERROR_CONFIG = 6,               /* a platform or card configuration is invalid */
    VNPU_ERROR_DEVICE_LOST = 7,          /* the card's link is down, or the platform was closed */
    VNPU_ERROR_ILLEGAL_ADDRESS = 8,      /* a kernel touched memory it may not (sticky) */
    VNPU_ERROR_ILLEGAL_INSTRUCTION = 9,  /* a kernel executed an instruction the card cannot (sticky) */
    VNPU_ERROR_DEADLOCK = 10,            /* every PE waits on a semaphore no one will signal (sticky) */
    VNPU_ERROR_LAUNCH_TIMEOUT = 11,      /* the watchdog stopped a launch (sticky) */
    VNPU_ERROR_RACE = 12,                /* the sanitizer saw unordered accesses to the same bytes (sticky) */
    VNPU_ERROR_ECC_UNCORRECTABLE = 13,   /* a double-bit DRAM error in data read (sticky) */
    VNPU_ERROR_DMA_FAULT = 14,           /* a DMA engine reported an error (sticky) */
    VNPU_ERROR_DEVICE_FAULT = 15,        /* another fault on the card (sticky) */
    VNPU_ERROR_NOT_READY = 16,           /* vnpuEventQuery, vnpuEventElapsedTime: an event is not reached yet */
    VNPU_ERROR_INTERNAL = 99             /* a bug in vnpu, or its embedded Python could not start or was
                                            interrupted: the message says which */
} vnpuStatus;

/* opaque handles, one type per kind (as CUDA's CUstream, OpenCL's cl_mem); NULL is never a valid handle */
typedef struct vnpuPlatform_st *vnpuPlatform;
typedef struct vnpuDevice_st *vnpuDevice;
typedef struct vnpuBuffer_st *vnpuBuffer;
typedef struct vnpuModule_st *vnpuModule;
typedef struct vnpuKernel_st *vnpuKernel;
typedef struct vnpuQueue_st *vnpuQueue;
typedef struct vnpuEvent_st *vnpuEvent;

/* vnpuQueueCreateWithFlags: VNPU_QUEUE_SANITIZE runs every launch on the queue under the race sanitizer
   (unordered accesses to the same bytes are VNPU_ERROR_RACE, sticky like any fault); slower, for kernel
   development. Without it a queue follows the platform's `sanitize:` setting (off by default). */
typedef enum { VNPU_QUEUE_DEFAULT = 0, VNPU_QUEUE_SANITIZE = 1 } vnpuQueueFlags;

typedef struct {
    char name[64];                 /* the card configuration's name, NUL-terminated UTF-8 (a longer name is
                                      cut at a character boundary) */
    int32_t index;                 /* position behind the switch */
    int32_t pes;                   /* processing elements */
    double clock_ghz;
    uint64_t dram_bytes;
    uint64_t shared_sram_bytes;
    uint64_t local_memory_bytes;   /* per PE */
    int32_t dma_engines_per_pe;
    int32_t vector_width_bits;
    double peak_int8_tops;
    double dram_gbps;
    int32_t pcie_gen;
    int32_t pcie_lanes;
} vnpuDeviceProperties;

typedef enum { VNPU_ARG_BUFFER = 0, VNPU_ARG_INT = 1, VNPU_ARG_FLOAT = 2 } vnpuArgKind;

typedef struct {
    int32_t kind;                  /* a vnpuArgKind */
    vnpuBuffer buffer;             /* VNPU_ARG_BUFFER */
    int64_t i;                     /* VNPU_ARG_INT (scalars of any integer type) */
    double f;                      /* VNPU_ARG_FLOAT (f32 scalars; beyond the f32 range: INVALID_ARGUMENT) */
} vnpuArg;

/* initialization, errors and versions */
vnpuStatus vnpuInit(uint32_t flags);                   /* optional (any first call initializes): starts the
                                                          embedded Python now; flags must be 0 */
const char *vnpuGetErrorName(vnpuStatus status);       /* "VNPU_ERROR_OUT_OF_MEMORY"; static storage */
const char *vnpuGetLastErrorMessage(void);             /* this thread's last failure; "" if none */
vnpuStatus vnpuGetVersion(int32_t *api_version);

/* platform and devices */
vnpuStatus vnpuPlatformOpen(const char *yaml_path, vnpuPlatform *platform);   /* NULL: the default platform */
vnpuStatus vnpuPlatformOpenCards(const char *card, int32_t cards, vnpuPlatform *platform);
vnpuStatus vnpuPlatformClose(vnpuPlatform platform);   /* frees it all; the platform handle is then
                                                          INVALID_HANDLE, its objects' handles DEVICE_LOST */
vnpuStatus vnpuDeviceGetCount(vnpuPlatform platform, int32_t *count);
vnpuStatus vnpuDeviceGet(vnpuPlatform platform, int32_t index, vnpuDevice *device);   /* one handle per card */
vnpuStatus vnpuDeviceGetProperties(vnpuDevice device, vnpuDeviceProperties *properties);
vnpuStatus vnpuDeviceGetStatus(vnpuDevice device);     /* the sticky fault's status, or VNPU_SUCCESS (no
                                                          side effects) */
vnpuStatus vnpuDeviceSynchronize(vnpuDevice device);
vnpuStatus vnpuDeviceReset(vnpuDevice device);         /* clears the sticky fault; frees the card's buffers
                                                          and modules (their handles go stale); the device,
                                                          queues and events stay */
vnpuStatus vnpuMemGetInfo(vnpuDevice device, uint64_t *free_bytes, uint64_t *total_bytes);

/* memory */
vnpuStatus vnpuMemAlloc(vnpuDevice device, uint64_t nbytes, vnpuBuffer *buffer);
vnpuStatus vnpuMemFree(vnpuBuffer buffer);
vnpuStatus vnpuBufferGetInfo(vnpuBuffer buffer, uint64_t *device_address, uint64_t *nbytes);

/* modules and kernels */
vnpuStatus vnpuModuleLoadData(vnpuDevice device, const void *image, size_t nbytes, vnpuModule *module);
vnpuStatus vnpuModuleLoadFile(vnpuDevice device, const char *path, vnpuModule *module);
vnpuStatus vnpuModuleLoadAssembly(vnpuDevice device, const char *source, vnpuModule *module);
vnpuStatus vnpuModuleLoadLibrary(vnpuDevice device, const char *op, const char *dtype, vnpuModule *module);
vnpuStatus vnpuModuleUnload(vnpuModule module);
vnpuStatus vnpuModuleGetKernel(vnpuModule module, const char *name, vnpuKernel *kernel);   /* one per name */
vnpuStatus vnpuKernelGetArgCount(vnpuKernel kernel, int32_t *count);

/* queues, copies, launches */
vnpuStatus vnpuQueueCreate(vnpuDevice device, vnpuQueue *queue);   /* flags VNPU_QUEUE_DEFAULT */
vnpuStatus vnpuQueueCreateWithFlags(vnpuDevice device, uint32_t flags, vnpuQueue *queue);  /* vnpuQueueFlags */
vnpuStatus vnpuQueueGetFlags(vnpuQueue queue, uint32_t *flags);
vnpuStatus vnpuQueueDestroy(vnpuQueue queue);
vnpuStatus vnpuQueueSynchronize(vnpuQueue queue);
vnpuStatus vnpuQueueWaitEvent(vnpuQueue queue, vnpuEvent event);   /* the event may be of any card of the
                                                                      queue's platform */
vnpuStatus vnpuMemcpyHtoDAsync(vnpuBuffer dst, uint64_t dst_offset, const void *src, size_t nbytes,
                               vnpuQueue queue);
vnpuStatus vnpuMemcpyDtoHAsync(void *dst, vnpuBuffer src, uint64_t src_offset, size_t nbytes, vnpuQueue queue);
/* card to card through the platform's switch: `queue` must be a queue of dst's card (the copy is ordered
   on it and its waits; src may be on any card of the same platform, or the same card) */
vnpuStatus vnpuMemcpyPeerAsync(vnpuBuffer dst, uint64_t dst_offset, vnpuBuffer src, uint64_t src_offset,
                               size_t nbytes, vnpuQueue queue);
vnpuStatus vnpuLaunchKernel(vnpuQueue queue, vnpuKernel kernel, const vnpuArg *args, int32_t nargs,
                            uint64_t *cycles);      /* cycles may be NULL */

/* events */
vnpuStatus vnpuEventRecord(vnpuQueue queue, vnpuEvent *event);
vnpuStatus vnpuEventSynchronize(vnpuEvent event);
vnpuStatus vnpuEventQuery(vnpuEvent event);           /* VNPU_SUCCESS or VNPU_ERROR_NOT_READY (or the card's
                                                         sticky fault); each "not ready" moves this thread's
                                                         clock by poll_ns */
vnpuStatus vnpuEventElapsedTime(double *ns, vnpuEvent start, vnpuEvent end);   /* virtual ns; both events of
                                   one platform; VNPU_ERROR_NOT_READY (and *ns unwritten) until this thread
                                   has reached both, each time moving its clock by poll_ns as EventQuery */
vnpuStatus vnpuEventDestroy(vnpuEvent event);
/* VNPU_API_END */

#ifdef __cplusplus
}
#endif

#endif /* VNPU_H */
