/* integrations.nagios._run: the per-run work of the Nagios collector's plugin runner, in C.
 *
 * Why hand-written: benchmarks/bench_nagios.py (500 checks of check_dummy every 60 s, against
 * Nagios 4 running the same checks in the same run) measured the pure-Python runner
 * (integrations.nagios.execute.PyRunner) at 1.45-1.55 ms of monbridge's own CPU per run against
 * Nagios' 0.70-0.77 ms: 2.00-2.10x Nagios' own CPU, 1.09-1.11x with the plugins' CPU. About
 * 0.1-0.15 ms of a run is the kernel's clone; most of the rest was the interpreter waking for
 * each event of each run (a pipe readable, a pipe at EOF, the exit), each wakeup of a cold
 * interpreter costing more than the work it did. Here those events are handled by a thread of
 * this module that never holds the GIL: it finds and spawns the plugin (vfork and exec), reads
 * the pipes (bounded), enforces each run's timeout, reaps, kills what is left of a group, and
 * hands the ended runs to Python in batches through one eventfd: the event loop wakes once per
 * batch, not once per event, and never waits for a spawn. With it, in the same benchmark under
 * light load (180 s runs): own CPU 1.45-1.63x Nagios' (six runs) where PyRunner takes 1.68-1.77x
 * (four); side by side in one run 1.58x against 1.77x, 1.45x against 1.77x, 1.54x against 1.71x;
 * with the plugins' CPU 0.90-1.00x against 0.99-1.01x. Of monbridge's 0.5 ms a run, this module's thread
 * spends about 0.12 ms (the kernel's vfork and the context switches around it most of it) and
 * the event loop's thread about 0.17 ms (benchmarks/README.md has the rest). Later, with the
 * runs of one turn of the loop launched on one wakeup of the thread, no wakeup when nothing is due
 * (it woke every 250 ms), results left to wait for the schedule's next wakeup (linger), and
 * costs elsewhere in the agent cut: 1.12-1.20x, with plugins 0.87-0.89x (three runs).
 *
 * What a run does is exactly what PyRunner does (a differential test runs both on the same
 * hostile plugins): vfork and exec, as glibc's posix_spawn (PyRunner's) does, of the resolved
 * path with the given argv and environment, a new session (own process group), stdin /dev/null,
 * stdout and stderr pipes, every other descriptor close-on-exec; up to `keep` bytes of stdout and 1024 of stderr kept,
 * reads of up to 65536 bytes, more read and dropped until `flood_bytes` have come through both,
 * then the group is SIGKILLed (flood); at the timeout the group is SIGKILLed (timed out) and the
 * run given up REAP_TIMEOUT s later if it has not ended; at the plugin's exit (a pidfd, or
 * waitpid polled every 50 ms where the kernel has no pidfd) what is in the pipes is read (four
 * reads at most each) and, when a pipe is still open (a process of the group holds it), the group
 * is SIGKILLed. A run ends once its exit is known and both pipes are at EOF. Python turns what
 * this module gives back (the status, the bytes, the flags) into the result, with the same code
 * as for PyRunner.
 *
 * Engine(batch_delay=0.02, use_pidfd=True, reap_timeout=5.0)
 *   .fileno()  the eventfd the event loop watches: readable when ended runs wait
 *   .start(token, paths, argv, envp, timeout, flood_bytes, keep, t0) queues a run: its program is
 *              the first of the candidate paths that is a regular file
 *   .hold(flag) while held, runs started are launched once it is released (one wakeup of the
 *              thread for all), and ended runs are not handed over for having no run left going
 *   .linger(s) while s > 0, ended runs are handed over only once the first has waited s seconds
 *              (Python collects them sooner when it wakes for something else); 0: as usual
 *   .collect() -> [(token, status or None, out, err, more, flooded, timed_out, duration, failed), ...]
 *              failed: None; ("missing", i): candidate i is a file but not executable, or none is
 *              a file (i = -1); ("errno", n): the pipes or the spawn failed with errno n
 *   .running   runs started and not ended
 *   .close()   -> [pids killed and not reaped yet]; kills every run still going, no result
 * Ended runs are handed over when no run is left going (and Python is not starting more: hold),
 * or when the first of them has waited batch_delay seconds.
 */

#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CHUNK 65536
#define ERR_KEEP 1024
#define POLL_FIRST 0.01
#define POLL_EVERY 0.05
#define ORPHAN_POLL 1.0
#define CTL_TAG UINT64_MAX
enum { K_OUT = 0, K_ERR = 1, K_PID = 2 };

