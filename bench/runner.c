/*
 * runner: spawn one command and report what it cost, for bench/run.py.
 *
 *   runner STDIN_FILE STDOUT_FILE COMMAND [ARG...]
 *
 * prints "wall_ns user_us sys_us maxrss_kb exit_code" on stdout. Why not measure from Python:
 * Linux keeps a process's peak RSS across execve, so a child forked from the (large) Python
 * benchmark process would report at least the benchmark's own RSS. Forked from this tiny
 * program instead, the child's ru_maxrss is its own (plus ~1 MB).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: runner STDIN_FILE STDOUT_FILE COMMAND [ARG...]\n");
        return 2;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return 2;
    }
    if (pid == 0) {
        int in = open(argv[1], O_RDONLY);
        int out = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int null = open("/dev/null", O_WRONLY);
        if (in < 0 || out < 0 || null < 0) _exit(126);
        dup2(in, 0);
        dup2(out, 1);
        dup2(null, 2);
        close(in);
        close(out);
        close(null);
        execv(argv[3], argv + 3);
        _exit(127);
    }
    int status = 0;
    struct rusage ru;
    if (wait4(pid, &status, 0, &ru) < 0) {
        perror("wait4");
        return 2;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long long wall = (long long)(t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec);
    long long user = (long long)ru.ru_utime.tv_sec * 1000000LL + ru.ru_utime.tv_usec;
    long long sys = (long long)ru.ru_stime.tv_sec * 1000000LL + ru.ru_stime.tv_usec;
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    printf("%lld %lld %lld %ld %d\n", wall, user, sys, ru.ru_maxrss, code);
    return 0;
}
