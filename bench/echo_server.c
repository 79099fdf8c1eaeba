/* SPDX-License-Identifier: BSD-2-Clause */

/*
 * The sidecar the benchmark compares against: an echo server speaking a
 * 4-byte big-endian length prefix, on a unix socket and on TCP loopback,
 * one thread per connection (the way plugin runners behind a unix socket
 * are usually written).
 *
 *   echo_server UNIX_PATH TCP_PORT
 */

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>


static int
echo_full_io(int fd, char *buf, size_t len, int writing)
{
    ssize_t  n;

    while (len) {
        n = writing ? write(fd, buf, len) : read(fd, buf, len);

        if (n <= 0) {
            if (n == -1 && errno == EINTR) {
                continue;
            }
            return -1;
        }

        buf += n;
        len -= n;
    }

    return 0;
}


static void *
echo_connection(void *arg)
{
    int        fd = (int) (intptr_t) arg;
    char      *buf = NULL;
    size_t     size = 0;
    uint32_t   be_len, len;

    for ( ;; ) {
        if (echo_full_io(fd, (char *) &be_len, 4, 0) != 0) {
            break;
        }

        len = ntohl(be_len);

        if (len + 4 > size) {
            free(buf);
            size = len + 4;
            buf = malloc(size);
            if (buf == NULL) {
                break;
            }
        }

        /* answer in one write, prefix included */
        memcpy(buf, &be_len, 4);

        if (echo_full_io(fd, buf + 4, len, 0) != 0
            || echo_full_io(fd, buf, len + 4, 1) != 0)
        {
            break;
        }
    }

    free(buf);
    close(fd);

    return NULL;
}


static void *
echo_accept_loop(void *arg)
{
    int        lfd = (int) (intptr_t) arg, fd, one = 1;
    pthread_t  thread;

    for ( ;; ) {
        fd = accept(lfd, NULL, NULL);
        if (fd == -1) {
            if (errno == EINTR || errno == ECONNABORTED) {
                continue;
            }
            perror("accept");
            exit(1);
        }

        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

        if (pthread_create(&thread, NULL, echo_connection,
                           (void *) (intptr_t) fd) != 0)
        {
            close(fd);
            continue;
        }

        pthread_detach(thread);
    }

    return NULL;
}


int
main(int argc, char **argv)
{
    int                 ufd, tfd, one = 1;
    pthread_t           thread;
    struct sockaddr_un  sun;
    struct sockaddr_in  sin;

    if (argc != 3) {
        fprintf(stderr, "usage: %s UNIX_PATH TCP_PORT\n", argv[0]);
        return 2;
    }

    ufd = socket(AF_UNIX, SOCK_STREAM, 0);
    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", argv[1]);
    unlink(argv[1]);

    if (bind(ufd, (struct sockaddr *) &sun, sizeof(sun)) != 0
        || listen(ufd, 128) != 0)
    {
        perror("unix socket");
        return 1;
    }

    /* nginx workers may run as another user */
    chmod(argv[1], 0777);

    tfd = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(tfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons(atoi(argv[2]));
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);

    if (bind(tfd, (struct sockaddr *) &sin, sizeof(sin)) != 0
        || listen(tfd, 128) != 0)
    {
        perror("tcp socket");
        return 1;
    }

    pthread_create(&thread, NULL, echo_accept_loop, (void *) (intptr_t) ufd);
    echo_accept_loop((void *) (intptr_t) tfd);

    return 0;
}