typedef struct Run {
    PyObject *token; /* owned; touched only with the GIL */
    pid_t pid;
    int out_fd, err_fd, pidfd;
    char *out;
    size_t out_len, keep;
    char err[ERR_KEEP];
    size_t err_len;
    long long budget;
    int more, flooded, timed_out, give_up, has_status, status, open, polled;
    double deadline, t0, next_poll, ended_at, timeout;
    size_t slot;
    struct Run *next; /* in the queue of runs to start, then in the list of ended runs */
    /* what to start (one block: the strings and the arrays pointing into it), freed once started */
    char *req, **paths, **argv, **envp;
    size_t n_paths;
    int failed;         /* 0; FAIL_MISSING (failed_value: the index of the file not executable, or -1); FAIL_ERRNO */
    long failed_value;
} Run;
enum { FAIL_MISSING = 1, FAIL_ERRNO = 2 };

typedef struct {
    PyObject_HEAD
    int epfd, evfd, ctlfd;
    pthread_t thread;
    int thread_started;
    pthread_mutex_t mu;
    Run **slots;
    size_t nslots, running;
    Run *done_head, *done_tail;
    Run *queue_head, *queue_tail; /* to start, in order */
    sigset_t child_mask;          /* the signal mask of the thread that made the engine: the plugins' */
    int notified, stop, closed, use_pidfd, held;
    double batch_delay, reap_timeout;
    double linger; /* > 0: ended runs are handed over only once the first has waited this long (linger()) */
    pid_t *orphans;
    size_t norphans, corphans;
    double next_orphan_poll;
    char buf[CHUNK];
} Engine;

static double mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void kill_group(pid_t pid) { (void)kill(-pid, SIGKILL); }

static void drop_fd(Engine *e, int *fd) {
    if (*fd >= 0) {
        (void)epoll_ctl(e->epfd, EPOLL_CTL_DEL, *fd, NULL);
        close(*fd);
        *fd = -1;
    }
}

static void add_orphan(Engine *e, pid_t pid) {
    if (e->norphans == e->corphans) {
        size_t n = e->corphans ? 2 * e->corphans : 16;
        pid_t *p = realloc(e->orphans, n * sizeof *p);
        if (p == NULL) { /* no memory: a blocking reap would stall the thread; the zombie stays */
            return;
        }
        e->orphans = p;
        e->corphans = n;
    }
    e->orphans[e->norphans++] = pid;
}

/* One read of the pipe; 0 once nothing more is there for now (nothing to read, or EOF). */
static int read_pipe(Engine *e, Run *r, int which) {
    char *buf = e->buf; /* only the engine's thread reads */
    int *fd = which == K_OUT ? &r->out_fd : &r->err_fd;
    if (*fd < 0) return 0;
    ssize_t n = read(*fd, buf, CHUNK);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return 0;
    if (n <= 0) {
        drop_fd(e, fd);
        r->open--;
        return 0;
    }
    size_t got = (size_t)n;
    if (which == K_OUT) {
        size_t room = r->keep > r->out_len ? r->keep - r->out_len : 0;
        size_t take = got < room ? got : room;
        memcpy(r->out + r->out_len, buf, take);
        r->out_len += take;
        if (got > room) r->more = 1;
    } else {
        size_t room = ERR_KEEP - r->err_len;
        size_t take = got < room ? got : room;
        memcpy(r->err + r->err_len, buf, take);
        r->err_len += take;
    }
    r->budget -= (long long)got;
    if (r->budget < 0 && !r->flooded) {
        r->flooded = 1;
        kill_group(r->pid);
    }
    return 1;
}

static void reap(Engine *e, Run *r) {
    int status = 0;
    pid_t got = waitpid(r->pid, &status, WNOHANG);
    if (got == 0) return;
    if (got < 0) {
        if (errno != ECHILD) return;
        status = 255 << 8; /* reaped elsewhere: its status is lost */
    }
    r->has_status = 1;
    r->status = status;
    drop_fd(e, &r->pidfd);
    for (int i = 0; i < 4 && read_pipe(e, r, K_OUT); i++) {}
    for (int i = 0; i < 4 && read_pipe(e, r, K_ERR); i++) {}
    if (r->open) kill_group(r->pid); /* what is left of its group still holds the output */
}

