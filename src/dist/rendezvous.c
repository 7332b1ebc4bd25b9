#include "dist/rendezvous.h"

#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/error.h"
#include "dist/rendezvous_mpi.h"

/* The first of names that is set, as a non-negative integer; -1 when none is
 * set; false when one is set but malformed. */
static bool env_int(const char *const *names, int n, int *out, char *err, size_t errlen)
{
    *out = -1;
    for (int i = 0; i < n; i++) {
        const char *v = getenv(names[i]);
        if (!v)
            continue;
        char *end;
        errno = 0;
        long x = strtol(v, &end, 10);
        if (errno || end == v || *end || x < 0 || x > INT_MAX)
            return mt_errorf(err, errlen, "environment variable %s=\"%s\" is not a non-negative integer", names[i],
                             v);
        *out = (int)x;
        return true;
    }
    return true;
}

bool mt_rendezvous_from_env(mt_rendezvous *r, char *err, size_t errlen)
{
    static const char *const rank_names[] = {"RANK", "OMPI_COMM_WORLD_RANK"};
    static const char *const world_names[] = {"WORLD_SIZE", "OMPI_COMM_WORLD_SIZE"};
    static const char *const local_names[] = {"LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK"};
    static const char *const port_names[] = {"MASTER_PORT"};
    memset(r, 0, sizeof *r);
    if (mt_mpi_launched() && !getenv("MASTER_ADDR")) {
        r->mpi = true;
        return mt_mpi_init(&r->rank, &r->world, &r->local_rank, err, errlen);
    }
    int port;
    if (!env_int(rank_names, 2, &r->rank, err, errlen) || !env_int(world_names, 2, &r->world, err, errlen) ||
        !env_int(local_names, 2, &r->local_rank, err, errlen) || !env_int(port_names, 1, &port, err, errlen))
        return false;
    if (r->world <= 1) { /* one rank: nothing to meet */
        r->world = 1;
        r->rank = r->local_rank = 0;
        return true;
    }
    if (r->rank < 0 || r->rank >= r->world)
        return mt_errorf(err, errlen, "RANK (or OMPI_COMM_WORLD_RANK) must be set in [0, %d)", r->world);
    if (r->local_rank < 0)
        r->local_rank = r->rank;
    const char *addr = getenv("MASTER_ADDR");
    if (!addr || !*addr || strlen(addr) >= sizeof r->addr)
        return mt_errorf(err, errlen, "MASTER_ADDR must name rank 0's host (with WORLD_SIZE=%d)", r->world);
    if (port < 1 || port > 65535)
        return mt_errorf(err, errlen, "MASTER_PORT must be a TCP port in [1, 65535] (with WORLD_SIZE=%d)", r->world);
    snprintf(r->addr, sizeof r->addr, "%s", addr);
    r->port = port;
    return true;
}

/* Waits for fd to be ready (POLLIN or POLLOUT) until deadline. */
static bool wait_fd(int fd, short events, double deadline)
{
    double left = deadline - mt_clock_s();
    if (left <= 0)
        return false;
    struct pollfd p = {.fd = fd, .events = events};
    return poll(&p, 1, (int)(left * 1000) + 1) == 1;
}

static bool send_all(int fd, const void *buf, size_t n, double deadline)
{
    for (size_t done = 0; done < n;) {
        if (!wait_fd(fd, POLLOUT, deadline))
            return false;
        ssize_t k = send(fd, (const char *)buf + done, n - done, MSG_NOSIGNAL);
        if (k <= 0)
            return false;
        done += (size_t)k;
    }
    return true;
}

static bool recv_all(int fd, void *buf, size_t n, double deadline)
{
    for (size_t done = 0; done < n;) {
        if (!wait_fd(fd, POLLIN, deadline))
            return false;
        ssize_t k = recv(fd, (char *)buf + done, n - done, 0);
        if (k <= 0)
            return false;
        done += (size_t)k;
    }
    return true;
}

/* What a rank sends rank 0, and what it gets back. */
typedef struct hello {
    uint32_t rank;
    uint64_t config_hash;
} hello;

/* A listening socket on port: IPv6 accepting IPv4 too where the host has
 * IPv6, else IPv4 only. -1 with errno set on failure. */
static int listen_on(int port, int backlog)
{
    int one = 1, zero = 0, s = socket(AF_INET6, SOCK_STREAM, 0);
    if (s >= 0) {
        setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
        struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port), .sin6_addr = in6addr_any};
        if (bind(s, (struct sockaddr *)&a, sizeof a) == 0 && listen(s, backlog) == 0)
            return s;
        close(s);
    }
    if ((s = socket(AF_INET, SOCK_STREAM, 0)) < 0)
        return -1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_ANY)};
    if (bind(s, (struct sockaddr *)&a, sizeof a) == 0 && listen(s, backlog) == 0)
        return s;
    int e = errno;
    close(s);
    errno = e;
    return -1;
}

