/*
 * loadgen.c - lean WebSocket fan-out load generator for hvac-push benchmarks.
 *
 * Single thread, epoll, non-blocking sockets.  It opens N WebSocket client
 * connections to ws://HOST:PORT/PATH, parses the server's (unmasked) frames
 * and, for every text message that is not a snapshot, counts each
 * `"ts": <number>` it contains as one delivered point update and records
 * latency = CLOCK_REALTIME(now) - ts in a 10 us histogram.
 *
 * Usage: loadgen HOST PORT PATH CLIENTS DURATION_S WARMUP_S [BATCH] [INFLIGHT]
 *
 * With LOADGEN_PATHS=FILE in the environment, client i requests line
 * i % lines of FILE instead of PATH (e.g. half the clients on everything,
 * half on one unit each).
 *
 * Output: one JSON line on stdout.  Markers "# measure start" and
 * "# measure end" are written to stderr at the edges of the measurement
 * window so that a runner can sample the server's CPU over the same window.
 *
 * Everything is bounded: the process exits after WARMUP_S + DURATION_S
 * whatever happens, each connection gets at most MAX_ATTEMPTS attempts, each
 * attempt at most HANDSHAKE_TIMEOUT_S, and frames are capped at MAX_FRAME.
 *
 * Build: cc -O2 -o loadgen loadgen.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define BUCKET_US 10                      /* histogram resolution */
#define HIST_MAX_US 10000000LL            /* 10 s; beyond goes to overflow */
#define NBUCKETS (HIST_MAX_US / BUCKET_US)
#define MAX_ATTEMPTS 3
#define HANDSHAKE_TIMEOUT_S 10.0
#define RETRY_DELAY_S 0.2
#define MAX_FRAME (16u << 20)             /* refuse frames above 16 MiB */
#define MAX_HTTP_HEADER 8192
#define WS_KEY "aHZhYy1wdXNoLWxvYWRnbg=="  /* fixed: base64("hvac-push-loadgn") */
#define WS_ACCEPT "vx1thTNLcGUzVYnIZ52SuloOCcc="  /* its RFC 6455 accept */

enum cstate { ST_IDLE, ST_CONNECTING, ST_HANDSHAKE, ST_OPEN, ST_DONE };

struct conn {
    int fd;
    int state;
    int attempts;
    double deadline;      /* handshake deadline (monotonic) or retry time */
    unsigned char *pend;  /* bytes of an incomplete frame / http header */
    size_t pend_len, pend_cap;
    unsigned char *msg;   /* reassembly of a fragmented message */
    size_t msg_len, msg_cap;
    int msg_active;
    int msg_opcode;
    int msg_skip;         /* a fragmented snapshot: counted, not buffered */
    uint64_t updates;     /* point updates counted in the window */
    int ever_open;
};

static struct conn *conns;
static int nclients;
static const char *g_host, *g_path;
static int g_port;
static struct sockaddr_in g_addr;
static int epfd;
static char req_buf[1024];
static int req_len;
/* Per-client requests from LOADGEN_PATHS (NULL: everyone sends req_buf). */
static char **path_reqs;
static int *path_req_lens;
static int npath_reqs;

static uint64_t *hist;
static uint64_t hist_overflow, neg_latency;
static double lat_max_ms, lat_sum_ms;
static uint64_t lat_count;

static uint64_t frames_window, frames_total, snapshots, updates_window,
    updates_warmup, bytes_total, pings, closes_from_server, bad_frames;
static int n_open, n_failed, n_dropped, n_inflight, n_ever_open;
static int in_window;
static double t_last_connect;

static unsigned char *rbuf;
static size_t rbuf_cap = 1u << 20;

static double mono_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double real_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 +
           ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
}

static void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n);
    if (!q) {
        fprintf(stderr, "loadgen: out of memory\n");
        exit(2);
    }
    return q;
}

static void buf_append(unsigned char **buf, size_t *len, size_t *cap,
                       const unsigned char *data, size_t n) {
    if (*len + n > *cap) {
        size_t nc = *cap ? *cap : 256;
        while (nc < *len + n) nc *= 2;
        *buf = xrealloc(*buf, nc);
        *cap = nc;
    }
    memcpy(*buf + *len, data, n);
    *len += n;
}

static void conn_reset_buffers(struct conn *c) {
    c->pend_len = 0;
    c->msg_len = 0;
    c->msg_active = 0;
    c->msg_skip = 0;
}

static void conn_close_fd(struct conn *c) {
    if (c->fd >= 0) {
        epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
    }
}