static void push_done(Engine *e, Run *r, double now) {
    r->ended_at = now;
    r->next = NULL;
    if (e->done_tail) e->done_tail->next = r;
    else e->done_head = r;
    e->done_tail = r;
}

/* The run is over: its group killed if it still runs, descriptors closed, queued for Python. */
static void end_run(Engine *e, Run *r, double now) {
    if (!r->has_status) {
        kill_group(r->pid);
        int status;
        if (waitpid(r->pid, &status, WNOHANG) == 0) add_orphan(e, r->pid);
    }
    drop_fd(e, &r->out_fd);
    drop_fd(e, &r->err_fd);
    drop_fd(e, &r->pidfd);
    r->open = 0;
    e->slots[r->slot] = NULL;
    e->running--;
    push_done(e, r, now);
}

static void free_run(Run *r) {
    free(r->req);
    free(r->out);
    free(r);
}


/* Timeouts, polled exits, orphans; returns the next time something is due (INFINITY: none). */
static double due(Engine *e, double now) {
    double next = INFINITY;
    for (size_t i = 0; i < e->nslots; i++) {
        Run *r = e->slots[i];
        if (r == NULL) continue;
        if (r->polled && !r->has_status && r->next_poll <= now) {
            reap(e, r);
            r->next_poll = now + POLL_EVERY;
            if (r->has_status && !r->open) {
                end_run(e, r, now);
                continue;
            }
        }
        if (r->deadline <= now) {
            if (r->give_up) { /* the killed group did not end in time (stuck in the kernel): reaped later */
                end_run(e, r, now);
                continue;
            }
            r->timed_out = 1;
            r->give_up = 1;
            kill_group(r->pid);
            r->deadline = now + e->reap_timeout;
        }
        if (r->deadline < next) next = r->deadline;
        if (r->polled && !r->has_status && r->next_poll < next) next = r->next_poll;
    }
    if (e->norphans) {
        if (e->next_orphan_poll <= now) {
            size_t k = 0;
            for (size_t i = 0; i < e->norphans; i++) {
                int status;
                pid_t got = waitpid(e->orphans[i], &status, WNOHANG);
                if (got == 0) e->orphans[k++] = e->orphans[i];
            }
            e->norphans = k;
            e->next_orphan_poll = now + ORPHAN_POLL;
        }
        if (e->norphans && e->next_orphan_poll < next) next = e->next_orphan_poll;
    }
    return next;
}

static int store(Engine *e, Run *r);
static int spawn(const char *path, char **argv, char **envp, int out_w, int err_w, const sigset_t *mask, pid_t *pid);

/* Start a queued run (in the thread, without the mutex): the program is the first of the
 * candidates that is a regular file (after symlinks), as os.path.isfile and os.access find it.
 * 0 once started; else r->failed says why. */
static int launch(Engine *e, Run *r) {
    const char *path = NULL;
    long found = -1;
    for (size_t i = 0; i < r->n_paths; i++) {
        struct stat st;
        if (stat(r->paths[i], &st) == 0 && S_ISREG(st.st_mode)) {
            found = (long)i;
            if (access(r->paths[i], X_OK) == 0) path = r->paths[i];
            break;
        }
    }
    if (path == NULL) {
        r->failed = FAIL_MISSING;
        r->failed_value = found;
        return -1;
    }
    int p_out[2] = {-1, -1}, p_err[2] = {-1, -1}, err = 0;
    pid_t pid = -1;
    /* the plugin's ends block, as any program expects of its stdout; ours do not */
    if (pipe2(p_out, O_CLOEXEC) < 0 || pipe2(p_err, O_CLOEXEC) < 0 || fcntl(p_out[0], F_SETFL, O_NONBLOCK) < 0
        || fcntl(p_err[0], F_SETFL, O_NONBLOCK) < 0) {
        err = errno;
    } else {
        err = spawn(path, r->argv, r->envp, p_out[1], p_err[1], &e->child_mask, &pid);
    }
    if (p_out[1] >= 0) close(p_out[1]);
    if (p_err[1] >= 0) close(p_err[1]);
    free(r->req);
    r->req = NULL;
    if (err) {
        if (p_out[0] >= 0) close(p_out[0]);
        if (p_err[0] >= 0) close(p_err[0]);
        r->failed = FAIL_ERRNO;
        r->failed_value = err;
        return -1;
    }
    r->pid = pid;
    r->out_fd = p_out[0];
    r->err_fd = p_err[0];
    r->open = 2;
    double now = mono();
    r->deadline = now + r->timeout;
    if (e->use_pidfd) {
#ifdef SYS_pidfd_open
        r->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
        if (r->pidfd >= 0) (void)fcntl(r->pidfd, F_SETFD, FD_CLOEXEC);
#endif
    }
    if (r->pidfd < 0) {
        r->polled = 1;
        r->next_poll = now + POLL_FIRST;
    }
    return 0;
}