static bool serve(const mt_rendezvous *r, uint64_t hash, const void *blob, size_t n, double deadline, char *err,
                  size_t errlen)
{
    int s = listen_on(r->port, r->world);
    if (s < 0)
        return mt_errorf(err, errlen, "rendezvous: rank 0 cannot listen on port %d: %s", r->port, strerror(errno));
    int *peers = calloc((size_t)r->world, sizeof *peers);
    bool *seen = calloc((size_t)r->world, sizeof *seen);
    if (!peers || !seen)
        mt_fatal("rendezvous: out of host memory");
    bool ok = true;
    int mismatch = -1;
    for (int i = 1; ok && i < r->world; i++) {
        hello h;
        int fd = -1;
        if (!wait_fd(s, POLLIN, deadline) || (fd = accept(s, NULL, NULL)) < 0 ||
            !recv_all(fd, &h, sizeof h, deadline) ||
            h.rank == 0 || h.rank >= (uint32_t)r->world || seen[h.rank]) {
            if (fd >= 0)
                close(fd);
            ok = mt_errorf(err, errlen, "rendezvous: %d of %d ranks reached rank 0 (port %d) within the timeout",
                           i, r->world, r->port);
            break;
        }
        seen[h.rank] = true;
        peers[h.rank] = fd;
        if (h.config_hash != hash && mismatch < 0)
            mismatch = (int)h.rank;
    }
    /* Every connected rank learns the outcome: 0 and the blob, or the rank
     * whose configuration differs (or -1: the rendezvous failed). */
    const int32_t verdict = !ok ? -1 : mismatch >= 0 ? mismatch : 0;
    for (int i = 1; i < r->world; i++) {
        if (!seen[i])
            continue;
        if (send_all(peers[i], &verdict, sizeof verdict, deadline) && verdict == 0)
            send_all(peers[i], blob, n, deadline);
        close(peers[i]);
    }
    close(s);
    free(peers);
    free(seen);
    if (ok && mismatch >= 0)
        ok = mt_errorf(err, errlen, "rendezvous: rank %d runs another configuration than rank 0", mismatch);
    return ok;
}

static bool join(const mt_rendezvous *r, uint64_t hash, void *blob, size_t n, double deadline, char *err,
                 size_t errlen)
{
    char port[16];
    snprintf(port, sizeof port, "%d", r->port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    int fd = -1;
    /* Rank 0 may not listen yet: retry until the deadline. */
    while (fd < 0 && mt_clock_s() < deadline) {
        if (getaddrinfo(r->addr, port, &hints, &res) == 0) {
            for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
                fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
                if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
                    close(fd);
                    fd = -1;
                }
            }
            freeaddrinfo(res);
        }
        if (fd < 0)
            nanosleep(&(struct timespec){0, 50 * 1000 * 1000}, NULL);
    }
    if (fd < 0)
        return mt_errorf(err, errlen, "rendezvous: rank %d could not reach rank 0 at %s:%d within the timeout",
                         r->rank, r->addr, r->port);
    hello h;
    memset(&h, 0, sizeof h); /* the padding goes over the wire too */
    h.rank = (uint32_t)r->rank;
    h.config_hash = hash;
    int32_t verdict = -1;
    bool ok = send_all(fd, &h, sizeof h, deadline) && recv_all(fd, &verdict, sizeof verdict, deadline) &&
              verdict == 0 && recv_all(fd, blob, n, deadline);
    close(fd);
    if (!ok && verdict > 0)
        return mt_errorf(err, errlen, "rendezvous: rank %d runs another configuration than rank 0", verdict);
    return ok || mt_errorf(err, errlen, "rendezvous: rank %d: rank 0 gave up (a rank did not arrive within the "
                           "timeout)", r->rank);
}

bool mt_rendezvous_exchange(const mt_rendezvous *r, uint64_t config_hash, void *blob, size_t n, double timeout_s,
                            char *err, size_t errlen)
{
    if (r->world <= 1)
        return true;
    if (r->mpi)
        return mt_mpi_exchange(config_hash, blob, n, err, errlen);
    const double deadline = mt_clock_s() + timeout_s;
    return r->rank == 0 ? serve(r, config_hash, blob, n, deadline, err, errlen)
                        : join(r, config_hash, blob, n, deadline, err, errlen);
}

void mt_rendezvous_finish(const mt_rendezvous *r, bool ok)
{
    if (r->mpi)
        mt_mpi_finalize(ok);
}

void mt_rendezvous_set_local_env(int rank, int world, int port)
{
    char v[32];
    snprintf(v, sizeof v, "%d", rank);
    setenv("RANK", v, 1);
    setenv("LOCAL_RANK", v, 1);
    snprintf(v, sizeof v, "%d", world);
    setenv("WORLD_SIZE", v, 1);
    snprintf(v, sizeof v, "%d", port);
    setenv("MASTER_PORT", v, 1);
    setenv("MASTER_ADDR", "127.0.0.1", 1);
}

int mt_rendezvous_free_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int port = -1;
    if (s >= 0 && bind(s, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(s, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (s >= 0)
        close(s);
    return port;
}