/* A connection attempt failed before the upgrade: retry later or give up. */
static void attempt_failed(struct conn *c, double now) {
    conn_close_fd(c);
    conn_reset_buffers(c);
    n_inflight--;
    if (c->attempts >= MAX_ATTEMPTS) {
        c->state = ST_DONE;
        n_failed++;
    } else {
        c->state = ST_IDLE;
        c->deadline = now + RETRY_DELAY_S * c->attempts;
    }
}

/* An open connection went away (server close, reset, protocol error). */
static void open_conn_lost(struct conn *c) {
    conn_close_fd(c);
    c->state = ST_DONE;
    n_open--;
    n_dropped++;
}

static int start_connect(struct conn *c, double now) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    c->attempts++;
    n_inflight++;
    if (fd < 0) {
        c->fd = -1;
        attempt_failed(c, now);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->fd = fd;
    c->deadline = now + HANDSHAKE_TIMEOUT_S;
    int r = connect(fd, (struct sockaddr *)&g_addr, sizeof g_addr);
    if (r < 0 && errno != EINPROGRESS) {
        attempt_failed(c, now);
        return -1;
    }
    struct epoll_event ev;
    ev.events = EPOLLOUT | EPOLLIN | EPOLLRDHUP;
    ev.data.ptr = c;
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        attempt_failed(c, now);
        return -1;
    }
    c->state = ST_CONNECTING;
    return 0;
}

/* Send a small masked control frame (pong/close).  Best effort, no queue. */
static void send_control(struct conn *c, int opcode, const unsigned char *p,
                         size_t n) {
    unsigned char f[2 + 4 + 125];
    static const unsigned char mask[4] = {0x37, 0xfa, 0x21, 0x3d};
    if (n > 125) n = 125;
    f[0] = 0x80 | (opcode & 0x0f);
    f[1] = 0x80 | (unsigned char)n;
    memcpy(f + 2, mask, 4);
    for (size_t i = 0; i < n; i++) f[6 + i] = p[i] ^ mask[i & 3];
    ssize_t w = send(c->fd, f, 6 + n, MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)w;
}

static inline void record_latency(double lat_s) {
    if (lat_s < 0) {
        neg_latency++;
        lat_s = 0;
    }
    double ms = lat_s * 1e3;
    if (ms > lat_max_ms) lat_max_ms = ms;
    lat_sum_ms += ms;
    lat_count++;
    uint64_t us = (uint64_t)(lat_s * 1e6);
    uint64_t b = us / BUCKET_US;
    if (b >= NBUCKETS)
        hist_overflow++;
    else
        hist[b]++;
}

static inline int is_ws(unsigned char ch) {
    return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n';
}

/* Is this JSON text a snapshot?  Looks for "type" : "snapshot". */
static int is_snapshot(const unsigned char *p, size_t n) {
    const unsigned char *end = p + n;
    const unsigned char *s = p;
    while (s < end) {
        const unsigned char *q = memmem(s, end - s, "\"type\"", 6);
        if (!q) return 0;
        q += 6;
        while (q < end && is_ws(*q)) q++;
        if (q < end && *q == ':') {
            q++;
            while (q < end && is_ws(*q)) q++;
            return (size_t)(end - q) >= 10 && memcmp(q, "\"snapshot\"", 10) == 0;
        }
        s = q;
    }
    return 0;
}

/* Count each "ts": <number> of an update message. */
static void handle_text(struct conn *c, const unsigned char *p, size_t n,
                        double now_real) {
    if (in_window) frames_window++;
    frames_total++;
    if (is_snapshot(p, n)) {
        snapshots++;
        return;
    }
    const unsigned char *end = p + n;
    const unsigned char *s = p;
    char num[64];
    while (s < end) {
        const unsigned char *q = memmem(s, end - s, "\"ts\"", 4);
        if (!q) break;
        q += 4;
        while (q < end && is_ws(*q)) q++;
        if (q >= end || *q != ':') {
            s = q;
            continue;
        }
        q++;
        while (q < end && is_ws(*q)) q++;
        size_t k = 0;
        while (q < end && k < sizeof num - 1 &&
               ((*q >= '0' && *q <= '9') || *q == '.' || *q == '-' ||
                *q == '+' || *q == 'e' || *q == 'E'))
            num[k++] = (char)*q++;
        num[k] = 0;
        s = q;
        if (k == 0) continue; /* e.g. "ts": null */
        double ts = strtod(num, NULL);
        if (in_window) {
            updates_window++;
            c->updates++;
            record_latency(now_real - ts);
        } else {
            updates_warmup++;
        }
    }
}