/* Start every queued run, until the engine stops (called and returning with the mutex held). */
static void launch_queued(Engine *e) {
    while (e->queue_head != NULL && !e->stop) {
        Run *r = e->queue_head;
        e->queue_head = r->next;
        if (e->queue_head == NULL) e->queue_tail = NULL;
        r->next = NULL;
        pthread_mutex_unlock(&e->mu);
        int rc = launch(e, r);
        pthread_mutex_lock(&e->mu);
        if (rc == 0 && store(e, r) < 0) { /* no memory for its slot: it goes */
            kill_group(r->pid);
            int status;
            if (waitpid(r->pid, &status, WNOHANG) == 0) add_orphan(e, r->pid);
            close(r->out_fd);
            close(r->err_fd);
            if (r->pidfd >= 0) close(r->pidfd);
            r->out_fd = r->err_fd = r->pidfd = -1;
            r->failed = FAIL_ERRNO;
            r->failed_value = ENOMEM;
            rc = -1;
        }
        if (rc != 0) {
            e->running--;
            push_done(e, r, mono());
            continue;
        }
        struct epoll_event ev = {.events = EPOLLIN};
        ev.data.u64 = ((uint64_t)r->slot << 2) | K_OUT;
        epoll_ctl(e->epfd, EPOLL_CTL_ADD, r->out_fd, &ev);
        ev.data.u64 = ((uint64_t)r->slot << 2) | K_ERR;
        epoll_ctl(e->epfd, EPOLL_CTL_ADD, r->err_fd, &ev);
        if (r->pidfd >= 0) {
            ev.data.u64 = ((uint64_t)r->slot << 2) | K_PID;
            epoll_ctl(e->epfd, EPOLL_CTL_ADD, r->pidfd, &ev);
        }
    }
}

static void *loop(void *arg) {
    Engine *e = arg;
    struct epoll_event evs[64];
    pthread_mutex_lock(&e->mu);
    for (;;) {
        launch_queued(e);
        double now = mono();
        double next = due(e, now);
        if (e->done_head && !e->notified) {
            double wait = e->linger > 0 ? e->linger : e->batch_delay;
            if ((e->linger <= 0 && e->running == 0 && !e->held) || now - e->done_head->ended_at >= wait) {
                uint64_t one = 1;
                (void)!write(e->evfd, &one, sizeof one);
                e->notified = 1;
            } else if (e->done_head->ended_at + wait < next) {
                next = e->done_head->ended_at + wait;
            }
        }
        if (e->stop) break;
        /* nothing due: it sleeps until a start, a hold released or close writes the control eventfd */
        int timeout_ms = -1;
        if (next < INFINITY) {
            double ms = ceil((next - now) * 1000.0);
            timeout_ms = ms < 0 ? 0 : ms > 3600000.0 ? 3600000 : (int)ms;
        }
        pthread_mutex_unlock(&e->mu);
        int n = epoll_wait(e->epfd, evs, 64, timeout_ms);
        pthread_mutex_lock(&e->mu);
        if (e->stop) break;
        now = mono();
        for (int i = 0; i < n; i++) {
            uint64_t tag = evs[i].data.u64;
            if (tag == CTL_TAG) {
                uint64_t v;
                (void)!read(e->ctlfd, &v, sizeof v);
                continue;
            }
            size_t slot = (size_t)(tag >> 2);
            int kind = (int)(tag & 3);
            Run *r = slot < e->nslots ? e->slots[slot] : NULL;
            if (r == NULL) continue;
            if (kind == K_PID) {
                if (r->pidfd >= 0) reap(e, r);
            } else {
                read_pipe(e, r, kind);
            }
            if (r->has_status && !r->open) end_run(e, r, now);
        }
    }
    pthread_mutex_unlock(&e->mu);
    return NULL;
}

