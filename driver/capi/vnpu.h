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
 * A compiled model (`vnpu compile MODEL -o model.vnpp`: its optimized graph, weights and placement)
 * loads with vnpuProgramLoad onto a platform's cards and serves a request per vnpuProgramRun, host buffers
 * in and out: a C/C++ host runs a model without Python code of its own.
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
#define VNPU_API_VERSION 3

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
    VNPU_ERROR_NOT_READY = 16,           /* vnpuEventQuery, vnpuEventElapsedTime: an event is not reached yet;
                                            vnpuProgramGetLatencyNs: the program has not run yet */
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
typedef struct vnpuProgram_st *vnpuProgram;

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

/* the element type of a program's input or output (dense, row-major; VNPU_DTYPE_BOOL is one byte, 0 or 1) */
typedef enum {
    VNPU_DTYPE_FLOAT32 = 0,
    VNPU_DTYPE_FLOAT16 = 1,              /* IEEE half */
    VNPU_DTYPE_INT8 = 2,
    VNPU_DTYPE_INT32 = 3,
    VNPU_DTYPE_INT64 = 4,
    VNPU_DTYPE_UINT8 = 5,
    VNPU_DTYPE_BOOL = 6,
    VNPU_DTYPE_FLOAT64 = 7
} vnpuDtype;

#define VNPU_MAX_DIMS 8

/* vnpuProgramGetInputInfo, vnpuProgramGetOutputInfo */
typedef struct {
    int32_t ndim;                  /* 0 (a scalar) .. VNPU_MAX_DIMS */
    int64_t dims[VNPU_MAX_DIMS];   /* dims[0 .. ndim-1]; the others are 0 */
    int32_t dtype;                 /* a vnpuDtype */
    uint64_t nbytes;               /* the product of dims times the element size: the exact size vnpuProgramRun
                                      takes for it */
    const char *name;              /* the graph's name of the tensor, NUL-terminated UTF-8; valid until the
                                      program is unloaded or its platform closed */
} vnpuTensorInfo;

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

/* compiled programs (`vnpu compile MODEL -o model.vnpp`, or Program.save in Python). A program runs on the
   first cards of the platform it is loaded on (as many as it was placed on: fewer is INVALID_ARGUMENT, as is
   a path that is no readable program file); its handle is INVALID_HANDLE after vnpuProgramUnload and
   DEVICE_LOST after vnpuPlatformClose, and every call on it returns the sticky fault of any of its cards */
vnpuStatus vnpuProgramLoad(vnpuPlatform platform, const char *path, vnpuProgram *program);
vnpuStatus vnpuProgramUnload(vnpuProgram program);
vnpuStatus vnpuProgramGetInputCount(vnpuProgram program, int32_t *count);
vnpuStatus vnpuProgramGetOutputCount(vnpuProgram program, int32_t *count);
vnpuStatus vnpuProgramGetInputInfo(vnpuProgram program, int32_t index, vnpuTensorInfo *info);
vnpuStatus vnpuProgramGetOutputInfo(vnpuProgram program, int32_t index, vnpuTensorInfo *info);
/* one request, synchronous: copies inputs[i] (input_nbytes[i] bytes, exactly input i's nbytes) to the
   cards, runs the program and copies result i to outputs[i] (output_nbytes[i], exactly output i's nbytes)
   before returning. ninputs and noutputs must be the program's counts; a wrong count or size, or a NULL
   array or element, is INVALID_ARGUMENT naming it, and nothing is written to the outputs unless the call
   succeeds. Each run starts the platform's virtual time at 0 (as Program.run in Python): events recorded on
   its queues before belong to the old timeline. Runs of one program from several threads take turns */
vnpuStatus vnpuProgramRun(vnpuProgram program, const void *const *inputs, const size_t *input_nbytes,
                          int32_t ninputs, void *const *outputs, const size_t *output_nbytes, int32_t noutputs);
vnpuStatus vnpuProgramGetLatencyNs(vnpuProgram program, double *ns);   /* the last successful run's modeled
                                   latency (virtual ns, from its first input copy to its last output copy);
                                   VNPU_ERROR_NOT_READY before the first */
/* VNPU_API_END */

#ifdef __cplusplus
}
#endif

#endif /* VNPU_H */