/* Parse as many complete frames as possible from buf; return bytes consumed
 * or -1 on a fatal protocol error / server close. */
static long parse_frames(struct conn *c, unsigned char *buf, size_t len,
                         double now_real) {
    size_t off = 0;
    while (len - off >= 2) {
        unsigned char *f = buf + off;
        int fin = f[0] & 0x80;
        int opcode = f[0] & 0x0f;
        int masked = f[1] & 0x80;
        uint64_t plen = f[1] & 0x7f;
        size_t hdr = 2;
        if (plen == 126) {
            if (len - off < 4) break;
            plen = ((uint64_t)f[2] << 8) | f[3];
            hdr = 4;
        } else if (plen == 127) {
            if (len - off < 10) break;
            plen = 0;
            for (int i = 0; i < 8; i++) plen = (plen << 8) | f[2 + i];
            hdr = 10;
        }
        if (masked) hdr += 4;
        if (plen > MAX_FRAME) {
            bad_frames++;
            return -1;
        }
        if (len - off < hdr + plen) break;
        unsigned char *payload = f + hdr;
        if (masked) { /* servers must not mask, but be tolerant */
            unsigned char *m = f + hdr - 4;
            for (uint64_t i = 0; i < plen; i++) payload[i] ^= m[i & 3];
        }
        off += hdr + plen;
        switch (opcode) {
        case 0x0: /* continuation */
            if (!c->msg_active) {
                bad_frames++;
                break;
            }
            if (!c->msg_skip) {
                if (c->msg_len + plen > MAX_FRAME) {
                    bad_frames++;
                    return -1;
                }
                buf_append(&c->msg, &c->msg_len, &c->msg_cap, payload, plen);
            }
            if (fin) {
                c->msg_active = 0;
                if (c->msg_skip) { /* a snapshot: one message, no "ts" counted */
                    if (in_window) frames_window++;
                    frames_total++;
                    snapshots++;
                } else if (c->msg_opcode == 0x1) {
                    handle_text(c, c->msg, c->msg_len, now_real);
                }
                c->msg_len = 0;
                c->msg_skip = 0;
                if (c->msg_cap > (1u << 20)) { /* do not keep megabytes per client */
                    free(c->msg);
                    c->msg = NULL;
                    c->msg_cap = 0;
                }
            }
            break;
        case 0x1: /* text */
        case 0x2: /* binary */
            if (!fin) {
                /* The first fragment of a message (RFC 6455 5.4): the server
                 * sends large snapshots this way. A snapshot's type is in its
                 * first bytes; it is skipped rather than reassembled. */
                c->msg_active = 1;
                c->msg_opcode = opcode;
                c->msg_len = 0;
                c->msg_skip = opcode == 0x1 && is_snapshot(payload, plen);
                if (!c->msg_skip)
                    buf_append(&c->msg, &c->msg_len, &c->msg_cap, payload, plen);
            } else if (opcode == 0x1) {
                handle_text(c, payload, plen, now_real);
            } else {
                frames_total++;
            }
            break;
        case 0x8: /* close: echo the code and go */
            closes_from_server++;
            send_control(c, 0x8, payload, plen >= 2 ? 2 : 0);
            return -1;
        case 0x9: /* ping */
            pings++;
            send_control(c, 0xA, payload, plen);
            break;
        default: /* pong and reserved opcodes: ignore */
            break;
        }
    }
    return (long)off;
}

/* Read what is available on an open connection and process the frames. */
static void on_readable_open(struct conn *c) {
    size_t have = c->pend_len;
    if (have + 65536 > rbuf_cap) {
        while (have + 65536 > rbuf_cap) rbuf_cap *= 2;
        rbuf = xrealloc(rbuf, rbuf_cap);
    }
    if (have) memcpy(rbuf, c->pend, have);
    ssize_t r = recv(c->fd, rbuf + have, rbuf_cap - have, 0);
    if (r == 0) {
        open_conn_lost(c);
        return;
    }
    if (r < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
        open_conn_lost(c);
        return;
    }
    bytes_total += (uint64_t)r;
    size_t len = have + (size_t)r;
    long used = parse_frames(c, rbuf, len, real_now());
    if (used < 0) {
        open_conn_lost(c);
        return;
    }
    c->pend_len = 0;
    if ((size_t)used < len)
        buf_append(&c->pend, &c->pend_len, &c->pend_cap, rbuf + used,
                   len - (size_t)used);
}