/* What the child does between vfork and exec, as glibc's posix_spawn does it with the attributes
 * PyRunner gives (POSIX_SPAWN_SETSID; open /dev/null on 0, dup2 the pipes on 1 and 2): caught
 * signals back to their default, a new session, the descriptors, the parent's signal mask, exec.
 * Only system calls: it shares the parent's memory. Its errno goes back through *err. */
static void __attribute__((noreturn)) child(const char *path, char **argv, char **envp, int out_w, int err_w,
                                            const sigset_t *mask, volatile int *err) {
    for (int sig = 1; sig < NSIG; sig++) {
        struct sigaction sa;
        if (sig == SIGKILL || sig == SIGSTOP || sigaction(sig, NULL, &sa) != 0) continue;
        if (sa.sa_handler != SIG_IGN && sa.sa_handler != SIG_DFL) {
            memset(&sa, 0, sizeof sa);
            sa.sa_handler = SIG_DFL;
            (void)sigaction(sig, &sa, NULL);
        }
    }
    if (setsid() < 0) goto fail;
    int fd = open("/dev/null", O_RDONLY);
    if (fd < 0) goto fail;
    if (fd != 0) {
        if (dup2(fd, 0) < 0) goto fail;
        close(fd);
    }
    int targets[2] = {1, 2}, sources[2] = {out_w, err_w};
    for (int i = 0; i < 2; i++) {
        if (sources[i] == targets[i]) { /* already there: kept across exec */
            int flags = fcntl(sources[i], F_GETFD);
            if (flags < 0 || fcntl(sources[i], F_SETFD, flags & ~FD_CLOEXEC) < 0) goto fail;
        } else if (dup2(sources[i], targets[i]) < 0) {
            goto fail;
        }
    }
    sigprocmask(SIG_SETMASK, mask, NULL);
    execve(path, argv, envp);
fail:
    *err = errno ? errno : ECHILD;
    _exit(127);
}

/* vfork and exec (no copy of the agent's memory, no stack to map as posix_spawn maps one);
 * 0, or the errno of what failed. */
static int spawn(const char *path, char **argv, char **envp, int out_w, int err_w, const sigset_t *mask, pid_t *pid) {
    sigset_t all, old;
    volatile int err = 0;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old); /* no handler of the agent's may run in the child */
    pid_t got = vfork();
    if (got == 0) child(path, argv, envp, out_w, err_w, mask, &err);
    int saved = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (got < 0) return saved;
    if (err) { /* the exec failed: the child has exited with 127 */
        int status;
        while (waitpid(got, &status, 0) < 0 && errno == EINTR) {}
        return err;
    }
    *pid = got;
    return 0;
}

/* ------------------------------------------------------------------------------------ Python */

static void wake_thread(Engine *e) {
    uint64_t one = 1;
    (void)!write(e->ctlfd, &one, sizeof one);
}

static int engine_init(Engine *e, PyObject *args, PyObject *kw) {
    static char *names[] = {"batch_delay", "use_pidfd", "reap_timeout", NULL};
    double batch_delay = 0.02, reap_timeout = 5.0;
    int use_pidfd = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|dpd:Engine", names, &batch_delay, &use_pidfd, &reap_timeout))
        return -1;
    if (e->epfd >= 0 || e->thread_started) {
        PyErr_SetString(PyExc_RuntimeError, "Engine initialized twice");
        return -1;
    }
    e->batch_delay = batch_delay;
    e->reap_timeout = reap_timeout;
    e->use_pidfd = use_pidfd;
    e->epfd = epoll_create1(EPOLL_CLOEXEC);
    e->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    e->ctlfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (e->epfd < 0 || e->evfd < 0 || e->ctlfd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = CTL_TAG};
    if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, e->ctlfd, &ev) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    sigset_t all, old; /* the thread takes no signal: they go to the interpreter's threads */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    e->child_mask = old;
    int rc = pthread_create(&e->thread, NULL, loop, e);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        errno = rc;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    e->thread_started = 1;
    (void)pthread_setname_np(e->thread, "nagios-runner");
    return 0;
}

static PyObject *engine_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    Engine *e = (Engine *)type->tp_alloc(type, 0);
    if (e == NULL) return NULL;
    e->epfd = e->evfd = e->ctlfd = -1;
    pthread_mutex_init(&e->mu, NULL);
    return (PyObject *)e;
}

static int store(Engine *e, Run *r) {
    for (size_t i = 0; i < e->nslots; i++) {
        if (e->slots[i] == NULL) {
            r->slot = i;
            e->slots[i] = r;
            return 0;
        }
    }
    size_t n = e->nslots ? 2 * e->nslots : 16;
    Run **s = realloc(e->slots, n * sizeof *s);
    if (s == NULL) return -1;
    memset(s + e->nslots, 0, (n - e->nslots) * sizeof *s);
    r->slot = e->nslots;
    s[e->nslots] = r;
    e->slots = s;
    e->nslots = n;
    return 0;
}

/* Strings of a tuple of bytes, copied to *at; the array of pointers to them at *arr. */
static int pack(PyObject *tuple, char ***arr, char **at, const char *what) {
    Py_ssize_t n = PyTuple_GET_SIZE(tuple);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyTuple_GET_ITEM(tuple, i);
        if (!PyBytes_Check(item)) {
            PyErr_Format(PyExc_TypeError, "%s: bytes expected", what);
            return -1;
        }
        Py_ssize_t len = PyBytes_GET_SIZE(item);
        const char *src = PyBytes_AS_STRING(item);
        if ((Py_ssize_t)strlen(src) != len) {
            PyErr_Format(PyExc_ValueError, "%s: embedded null byte", what);
            return -1;
        }
        memcpy(*at, src, (size_t)len + 1);
        (*arr)[i] = *at;
        *at += len + 1;
    }
    (*arr)[n] = NULL;
    return 0;
}

static size_t packed_size(PyObject *tuple) {
    size_t size = ((size_t)PyTuple_GET_SIZE(tuple) + 1) * sizeof(char *);
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(tuple); i++) {
        PyObject *item = PyTuple_GET_ITEM(tuple, i);
        if (PyBytes_Check(item)) size += (size_t)PyBytes_GET_SIZE(item) + 1;
    }
    return size;
}

static PyObject *engine_start(Engine *e, PyObject *args) {
    PyObject *token, *paths_obj, *argv_obj, *envp_obj;
    double timeout, t0;
    long long flood_bytes;
    Py_ssize_t keep;
    if (!PyArg_ParseTuple(args, "OO!O!O!dLnd:start", &token, &PyTuple_Type, &paths_obj, &PyTuple_Type, &argv_obj,
                          &PyTuple_Type, &envp_obj, &timeout, &flood_bytes, &keep, &t0))
        return NULL;
    if (e->closed || e->epfd < 0) {
        PyErr_SetString(PyExc_RuntimeError, "the plugin runner is closed");
        return NULL;
    }
    if (keep < 0) keep = 0;
    if (isnan(timeout)) {
        PyErr_SetString(PyExc_ValueError, "timeout is not a number");
        return NULL;
    }
    if (PyTuple_GET_SIZE(paths_obj) == 0 || PyTuple_GET_SIZE(argv_obj) == 0) {
        PyErr_SetString(PyExc_ValueError, "start: no program to run");
        return NULL;
    }
    /* pointer arrays first (aligned), then the strings */
    size_t ptrs = ((size_t)PyTuple_GET_SIZE(paths_obj) + PyTuple_GET_SIZE(argv_obj) + PyTuple_GET_SIZE(envp_obj) + 3)
                  * sizeof(char *);
    size_t size = packed_size(paths_obj) + packed_size(argv_obj) + packed_size(envp_obj);
    Run *r = calloc(1, sizeof *r);
    char *out = malloc((size_t)keep + 1);
    char *req = malloc(size);
    if (r == NULL || out == NULL || req == NULL) {
        free(r);
        free(out);
        free(req);
        return PyErr_NoMemory();
    }
    r->out = out;
    r->req = req;
    r->paths = (char **)req;
    r->argv = r->paths + PyTuple_GET_SIZE(paths_obj) + 1;
    r->envp = r->argv + PyTuple_GET_SIZE(argv_obj) + 1;
    char *at = req + ptrs;
    if (pack(paths_obj, &r->paths, &at, "paths") < 0 || pack(argv_obj, &r->argv, &at, "argv") < 0
        || pack(envp_obj, &r->envp, &at, "envp") < 0) {
        free_run(r);
        return NULL;
    }
    r->n_paths = (size_t)PyTuple_GET_SIZE(paths_obj);
    r->keep = (size_t)keep;
    r->out_fd = r->err_fd = r->pidfd = -1;
    r->budget = flood_bytes;
    r->t0 = t0;
    r->timeout = timeout;
    Py_INCREF(token);
    r->token = token;
    pthread_mutex_lock(&e->mu);
    int wake = e->queue_head == NULL && !e->held; /* held: hold(False) wakes it for every run queued */
    if (e->queue_tail) e->queue_tail->next = r;
    else e->queue_head = r;
    e->queue_tail = r;
    e->running++;
    pthread_mutex_unlock(&e->mu);
    if (wake) wake_thread(e);
    Py_RETURN_NONE;
}