/* Read the HTTP upgrade response; switch to OPEN on 101. */
static void on_readable_handshake(struct conn *c, double now) {
    unsigned char tmp[16384];
    ssize_t r = recv(c->fd, tmp, sizeof tmp, 0);
    if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
        attempt_failed(c, now);
        return;
    }
    if (r < 0) return;
    bytes_total += (uint64_t)r;
    buf_append(&c->pend, &c->pend_len, &c->pend_cap, tmp, (size_t)r);
    unsigned char *hend = memmem(c->pend, c->pend_len, "\r\n\r\n", 4);
    if (!hend) {
        if (c->pend_len > MAX_HTTP_HEADER) attempt_failed(c, now);
        return;
    }
    size_t hlen = (size_t)(hend - c->pend) + 4;
    if (c->pend_len < 12 || memcmp(c->pend, "HTTP/1.1 101", 12) != 0 ||
        !memmem(c->pend, hlen, WS_ACCEPT, strlen(WS_ACCEPT))) {
        attempt_failed(c, now);
        return;
    }
    c->state = ST_OPEN;
    c->ever_open = 1;
    n_inflight--;
    n_open++;
    n_ever_open++;
    t_last_connect = now;
    struct epoll_event ev;
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.ptr = c;
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
    /* frames that arrived together with the response header */
    size_t rest = c->pend_len - hlen;
    if (rest) {
        unsigned char *tail = malloc(rest);
        if (!tail) exit(2);
        memcpy(tail, c->pend + hlen, rest);
        c->pend_len = 0;
        long used = parse_frames(c, tail, rest, real_now());
        if (used < 0) {
            free(tail);
            open_conn_lost(c);
            return;
        }
        if ((size_t)used < rest)
            buf_append(&c->pend, &c->pend_len, &c->pend_cap, tail + used,
                       rest - (size_t)used);
        free(tail);
    } else {
        c->pend_len = 0;
    }
}

static void on_writable_connecting(struct conn *c, double now) {
    int err = 0;
    socklen_t el = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0 || err) {
        attempt_failed(c, now);
        return;
    }
    const char *req = req_buf;
    int len = req_len;
    if (npath_reqs) {
        int k = (int)(c - conns) % npath_reqs;
        req = path_reqs[k];
        len = path_req_lens[k];
    }
    ssize_t w = send(c->fd, req, len, MSG_NOSIGNAL);
    if (w != len) { /* a 200-byte request fits any fresh socket buffer */
        attempt_failed(c, now);
        return;
    }
    c->state = ST_HANDSHAKE;
    struct epoll_event ev;
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.ptr = c;
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

static double percentile(double q) {
    if (lat_count == 0) return 0;
    uint64_t target = (uint64_t)(q * (double)lat_count);
    if (target >= lat_count) target = lat_count - 1;
    uint64_t acc = 0;
    for (uint64_t b = 0; b < NBUCKETS; b++) {
        acc += hist[b];
        if (acc > target) /* upper edge of the bucket, in ms */
            return (double)((b + 1) * BUCKET_US) / 1000.0;
    }
    return lat_max_ms; /* in the overflow bucket */
}

static volatile sig_atomic_t g_stop;
static void on_signal(int s) {
    (void)s;
    g_stop = 1;
}