/* hold(True): Python is starting more runs: the thread is not woken for each (hold(False) wakes
 * it once for all of them: one wakeup a batch of starts), and ended runs are not handed over for
 * having no run left going; hold(False): they may be again. */
static PyObject *engine_hold(Engine *e, PyObject *flag) {
    int on = PyObject_IsTrue(flag);
    if (on < 0) return NULL;
    pthread_mutex_lock(&e->mu);
    int was = e->held;
    e->held = on;
    int wake = was && !on && e->thread_started
               && (e->queue_head != NULL || (e->done_head != NULL && !e->notified && e->running == 0));
    pthread_mutex_unlock(&e->mu);
    if (wake) wake_thread(e);
    Py_RETURN_NONE;
}

/* linger(seconds): ended runs wait until the first of them has waited that long (Python collects
 * them sooner on its own, with collect()); linger(0): handed over as usual again. */
static PyObject *engine_linger(Engine *e, PyObject *arg) {
    double v = PyFloat_AsDouble(arg);
    if (v == -1.0 && PyErr_Occurred()) return NULL;
    if (isnan(v) || v < 0) {
        PyErr_SetString(PyExc_ValueError, "linger: seconds must be 0 or more");
        return NULL;
    }
    pthread_mutex_lock(&e->mu);
    int wake = v < e->linger && e->done_head != NULL && !e->notified && e->thread_started;
    e->linger = v;
    pthread_mutex_unlock(&e->mu);
    if (wake) wake_thread(e); /* what waits may be due now */
    Py_RETURN_NONE;
}

static PyObject *engine_collect(Engine *e, PyObject *unused) {
    if (e->evfd < 0) return PyList_New(0);
    pthread_mutex_lock(&e->mu);
    Run *head = e->done_head;
    e->done_head = e->done_tail = NULL;
    e->notified = 0;
    uint64_t v;
    (void)!read(e->evfd, &v, sizeof v);
    pthread_mutex_unlock(&e->mu);
    PyObject *list = PyList_New(0);
    while (head != NULL) {
        Run *r = head;
        head = r->next;
        if (list != NULL) {
            PyObject *status = r->has_status ? PyLong_FromLong(r->status) : Py_NewRef(Py_None);
            PyObject *failed = r->failed == FAIL_MISSING ? Py_BuildValue("(sl)", "missing", r->failed_value)
                               : r->failed == FAIL_ERRNO   ? Py_BuildValue("(sl)", "errno", r->failed_value)
                                                           : Py_NewRef(Py_None);
            PyObject *t = NULL;
            if (status == NULL || failed == NULL) {
                Py_XDECREF(status);
                Py_XDECREF(failed);
            } else { /* N: the tuple takes status and failed, or drops them if it cannot be made */
                t = Py_BuildValue(
                    "(ONy#y#OOOdN)", r->token, status, r->out, (Py_ssize_t)r->out_len, r->err, (Py_ssize_t)r->err_len,
                    r->more ? Py_True : Py_False, r->flooded ? Py_True : Py_False, r->timed_out ? Py_True : Py_False,
                    r->ended_at - r->t0, failed);
            }

            if (t == NULL || PyList_Append(list, t) < 0) Py_CLEAR(list);
            Py_XDECREF(t);
        }
        Py_DECREF(r->token);
        free_run(r);
    }
    return list;
}

/* Stop the thread, kill and release every run; the pids not reaped yet go back to the caller. */
static PyObject *shut(Engine *e, int want_list) {
    if (e->closed) return want_list ? PyList_New(0) : NULL;
    e->closed = 1;
    if (e->thread_started) {
        pthread_mutex_lock(&e->mu);
        e->stop = 1;
        pthread_mutex_unlock(&e->mu);
        wake_thread(e);
        Py_BEGIN_ALLOW_THREADS
        pthread_join(e->thread, NULL);
        Py_END_ALLOW_THREADS
        e->thread_started = 0;
    }
    double now = mono();
    for (size_t i = 0; i < e->nslots; i++) {
        Run *r = e->slots[i];
        if (r != NULL) end_run(e, r, now);
    }
    Run *head = e->queue_head; /* never started */
    e->queue_head = e->queue_tail = NULL;
    while (head != NULL) {
        Run *r = head;
        head = r->next;
        Py_DECREF(r->token);
        free_run(r);
    }
    head = e->done_head;
    e->done_head = e->done_tail = NULL;
    while (head != NULL) {
        Run *r = head;
        head = r->next;
        Py_DECREF(r->token);
        free_run(r);
    }
    free(e->slots);
    e->slots = NULL;
    e->nslots = 0;
    PyObject *list = want_list ? PyList_New(0) : NULL;
    for (size_t i = 0; i < e->norphans; i++) {
        int status;
        if (waitpid(e->orphans[i], &status, WNOHANG) != 0) continue;
        if (list != NULL) {
            PyObject *p = PyLong_FromLong(e->orphans[i]);
            if (p == NULL || PyList_Append(list, p) < 0) Py_CLEAR(list);
            Py_XDECREF(p);
        }
    }
    free(e->orphans);
    e->orphans = NULL;
    e->norphans = e->corphans = 0;
    int *fds[] = {&e->epfd, &e->evfd, &e->ctlfd};
    for (size_t i = 0; i < 3; i++) {
        if (*fds[i] >= 0) close(*fds[i]);
        *fds[i] = -1;
    }
    return list;
}

static PyObject *engine_close(Engine *e, PyObject *unused) { return shut(e, 1); }

static PyObject *engine_fileno(Engine *e, PyObject *unused) {
    if (e->evfd < 0) {
        PyErr_SetString(PyExc_ValueError, "the plugin runner is closed");
        return NULL;
    }
    return PyLong_FromLong(e->evfd);
}

static PyObject *engine_running(Engine *e, void *unused) {
    pthread_mutex_lock(&e->mu);
    size_t n = e->running;
    pthread_mutex_unlock(&e->mu);
    return PyLong_FromSize_t(n);
}

static void engine_dealloc(Engine *e) {
    PyObject *orphans = shut(e, 0);
    Py_XDECREF(orphans);
    pthread_mutex_destroy(&e->mu);
    Py_TYPE(e)->tp_free((PyObject *)e);
}

static PyMethodDef engine_methods[] = {
    {"start", (PyCFunction)engine_start, METH_VARARGS,
     "start(token, paths, argv, envp, timeout, flood_bytes, keep, t0): queue one plugin's run"},
    {"hold", (PyCFunction)engine_hold, METH_O, "hold(flag): hold ended runs back while Python starts more"},
    {"linger", (PyCFunction)engine_linger, METH_O,
     "linger(seconds): ended runs wait up to that long to be handed over (0: as usual)"},
    {"collect", (PyCFunction)engine_collect, METH_NOARGS,
     "collect() -> [(token, status, out, err, more, flooded, timed_out, duration, failed)]: the runs ended since the "
     "last call"},
    {"close", (PyCFunction)engine_close, METH_NOARGS,
     "close() -> [pid]: kill every run still going, release everything; the pids not reaped yet"},
    {"fileno", (PyCFunction)engine_fileno, METH_NOARGS, "the eventfd that is readable when ended runs wait"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef engine_getset[] = {
    {"running", (getter)engine_running, NULL, "runs started and not ended", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject EngineType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "integrations.nagios._run.Engine",
    .tp_basicsize = sizeof(Engine),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Runs Nagios plugins from a thread of its own; ended runs come back in batches (see the module doc).",
    .tp_new = engine_new,
    .tp_init = (initproc)engine_init,
    .tp_dealloc = (destructor)engine_dealloc,
    .tp_methods = engine_methods,
    .tp_getset = engine_getset,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "integrations.nagios._run",
    "The Nagios plugin runner's per-run work in C (see integrations/nagios/_run.c for why and what).", -1, NULL,
};

PyMODINIT_FUNC PyInit__run(void) {
    if (PyType_Ready(&EngineType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&EngineType);
    if (PyModule_AddObject(m, "Engine", (PyObject *)&EngineType) < 0) {
        Py_DECREF(&EngineType);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "CHUNK", CHUNK) < 0 || PyModule_AddIntConstant(m, "ERR_KEEP", ERR_KEEP) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