int main(int argc, char **argv) {
    if (argc < 7) {
        fprintf(stderr,
                "usage: %s HOST PORT PATH CLIENTS DURATION_S WARMUP_S "
                "[BATCH] [INFLIGHT]\n",
                argv[0]);
        return 2;
    }
    g_host = argv[1];
    g_port = atoi(argv[2]);
    g_path = argv[3];
    nclients = atoi(argv[4]);
    double duration = atof(argv[5]);
    double warmup = atof(argv[6]);
    int batch = argc > 7 ? atoi(argv[7]) : 32;
    int max_inflight = argc > 8 ? atoi(argv[8]) : 32;
    if (nclients < 1 || nclients > 1000000 || duration <= 0 || duration > 3600 ||
        warmup < 0 || warmup > 3600 || batch < 1 || max_inflight < 1 ||
        g_port <= 0 || g_port > 65535) {
        fprintf(stderr, "loadgen: bad arguments\n");
        return 2;
    }
    memset(&g_addr, 0, sizeof g_addr);
    g_addr.sin_family = AF_INET;
    g_addr.sin_port = htons((uint16_t)g_port);
    if (inet_pton(AF_INET, g_host, &g_addr.sin_addr) != 1) {
        fprintf(stderr, "loadgen: HOST must be a dotted IPv4 address\n");
        return 2;
    }
    req_len = snprintf(req_buf, sizeof req_buf,
                       "GET %s HTTP/1.1\r\n"
                       "Host: %s:%d\r\n"
                       "Upgrade: websocket\r\n"
                       "Connection: Upgrade\r\n"
                       "Sec-WebSocket-Key: " WS_KEY "\r\n"
                       "Sec-WebSocket-Version: 13\r\n"
                       "User-Agent: hvac-push-loadgen\r\n"
                       "\r\n",
                       g_path, g_host, g_port);
    if (req_len <= 0 || req_len >= (int)sizeof req_buf) {
        fprintf(stderr, "loadgen: path too long\n");
        return 2;
    }
    const char *paths_file = getenv("LOADGEN_PATHS");
    if (paths_file && *paths_file) {
        FILE *pf = fopen(paths_file, "r");
        if (!pf) {
            fprintf(stderr, "loadgen: cannot open LOADGEN_PATHS %s\n", paths_file);
            return 2;
        }
        char line[512];
        while (fgets(line, sizeof line, pf) && npath_reqs < 100000) {
            line[strcspn(line, "\r\n")] = 0;
            if (!*line) continue;
            path_reqs = realloc(path_reqs, sizeof(char *) * (npath_reqs + 1));
            path_req_lens = realloc(path_req_lens, sizeof(int) * (npath_reqs + 1));
            char *r = malloc(1024);
            int n = snprintf(r, 1024,
                             "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                             "Connection: Upgrade\r\nSec-WebSocket-Key: " WS_KEY "\r\n"
                             "Sec-WebSocket-Version: 13\r\nUser-Agent: hvac-push-loadgen\r\n\r\n",
                             line, g_host, g_port);
            if (n <= 0 || n >= 1024) {
                fprintf(stderr, "loadgen: path too long in LOADGEN_PATHS\n");
                return 2;
            }
            path_reqs[npath_reqs] = r;
            path_req_lens[npath_reqs] = n;
            npath_reqs++;
        }
        fclose(pf);
    }

    /* enough descriptors for every client plus slack */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 &&
        rl.rlim_cur < (rlim_t)nclients + 64) {
        rl.rlim_cur = (rlim_t)nclients + 64;
        if (rl.rlim_max != RLIM_INFINITY && rl.rlim_cur > rl.rlim_max)
            rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);

    hist = calloc(NBUCKETS, sizeof *hist);
    conns = calloc((size_t)nclients, sizeof *conns);
    rbuf = malloc(rbuf_cap);
    if (!hist || !conns || !rbuf) {
        fprintf(stderr, "loadgen: out of memory\n");
        return 2;
    }
    for (int i = 0; i < nclients; i++) conns[i].fd = -1;
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) {
        perror("epoll_create1");
        return 2;
    }

    double t0 = mono_now();
    double t_warm = t0 + warmup, t_end = t_warm + duration;
    double cpu_at_start = 0, cpu_at_end = 0, t_window_start = t_warm,
           t_window_end = t_end;
    int next_new = 0;    /* next never-tried client */
    double next_scan = t0;
    struct epoll_event evs[1024];
    int window_started = 0;

    for (;;) {
        double now = mono_now();
        if (!window_started && now >= t_warm) {
            window_started = 1;
            in_window = 1;
            t_window_start = now;
            cpu_at_start = cpu_seconds();
            fprintf(stderr, "# measure start\n");
            fflush(stderr);
        }
        if (now >= t_end || g_stop) break;

        /* ramp: a batch of new connects per turn, capped by in-flight count */
        int launched = 0;
        while (next_new < nclients && launched < batch &&
               n_inflight < max_inflight) {
            start_connect(&conns[next_new++], now);
            launched++;
        }
        /* retries and handshake timeouts, scanned every 50 ms */
        if (now >= next_scan) {
            next_scan = now + 0.05;
            for (int i = 0; i < next_new; i++) {
                struct conn *c = &conns[i];
                if ((c->state == ST_CONNECTING || c->state == ST_HANDSHAKE) &&
                    now > c->deadline)
                    attempt_failed(c, now);
                else if (c->state == ST_IDLE && c->attempts > 0 &&
                         now >= c->deadline && n_inflight < max_inflight)
                    start_connect(c, now);
            }
        }

        double until = (window_started ? t_end : t_warm) - now;
        int timeout_ms = (int)(until * 1000.0) + 1;
        if (timeout_ms > 10) timeout_ms = 10;
        if (timeout_ms < 0) timeout_ms = 0;
        int n = epoll_wait(epfd, evs, 1024, timeout_ms);
        if (n < 0) {
            if (errno == EINTR) continue;
            perror("epoll_wait");
            break;
        }
        now = mono_now();
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            uint32_t e = evs[i].events;
            if (c->fd < 0) continue; /* closed earlier in this batch */
            switch (c->state) {
            case ST_CONNECTING:
                if (e & (EPOLLOUT | EPOLLERR | EPOLLHUP))
                    on_writable_connecting(c, now);
                break;
            case ST_HANDSHAKE:
                if (e & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP))
                    on_readable_handshake(c, now);
                break;
            case ST_OPEN:
                if (e & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP))
                    on_readable_open(c);
                break;
            default:
                break;
            }
        }
    }
    t_window_end = mono_now();
    cpu_at_end = cpu_seconds();
    if (!window_started) { /* stopped by a signal during warmup */
        t_window_start = t_window_end;
        cpu_at_start = cpu_at_end;
    }
    in_window = 0;
    fprintf(stderr, "# measure end\n");
    fflush(stderr);

    int not_tried = 0, still_pending = 0;
    for (int i = 0; i < nclients; i++) {
        struct conn *c = &conns[i];
        if (i >= next_new)
            not_tried++;
        else if (c->state == ST_IDLE || c->state == ST_CONNECTING ||
                 c->state == ST_HANDSHAKE)
            still_pending++;
    }
    uint64_t per_min = UINT64_MAX, per_max = 0;
    int counted = 0;
    for (int i = 0; i < nclients; i++) {
        if (!conns[i].ever_open) continue;
        counted++;
        if (conns[i].updates < per_min) per_min = conns[i].updates;
        if (conns[i].updates > per_max) per_max = conns[i].updates;
    }
    if (!counted) per_min = 0;

    double window = t_window_end - t_window_start;
    if (window <= 0) window = 1e-9;
    printf("{\"clients_requested\":%d,\"clients_connected\":%d,"
           "\"clients_failed\":%d,\"clients_dropped\":%d,"
           "\"clients_open_at_end\":%d,\"clients_not_connected_in_time\":%d,"
           "\"ramp_s\":%.3f,\"window_s\":%.3f,"
           "\"frames\":%llu,\"frames_total\":%llu,\"snapshots\":%llu,"
           "\"updates\":%llu,\"updates_warmup\":%llu,"
           "\"updates_per_s\":%.1f,"
           "\"per_client_updates_min\":%llu,\"per_client_updates_max\":%llu,"
           "\"latency_ms\":{\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,"
           "\"p999\":%.3f,\"max\":%.3f,\"mean\":%.3f},"
           "\"latency_negative\":%llu,\"latency_overflow\":%llu,"
           "\"pings\":%llu,\"server_closes\":%llu,\"bad_frames\":%llu,"
           "\"bytes\":%llu,\"loadgen_cpu_s\":%.3f,\"loadgen_cpu_total_s\":%.3f}\n",
           nclients, n_ever_open, n_failed, n_dropped, n_open,
           not_tried + still_pending,
           n_ever_open ? t_last_connect - t0 : 0.0, window,
           (unsigned long long)frames_window, (unsigned long long)frames_total,
           (unsigned long long)snapshots, (unsigned long long)updates_window,
           (unsigned long long)updates_warmup, updates_window / window,
           (unsigned long long)per_min, (unsigned long long)per_max,
           percentile(0.50), percentile(0.90), percentile(0.99),
           percentile(0.999), lat_max_ms,
           lat_count ? lat_sum_ms / lat_count : 0.0,
           (unsigned long long)neg_latency, (unsigned long long)hist_overflow,
           (unsigned long long)pings, (unsigned long long)closes_from_server,
           (unsigned long long)bad_frames, (unsigned long long)bytes_total,
           cpu_at_end - cpu_at_start, cpu_at_end);
    fflush(stdout);
    /* best-effort clean goodbye (close 1000); exit closes the sockets */
    static const unsigned char bye[2] = {0x03, 0xe8};
    for (int i = 0; i < nclients; i++)
        if (conns[i].state == ST_OPEN && conns[i].fd >= 0)
            send_control(&conns[i], 0x8, bye, 2);
    return 0;
}
