/* test_core.c - C unit tests of the core pieces that work without a server: buffers, error
 * text, the loop's ready list and sleeps, and session failure paths that need no sshd
 * (unresolvable name, refused port on loopback). Prints TAP. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <libssh/libssh.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <time.h>
#include <unistd.h>

#include "../../core/exec.h"
#include "../../core/known_hosts.h"
#include "../../core/loop.h"
#include "../../core/pkeycache.h"
#include "../../core/randbuf.h"
#include "../../core/readahead.h"
#include "../../core/scp_wire.h"
#include "../../core/session.h"
#include "../../core/sftp_wire.h"
#include "../../core/socks5.h"
#include "../../core/xfer.h"

static int n_test, n_fail;

static void ok(int cond, const char *what)
{
    n_test++;
    if (!cond)
        n_fail++;
    printf("%sok %d - %s\n", cond ? "" : "not ", n_test, what);
}

static void test_buf(void)
{
    sc_buf b = {0};
    char big[10000];
    memset(big, 'x', sizeof big);
    ok(sc_buf_append(&b, "hello", 5) == 0 && sc_buf_avail(&b) == 5, "buf append");
    sc_buf_consume(&b, 2);
    ok(sc_buf_avail(&b) == 3 && memcmp(b.data + b.off, "llo", 3) == 0, "buf consume");
    ok(sc_buf_append(&b, big, sizeof big) == 0 && sc_buf_avail(&b) == 3 + sizeof big, "buf grows");
    sc_buf_consume(&b, sc_buf_avail(&b));
    ok(sc_buf_avail(&b) == 0 && b.off == 0, "buf drained resets");
    sc_buf_free(&b);
    ok(b.data == NULL && b.cap == 0, "buf free");
}

static void test_err(void)
{
    sc_err e;
    sc_err_set(&e, SC_EAUTH, "hop %d %s", 2, "bad\x1b[31mname\nx");
    ok(e.code == SC_EAUTH && strcmp(e.msg, "hop 2 bad?[31mname x") == 0,
       "control characters are replaced");
    ok(strcmp(sc_code_name(SC_ETIMEDOUT), "ETIMEDOUT") == 0, "code names");
    ok(strcmp(sc_code_name((sc_code)99), "EIO") == 0, "unknown code is EIO");
    /* C1 controls (CSI is 0xC2 0x9B in UTF-8) are replaced as C0 ones are; other UTF-8 stays */
    sc_err_set(&e, SC_EIO,
               "a\xc2\x9b"
               "31mred\xc2\x85"
               "b \xc3\xa9");
    ok(strcmp(e.msg, "a?31mred?b \xc3\xa9") == 0, "C1 control characters are replaced");
    sc_err_format(&e, SC_EAUTH, "hop 2 u@h:22", 2, "auth", "denied", "no %s", "way");
    ok(strcmp(e.msg, "hop 2 u@h:22: auth: no way") == 0 && e.hop == 2 &&
           strcmp(e.stage, "auth") == 0 && strcmp(e.reason, "denied") == 0,
       "a failure carries its stage, reason and hop as data; its message names them");
    sc_err_format(&e, SC_EIO, NULL, 0, NULL, NULL, "plain");
    ok(strcmp(e.msg, "plain") == 0 && !e.stage && !e.reason && e.hop == 0,
       "a failure without a hop");
}

static void test_names(void)
{
    ok(sc_name_ok("a.txt", 5) && !sc_name_ok("", 0) && !sc_name_ok(".", 1) &&
           !sc_name_ok("..", 2) && !sc_name_ok("a/b", 3) && !sc_name_ok("a\0b", 3),
       "one plain path component only");
    char a[300], b[300];
    xf_temp_name(a, sizeof a, "file.txt");
    xf_temp_name(b, sizeof b, "file.txt");
    ok(strncmp(a, ".file.txt.", 10) == 0 && strlen(a) == 10 + 6 + 5 && strcmp(a + 16, ".part") == 0,
       "temporary names are .NAME.XXXXXX.part");
    ok(strcmp(a, b) != 0, "temporary names differ each time (random, whatever the uptime)");
}

static void test_quoting(void)
{
    char *q = sc_shell_quote("it's $x");
    ok(q && strcmp(q, "'it'\\''s $x'") == 0, "shell quoting: quotes inside quotes");
    free(q);
    char *p = xf_shell_path("~/a b");
    ok(p && strcmp(p, "'a b'") == 0 && xf_shell_path("a\nb") == NULL,
       "remote paths: ~/ is the home directory; a newline is refused");
    free(p);
}

static void test_scp_records(void)
{
    scp_record r;
    const char *why;
    int64_t mt, at;
    ok(scp_parse_record("C0644 5 a.txt", 13, &r, &why) == 0 && !r.is_dir && r.mode == 0644 &&
           r.size == 5 && r.name_len == 5 && memcmp(r.name, "a.txt", 5) == 0,
       "scp: a file record");
    ok(scp_parse_record("D0755 0 dir", 11, &r, &why) == 0 && r.is_dir, "scp: a directory record");
    ok(scp_parse_record("C0644 5 ..", 10, &r, &why) < 0 && strcmp(why, "unsafe name") == 0 &&
           scp_parse_record("C0644 5 a/b", 11, &r, &why) < 0 &&
           scp_parse_record("C0644 5 ", 8, &r, &why) < 0,
       "scp: names that leave the directory are refused");
    ok(scp_parse_record("C06x4 5 a", 9, &r, &why) < 0 &&
           scp_parse_record("C0644 99999999999999999999 a", 28, &r, &why) < 0,
       "scp: bad modes and sizes are refused");
    ok(scp_parse_times("T1700000000 0 1600000000 0", 26, &mt, &at) == 0 && mt == 1700000000 &&
           at == 1600000000,
       "scp: times");
    ok(scp_parse_times("T1 2 3", 6, &mt, &at) < 0 &&
           scp_parse_times("T1 0 2 1000000", 14, &mt, &at) < 0,
       "scp: bad times are refused");
}

static void test_sftp_wire(void)
{
    sc_buf b = {0};
    sattrs a = {.flags = ATTR_SIZE | ATTR_PERMISSIONS | ATTR_ACMODTIME,
                .size = 42,
                .perm = 0100644,
                .atime = 1,
                .mtime = 2};
    sftp_put_attrs(&b, &a);
    sftp_cursor c = {(const uint8_t *)b.data, b.len, 0};
    sattrs back;
    sftp_get_attrs(&c, &back);
    ok(!c.bad && c.left == 0 && back.size == 42 && back.perm == 0100644 && back.mtime == 2,
       "sftp: attributes round-trip");
    sftp_cursor shortc = {(const uint8_t *)b.data, 6, 0};
    sftp_get_attrs(&shortc, &back);
    ok(shortc.bad, "sftp: short attributes are refused");
    sc_buf_free(&b);
    uint8_t st[] = {0, 0, 0, 2, 0, 0, 0, 5, 'g', 'o', 'n', 'e', 0x1b};
    uint32_t code;
    char msg[64];
    ok(sftp_parse_status(st, sizeof st, &code, msg, sizeof msg) == 0 && code == 2 &&
           strcmp(msg, "gone?") == 0,
       "sftp: a status message, sanitized");
    uint8_t st2[] = {0, 0, 0, 2};
    ok(sftp_parse_status(st2, sizeof st2, &code, msg, sizeof msg) == 0 &&
           strcmp(msg, "No such file or directory") == 0,
       "sftp: a status without a message gets the standard text");
    uint8_t big[] = {0xff, 0xff, 0xff, 0xff};
    uint32_t n;
    ok(sftp_packet_length(big, 4, &n) < 0 && sftp_packet_length(big, 3, &n) == 0,
       "sftp: an oversized packet is refused; a length not all there waits");
    const uint8_t *d;
    size_t dl;
    uint8_t data[] = {0, 0, 0, 9, 'x'};
    ok(sftp_parse_data(data, sizeof data, 65536, &d, &dl) < 0,
       "sftp: data longer than what came is refused");
    sc_buf v = {0};
    sftp_put_u32(&v, 3);
    sftp_put_str(&v, "limits@openssh.com", 18);
    sftp_put_str(&v, "1", 1);
    sftp_put_str(&v, "posix-rename@openssh.com", 24);
    sftp_put_str(&v, "1", 1);
    uint32_t version;
    int exts;
    ok(sftp_parse_version((const uint8_t *)v.data, v.len, &version, &exts) == 0 && version == 3 &&
           exts == (SFTP_EXT_LIMITS | SFTP_EXT_POSIX_RENAME),
       "sftp: the version names both extensions the client uses");
    ok(sftp_parse_version((const uint8_t *)v.data, 4, &version, &exts) == 0 && exts == 0,
       "sftp: a version without extensions offers none");
    sc_buf_free(&v);
    sftp_put_u64(&v, 262144);
    sftp_put_u64(&v, 261120);
    sftp_put_u64(&v, 261120);
    sftp_put_u64(&v, 0);
    uint64_t mr = 0, mw = 0;
    ok(sftp_parse_limits((const uint8_t *)v.data, v.len, &mr, &mw) == 0 && mr == 261120 &&
           mw == 261120,
       "sftp: limits@openssh.com gives the largest read and write");
    ok(sftp_parse_limits((const uint8_t *)v.data, v.len - 1, &mr, &mw) < 0,
       "sftp: a short limits reply is refused");
    sc_buf_free(&v);
}

static void test_socks5(void)
{
    const uint8_t g[] = {5, 1, 0};
    size_t used;
    int noauth;
    ok(socks5_parse_greeting(g, 2, &used, &noauth) == SOCKS5_MORE &&
           socks5_parse_greeting(g, 3, &used, &noauth) == SOCKS5_OK && used == 3 && noauth,
       "socks5: a greeting, whole or in part");
    const uint8_t rq[] = {5, 1, 0, 3, 4, 'h', 'o', 's', 't', 0, 80, 'G', 'E', 'T'};
    char dest[256];
    int port, rep;
    ok(socks5_parse_request(rq, sizeof rq, &used, dest, sizeof dest, &port, &rep) == SOCKS5_OK &&
           strcmp(dest, "host") == 0 && port == 80 && used == 11,
       "socks5: a request by name; what follows it is the client's data");
    const uint8_t bind[] = {5, 2, 0, 1, 127, 0, 0, 1, 0, 80};
    ok(socks5_parse_request(bind, sizeof bind, &used, dest, sizeof dest, &port, &rep) ==
               SOCKS5_BAD &&
           rep == SOCKS5_REP_COMMAND,
       "socks5: BIND is refused with 'command not supported'");
    const uint8_t nul[] = {5, 1, 0, 3, 3, 'a', 0, 'b', 0, 80};
    ok(socks5_parse_request(nul, sizeof nul, &used, dest, sizeof dest, &port, &rep) == SOCKS5_BAD,
       "socks5: a name holding NUL is refused");
}

static void test_known_hosts(void)
{
    kh_line l;
    const char *plain =
        "[10.0.0.1]:2222,h.example,!bad.example ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA== c";
    ok(kh_parse_line(plain, strlen(plain), &l) == 1 && l.marker == KH_PLAIN,
       "known_hosts: a plain line");
    ok(kh_host_matches(&l, "[10.0.0.1]:2222") == 1 && kh_host_matches(&l, "10.0.0.1") == 0 &&
           kh_host_matches(&l, "H.EXAMPLE") == 1,
       "known_hosts: [host]:port and names match as ssh matches them");
    const char *neg = "*.example,!bad.example ssh-ed25519 AAAA";
    kh_parse_line(neg, strlen(neg), &l);
    ok(kh_host_matches(&l, "good.example") == 1 && kh_host_matches(&l, "bad.example") == -1,
       "known_hosts: a negated pattern excludes the line");
    ok(kh_parse_line("# c", 3, &l) == 0 && kh_parse_line("   ", 3, &l) == 0 &&
           kh_parse_line("@bogus h t k", 12, &l) < 0 && kh_parse_line("onlyhost", 8, &l) < 0,
       "known_hosts: comments, blanks and malformed lines");
    /* a hashed line for 10.0.0.7, made here as ssh-keygen -H would */
    unsigned char salt[20], mac[20];
    for (int i = 0; i < 20; i++)
        salt[i] = (unsigned char)(i * 7 + 1);
    unsigned maclen = 0;
    HMAC(EVP_sha1(), salt, 20, (const unsigned char *)"10.0.0.7", 8, mac, &maclen);
    unsigned char bs[64], bm[64];
    EVP_EncodeBlock(bs, salt, 20);
    EVP_EncodeBlock(bm, mac, 20);
    char hashed[300];
    const char *key = "AAAAC3NzaC1lZDI1NTE5AAAAIKey1111111111111111111111111111111111111";
    snprintf(hashed, sizeof hashed, "|1|%s|%s ssh-ed25519 %s", bs, bm, key);
    kh_parse_line(hashed, strlen(hashed), &l);
    ok(kh_host_matches(&l, "10.0.0.7") == 1 && kh_host_matches(&l, "10.0.0.8") == 0,
       "known_hosts: hashed names");
    char path[] = "/tmp/sshchain-kh-XXXXXX";
    int fd = mkstemp(path);
    FILE *f = fdopen(fd, "w");
    fprintf(f, "%s\n10.0.0.9 ssh-ed25519 %s\n@revoked * ssh-ed25519 %s\n", hashed, key,
            "AAAAC3NzaC1lZDI1NTE5AAAAIRevoked111111111111111111111111111111111");
    fclose(f);
    const char *files[] = {"/nonexistent/known_hosts", path};
    char where[300];
    ok(kh_check(files, 2, "10.0.0.7", "ssh-ed25519", key, where, sizeof where) == KH_OK &&
           strstr(where, ":1"),
       "known_hosts: a known key, found in the second file");
    ok(kh_check(files, 2, "10.0.0.7", "ssh-ed25519",
                "AAAAC3NzaC1lZDI1NTE5AAAAIOther1111111111111111111111111111111111", where,
                sizeof where) == KH_CHANGED,
       "known_hosts: another key of the same type is a change");
    ok(kh_check(files, 2, "10.0.0.7", "ssh-rsa", "AAAAB3NzaC1yc2E=", where, sizeof where) ==
           KH_OTHER,
       "known_hosts: only keys of other types");
    ok(kh_check(files, 2, "10.0.0.9", "ssh-ed25519",
                "AAAAC3NzaC1lZDI1NTE5AAAAIRevoked111111111111111111111111111111111", where,
                sizeof where) == KH_REVOKED_KEY,
       "known_hosts: a @revoked key is refused, whatever else matches");
    ok(kh_check(files, 2, "10.0.0.10", "ssh-ed25519", key, where, sizeof where) == KH_NOT_FOUND,
       "known_hosts: an unknown host");
    char name[64];
    kh_lookup_name(name, sizeof name, "Gw.Example.COM", 2222);
    ok(strcmp(name, "[gw.example.com]:2222") == 0,
       "known_hosts: names are looked up in lowercase (hashed ones are of the lowercase name)");
    /* files are kept between lookups while stat says they are the same: a file written in place
     * since (same size, another time) or replaced (another inode) is read again */
    const char *key2 = "AAAAC3NzaC1lZDI1NTE5AAAAIKey2222222222222222222222222222222222222";
    struct timespec old_times[2] = {{time(NULL) - 100, 0}, {time(NULL) - 100, 0}};
    f = fopen(path, "w");
    fprintf(f, "10.0.0.11 ssh-ed25519 %s\n", key);
    fclose(f);
    utimensat(AT_FDCWD, path, old_times, 0);
    int kept_ok = kh_check(files, 2, "10.0.0.11", "ssh-ed25519", key, NULL, 0) == KH_OK &&
                  kh_check(files, 2, "10.0.0.11", "ssh-ed25519", key, NULL, 0) == KH_OK;
    f = fopen(path, "r+");
    fprintf(f, "10.0.0.11 ssh-ed25519 %s\n", key2); /* the same size, in place */
    fclose(f);
    old_times[1].tv_sec += 10;
    utimensat(AT_FDCWD, path, old_times, 0);
    ok(kept_ok && kh_check(files, 2, "10.0.0.11", "ssh-ed25519", key, NULL, 0) == KH_CHANGED,
       "known_hosts: a file rewritten in place is read again");
    char path2[] = "/tmp/sshchain-kh-XXXXXX";
    f = fdopen(mkstemp(path2), "w");
    fprintf(f, "10.0.0.11 ssh-ed25519 %s\n", key);
    fclose(f);
    utimensat(AT_FDCWD, path2, old_times, 0);
    rename(path2, path);
    ok(kh_check(files, 2, "10.0.0.11", "ssh-ed25519", key, NULL, 0) == KH_OK,
       "known_hosts: a file replaced by another (a rename over it) is read again");
    f = fopen(path, "r+");
    fprintf(f, "10.0.0.11 ssh-ed25519 %s\n", key2); /* now: its time is the coarse clock's */
    fclose(f);
    ok(kh_check(files, 2, "10.0.0.11", "ssh-ed25519", key, NULL, 0) == KH_CHANGED &&
           kh_check(files, 2, "10.0.0.11", "ssh-ed25519", key2, NULL, 0) == KH_OK,
       "known_hosts: a file changed moments ago is read each time");
    unlink(path);
}

static void test_sleep(sc_loop *loop)
{
    double t0 = sc_loop_now();
    sc_op *a = sc_sleep_start(loop, 0.05);
    sc_op *b = sc_sleep_start(loop, 0.01);
    int order_ok = 1, seen = 0;
    for (int i = 0; i < 100 && seen < 2; i++) {
        sc_loop_turn(loop, 100);
        sc_op *op;
        while ((op = sc_loop_pop_ready(loop)) != NULL) {
            if (seen == 0 && op != b)
                order_ok = 0;
            seen++;
            sc_op_release(op);
        }
    }
    ok(seen == 2 && order_ok, "sleeps complete in deadline order");
    ok(sc_loop_now() - t0 >= 0.045, "sleep waits its time");
    ok(a->done && a->err.code == SC_OK, "sleep completes OK");
    sc_op_release(a);
    sc_op_release(b);
    sc_op *c = sc_sleep_start(loop, 10);
    sc_op_abandon(c); /* canceled, freed once its timer has closed */
    sc_loop_turn(loop, 0);
    sc_op *r;
    while ((r = sc_loop_pop_ready(loop)) != NULL)
        sc_op_release(r);
    ok(loop->n_live_ops == 0, "abandoned sleep is freed");
}

static int block_entered, block_left_n, block_open;
static void on_enter(void *ud)
{
    (void)ud;
    block_entered++;
    block_open = 1;
}
static void on_leave(void *ud)
{
    (void)ud;
    block_left_n++;
    block_open = 0;
}
static sc_loop *deferring_loop;
static void on_deferred(sc_deferred *d, int canceled)
{
    int *runs = (int *)((char *)d + sizeof *d);
    if (++*runs < 2 && !canceled)
        sc_loop_defer(deferring_loop, d); /* more work due: the poll that follows must not wait */
}

/* The block hooks run around a poll that may wait, and only then. */
static void test_block_hooks(sc_loop *loop)
{
    sc_loop_on_block(loop, on_enter, on_leave, NULL);
    sc_loop_turn(loop, 0);
    ok(block_entered == 0, "block hooks: a turn that only polls does not enter");
    sc_loop_turn(loop, 20);
    ok(block_entered == 1 && block_left_n == 1 && !block_open,
       "block hooks: a turn that waits enters once and leaves after its poll");
    struct {
        sc_deferred d;
        int runs;
    } work = {{on_deferred, NULL, 0}, 0};
    deferring_loop = loop;
    sc_loop_defer(loop, &work.d);
    double t0 = sc_loop_now();
    sc_loop_turn(loop, 1000);
    ok(work.runs >= 1 && block_entered == 1 && sc_loop_now() - t0 < 0.5,
       "block hooks: a turn with work still due does not wait, and does not enter");
    sc_loop_turn(loop, 0);
    /* a watcher started just before: libuv's uv_backend_timeout says 0 then, the poll waits */
    int fds[2];
    uv_poll_t w;
    ok(pipe(fds) == 0 && uv_poll_init(&loop->uv, &w, fds[0]) == 0 &&
           uv_poll_start(&w, UV_READABLE, NULL) == 0,
       "block hooks: a watcher on a pipe");
    sc_loop_turn(loop, 20);
    ok(block_entered == 2 && block_left_n == 2,
       "block hooks: a turn that waits right after a watcher started enters too");
    uv_close((uv_handle_t *)&w, NULL);
    sc_loop_turn(loop, 0);
    close(fds[0]);
    close(fds[1]);
    sc_loop_on_block(loop, NULL, NULL, NULL);
    sc_loop_turn(loop, 5);
    ok(block_entered == 2 && !block_open, "block hooks: none once taken away");
}

static sc_err connect_and_wait(sc_loop *loop, const char *host, int port, double timeout)
{
    sc_hostspec spec = {0};
    spec.host = strdup(host);
    spec.port = port;
    spec.user = strdup("nobody");
    spec.password = strdup("x");
    spec.timeout = timeout;
    sc_op *op = NULL;
    sc_session *s = sc_session_start(loop, NULL, &spec, &op);
    for (int i = 0; i < 500 && !op->done; i++)
        sc_loop_turn(loop, 50);
    sc_err e = op->err;
    if (!op->done)
        sc_err_set(&e, SC_OK, "did not complete");
    sc_op *r;
    while ((r = sc_loop_pop_ready(loop)) != NULL)
        sc_op_release(r);
    sc_op_release(op);
    sc_session_unref(s);
    sc_loop_turn(loop, 0);
    return e;
}

/* bytes that show a shift or a repeat: the k-th pattern */
static void pattern(unsigned char *p, size_t n, unsigned k)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(i * k + i / 4096);
}

static int n_wakes;
static void count_wake(void *arg) { (*(int *)arg)++; }

/* libssh's reads through readahead.c: bytes come whole and in order, a poll says readable while
 * bytes are held (and leaves what else it asks for to the next poll), the owner is woken while
 * bytes are left, and a close or a detach lets the fd go */
static void test_readahead(void)
{
    ok(sc_readahead_install() == 1, "readahead: libssh's recv, send, poll and close slots patched");
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) != 0) {
        ok(0, "readahead: socketpair");
        return;
    }
    static unsigned char sent[200000], got[sizeof sent];
    pattern(sent, sizeof sent, 7);
    int wake_arg = 0;
    n_wakes = 0;
    sc_readahead_attach(sv[1], count_wake, &wake_arg);
    unsigned long reads0, kernel0, reads1, kernel1;
    sc_readahead_counts(&reads0, &kernel0);
    size_t put = 0, have = 0;
    int bad_poll = 0, deferred_out = 0, free_out = 0, reads = 0;
    while (have < sizeof sent && reads < 10000) {
        while (put < sizeof sent) { /* keep the socket full: the kernel holds less than we send */
            ssize_t w = send(sv[0], sent + put, sizeof sent - put, 0);
            if (w <= 0)
                break;
            put += (size_t)w;
        }
        /* the owner's watch (epoll, level-triggered) says readable while the kernel has bytes */
        struct pollfd k = {.fd = sv[1], .events = POLLIN};
        if (poll(&k, 1, 0) == 1)
            sc_readahead_readable(sv[1], &wake_arg);
        struct pollfd p = {.fd = sv[1], .events = POLLIN | POLLOUT};
        int held = sc_readahead_held(sv[1]) > 0;
        unsigned long polls0, kpolls0, polls1, kpolls1;
        sc_readahead_poll_counts(&polls0, &kpolls0);
        int r = sc_ra_poll(&p, 1, 0);
        sc_readahead_poll_counts(&polls1, &kpolls1);
        if (r != 1 || !(p.revents & POLLIN) || p.fd != sv[1])
            bad_poll++;
        if (held && kpolls1 == kpolls0)
            deferred_out++; /* answered without the kernel */
        if (held && (p.revents & POLLOUT) && kpolls1 == kpolls0)
            free_out++;
        ssize_t n = sc_ra_recv(sv[1], got + have, 4096, 0);
        reads++;
        if (n <= 0)
            break;
        have += (size_t)n;
    }
    sc_readahead_counts(&reads1, &kernel1);
    ok(have == sizeof sent && memcmp(got, sent, sizeof sent) == 0,
       "readahead: 4 KiB reads give every byte, in order");
    ok(bad_poll == 0, "readahead: poll says readable whenever bytes are there, held or not");
    ok(deferred_out > reads / 2,
       "readahead: while bytes are held, most polls are answered without the kernel");
    ok(free_out > 0, "readahead: once the kernel said POLLOUT, POLLOUT comes without it");
    ok(reads1 - reads0 == (unsigned long)reads && kernel1 - kernel0 < (unsigned long)reads / 4,
       "readahead: most reads are served without a recv()");
    ok(wake_arg > 0, "readahead: a read that leaves bytes held wakes the owner");
    struct pollfd p = {.fd = sv[1], .events = POLLIN};
    ok(sc_readahead_held(sv[1]) == 0 && sc_ra_poll(&p, 1, 0) == 0,
       "readahead: drained, a poll asks the kernel (nothing there)");
    /* held bytes, then the writer's end: the held bytes first, then end of file */
    send(sv[0], sent, 20000, 0);
    char small[4096];
    ssize_t n1 = sc_ra_recv(sv[1], small, sizeof small, 0);
    ssize_t n2 = sc_ra_recv(sv[1], small, sizeof small, 0);
    shutdown(sv[0], SHUT_WR);
    size_t rest = 0;
    ssize_t n;
    while ((n = sc_ra_recv(sv[1], small, sizeof small, 0)) > 0)
        rest += (size_t)n;
    ok(n1 == 4096 && n2 == 4096 && rest == 20000 - 8192 && n == 0,
       "readahead: end of file comes after the held bytes");
    close(sv[0]);
    sc_readahead_detach(sv[1], &wake_arg);
    close(sv[1]);
    /* held bytes: a detach by someone else leaves them; a close lets them go, and a number
     * reused after it reads its own bytes, not the old ones */
    int a2[2], b2[2], other = 0;
    socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, a2);
    socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, b2);
    send(a2[0], sent, 30000, 0);
    send(b2[0], sent + 50000, 30000, 0);
    sc_readahead_attach(a2[1], count_wake, &wake_arg);
    sc_ra_recv(a2[1], small, sizeof small, 0); /* straight from the kernel: a buffer from now on */
    sc_ra_recv(a2[1], small, sizeof small, 0);
    size_t held = sc_readahead_held(a2[1]);
    sc_readahead_detach(a2[1], &other);
    ok(held == 30000 - 8192 && sc_readahead_held(a2[1]) == held,
       "readahead: bytes held; a detach by someone else leaves them");
    int fd = a2[1];
    ok(sc_ra_close(fd) == 0 && sc_readahead_held(fd) == 0,
       "readahead: a close through the hook closes and lets them go");
    int again = dup(b2[1]); /* the lowest free number: fd's */
    sc_readahead_attach(again, count_wake, &wake_arg);
    ssize_t got1 = sc_ra_recv(again, small, sizeof small, 0);
    ok(again == fd && got1 == 4096 && memcmp(small, sent + 50000, 4096) == 0,
       "readahead: a number reused after a close reads its own bytes");
    sc_ra_recv(again, small, sizeof small, 0);
    sc_readahead_detach(again, &wake_arg);
    ok(sc_readahead_held(again) == 0, "readahead: detach by its owner lets the held bytes go");
    close(again);
    close(a2[0]);
    close(b2[0]);
    close(b2[1]);
    int sv2[2];

    /* libssh itself reads through it: a server banner and more than 4 KiB after it */
    socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv2);
    char junk[20000];
    memset(junk, 0, sizeof junk);
    memcpy(junk, "SSH-2.0-test\r\n", 14);
    send(sv2[0], junk, sizeof junk, 0);
    ssh_session ss = ssh_new();
    long timeout = 0;
    ssh_options_set(ss, SSH_OPTIONS_HOST, "127.0.0.1");
    ssh_options_set(ss, SSH_OPTIONS_TIMEOUT, &timeout);
    ssh_options_set(ss, SSH_OPTIONS_FD, &sv2[1]);
    ssh_set_blocking(ss, 0);
    sc_readahead_attach(sv2[1], count_wake, &wake_arg);
    sc_readahead_counts(&reads0, &kernel0);
    int rc = SSH_AGAIN;
    for (int i = 0; i < 50 && rc == SSH_AGAIN; i++)
        rc = ssh_connect(ss);
    sc_readahead_counts(&reads1, &kernel1);
    ok(reads1 > reads0, "readahead: libssh's own reads go through it");
    ok(rc == SSH_ERROR, "readahead: libssh fails on what follows the banner, as it should");
    sc_readahead_detach(sv2[1], &wake_arg);
    ssh_free(ss);
    close(sv2[0]);
    close(sv2[1]);
}

static int n_room;
static void count_room(void *arg) { (*(int *)arg)++; }

/* a feeder (a hop's pump) puts bytes straight into the buffer: only the owner's feed is taken,
 * as far as there is room; the feeder hears when half of it is back; the kernel's end of file
 * comes after the fed bytes; a poll that libssh did not answer with a read asks the kernel next
 * time (a given socket waits for POLLOUT before libssh reads at all) */
/* What the kernel said is kept: quiet until the owner's watch says readable, POLLOUT while sends
 * are taken whole; a send the socket cuts short returns what it took. */
static void test_readahead_quiet(void)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) != 0) {
        ok(0, "readahead quiet: socketpair");
        return;
    }
    int owner = 0;
    sc_readahead_attach(sv[1], count_wake, &owner);
    char buf[4096];
    unsigned long p0, k0, p1, k1;
    ok(sc_ra_recv(sv[1], buf, sizeof buf, 0) < 0 && errno == EAGAIN, "readahead quiet: EAGAIN");
    send(sv[0], "abc", 3, 0);
    struct pollfd p = {.fd = sv[1], .events = POLLIN};
    sc_readahead_poll_counts(&p0, &k0);
    int r = sc_ra_poll(&p, 1, 0);
    sc_readahead_poll_counts(&p1, &k1);
    ok(r == 0 && p.revents == 0 && k1 == k0,
       "readahead quiet: after EAGAIN, no kernel poll until the owner's watch says readable");
    p.revents = 0;
    r = sc_ra_poll(&p, 1, 50);
    ok(r == 1 && (p.revents & POLLIN), "readahead quiet: a poll that may wait asks the kernel");
    sc_ra_recv(sv[1], buf, sizeof buf, 0); /* reads "abc" */
    sc_ra_recv(sv[1], buf, sizeof buf, 0); /* EAGAIN: quiet again */
    send(sv[0], "def", 3, 0);
    sc_readahead_readable(sv[1], &owner);
    p.revents = 0;
    r = sc_ra_poll(&p, 1, 0);
    ok(r == 1 && (p.revents & POLLIN) && sc_ra_recv(sv[1], buf, sizeof buf, 0) == 3,
       "readahead quiet: once the watch says readable, the kernel is asked again");
    /* the other way: fill the socket, then a send that finds it full */
    static char big[1 << 16];
    ssize_t w;
    int sends = 0;
    while ((w = sc_ra_send(sv[1], big, sizeof big, 0)) == (ssize_t)sizeof big && sends < 1000)
        sends++;
    ssize_t last = sc_ra_send(sv[1], big, sizeof big, 0);
    ok(w >= 0 && last == 0, "readahead quiet: a send to a full socket returns 0, not -1");
    p.events = POLLOUT;
    p.revents = 0;
    sc_readahead_poll_counts(&p0, &k0);
    r = sc_ra_poll(&p, 1, 0);
    sc_readahead_poll_counts(&p1, &k1);
    ok(r == 0 && k1 == k0 + 1, "readahead quiet: after a cut send, POLLOUT asks the kernel");
    while (recv(sv[0], big, sizeof big, 0) > 0) {
    }
    p.revents = 0;
    r = sc_ra_poll(&p, 1, 0);
    sc_readahead_poll_counts(&p0, &k0);
    struct pollfd p2 = {.fd = sv[1], .events = POLLOUT};
    int r2 = sc_ra_poll(&p2, 1, 0);
    sc_readahead_poll_counts(&p1, &k1);
    ok(r == 1 && r2 == 1 && (p2.revents & POLLOUT) && k1 == k0,
       "readahead quiet: once the kernel said POLLOUT, the next POLLOUT comes without it");
    /* quiet from a zero-timeout poll that found nothing; the owner's word only counts */
    p.events = POLLIN;
    p.revents = 0;
    sc_readahead_readable(sv[1], &owner);
    r = sc_ra_poll(&p, 1, 0); /* the kernel: nothing */
    send(sv[0], "ghi", 3, 0);
    int stranger = 0;
    sc_readahead_readable(sv[1], &stranger);
    p.revents = 0;
    sc_readahead_poll_counts(&p0, &k0);
    int r3 = sc_ra_poll(&p, 1, 0);
    sc_readahead_poll_counts(&p1, &k1);
    ok(r == 0 && r3 == 0 && k1 == k0,
       "readahead quiet: a poll that found nothing makes it quiet; another owner's word does not "
       "end it");
    /* POLLIN and POLLOUT at once: POLLOUT from what the last send did, POLLIN from the kernel */
    sc_readahead_readable(sv[1], &owner);
    ok(sc_ra_send(sv[1], "x", 1, 0) == 1, "readahead quiet: a send taken whole");
    struct pollfd both = {.fd = sv[1], .events = POLLIN | POLLOUT};
    sc_readahead_poll_counts(&p0, &k0);
    r = sc_ra_poll(&both, 1, 0);
    sc_readahead_poll_counts(&p1, &k1);
    ok(r == 1 && both.revents == (POLLIN | POLLOUT) && k1 == k0 + 1,
       "readahead quiet: POLLIN goes to the kernel while POLLOUT is answered here");
    ok(sc_ra_recv(sv[1], buf, sizeof buf, 0) == 3 && sc_ra_recv(sv[1], buf, sizeof buf, 0) < 0 &&
           errno == EAGAIN,
       "readahead quiet: the bytes that poll found, then nothing (quiet again)");
    both.revents = 0;
    sc_readahead_poll_counts(&p0, &k0);
    r = sc_ra_poll(&both, 1, 20);
    sc_readahead_poll_counts(&p1, &k1);
    ok(r == 1 && k1 == k0 + 1, "readahead quiet: a poll that may wait asks the kernel for all");
    sc_readahead_detach(sv[1], &owner);
    close(sv[0]);
    close(sv[1]);
}

/* a socketpair whose second end is attached (0), for the probe's cases; and its end */
static int probe_pair(int sv[2], int *owner)
{
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) != 0)
        return -1;
    sc_readahead_attach(sv[1], count_wake, owner);
    return 0;
}

static void probe_pair_end(int sv[2], int *owner)
{
    sc_readahead_detach(sv[1], owner);
    close(sv[0]);
    close(sv[1]);
}

/* "Readable?" with nothing held is answered by a read: a yes costs one system call and the read
 * that follows none; an end of file or an error found that way comes after the bytes, as the
 * socket itself gives them (an error once, then the end) */
static void test_readahead_probe(void)
{
    int sv[2], owner = 0;
    if (probe_pair(sv, &owner) != 0) {
        ok(0, "readahead probe: socketpair");
        return;
    }
    send(sv[0], "hello", 5, 0);
    unsigned long r0, k0, r1, k1, p0, kp0, p1, kp1;
    sc_readahead_counts(&r0, &k0);
    sc_readahead_poll_counts(&p0, &kp0);
    struct pollfd p = {.fd = sv[1], .events = POLLIN};
    int r = sc_ra_poll(&p, 1, 0);
    char buf[4096];
    ssize_t n = sc_ra_recv(sv[1], buf, sizeof buf, 0);
    sc_readahead_counts(&r1, &k1);
    sc_readahead_poll_counts(&p1, &kp1);
    ok(r == 1 && (p.revents & POLLIN) && n == 5 && memcmp(buf, "hello", 5) == 0 && kp1 - kp0 == 1 &&
           k1 == k0,
       "readahead probe: a poll that finds bytes holds them; the read after it is served");
    send(sv[0], "bye", 3, 0);
    shutdown(sv[0], SHUT_WR);
    p.revents = 0;
    r = sc_ra_poll(&p, 1, 0);
    n = sc_ra_recv(sv[1], buf, sizeof buf, 0);
    p.revents = 0;
    int r2 = sc_ra_poll(&p, 1, 0);
    ssize_t n2 = sc_ra_recv(sv[1], buf, sizeof buf, 0), n3 = sc_ra_recv(sv[1], buf, 10, 0);
    ok(r == 1 && n == 3 && r2 == 1 && (p.revents & POLLIN) && n2 == 0 && n3 == 0,
       "readahead probe: the end of file it finds comes after the bytes, and stays");
    probe_pair_end(sv, &owner);
    /* POLLOUT not known here (a send was cut short): the kernel answers both questions, and
     * says writable when it is, bytes to read or not */
    if (probe_pair(sv, &owner) != 0)
        return;
    static char big[1 << 16];
    int sends = 0;
    while (sc_ra_send(sv[1], big, sizeof big, 0) == (ssize_t)sizeof big && sends++ < 1000) {
    }
    while (recv(sv[0], big, sizeof big, 0) > 0) {
    }
    int withheld = 0;
    for (int round = 0; round < 5; round++) {
        send(sv[0], "12345", 5, 0);
        struct pollfd both = {.fd = sv[1], .events = POLLIN | POLLOUT};
        sc_ra_poll(&both, 1, 0);
        withheld += (both.revents & (POLLIN | POLLOUT)) != (POLLIN | POLLOUT);
        sc_ra_recv(sv[1], buf, sizeof buf, 0);
    }
    ok(withheld == 0, "readahead probe: not when POLLOUT is the kernel's to say: both come");
    probe_pair_end(sv, &owner);
    /* the peer closed with bytes of ours unread: the socket says ECONNRESET once */
    if (probe_pair(sv, &owner) != 0)
        return;
    send(sv[1], "x", 1, 0);
    close(sv[0]);
    sv[0] = -1; /* closed: probe_pair_end's close of it does nothing */
    p.fd = sv[1];
    p.revents = 0;
    r = sc_ra_poll(&p, 1, 0);
    errno = 0;
    n = sc_ra_recv(sv[1], buf, sizeof buf, 0);
    int err = errno;
    n2 = sc_ra_recv(sv[1], buf, sizeof buf, 0);
    ok(r == 1 && (p.revents & POLLIN) && n == -1 && err == ECONNRESET && n2 == 0,
       "readahead probe: an error it finds is read once, then the end of file");
    probe_pair_end(sv, &owner);
}

static void test_readahead_feed(void)
{
    int sv[2], owner = 0, other = 0;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) != 0) {
        ok(0, "feed: socketpair");
        return;
    }
    static unsigned char data[SC_RA_SIZE + 100000], got[sizeof data];
    pattern(data, sizeof data, 13);
    n_room = 0;
    ok(sc_readahead_feed(sv[1], &owner, data, 10) == -1, "feed: refused before attach");
    sc_readahead_attach(sv[1], count_wake, &owner);
    sc_readahead_on_room(sv[1], &owner, count_room, &n_room);
    ok(sc_readahead_feed(sv[1], &other, data, 10) == -1, "feed: refused to someone else");
    long put = sc_readahead_feed(sv[1], &owner, data, sizeof data);
    ok(put == SC_RA_SIZE && sc_readahead_held(sv[1]) == SC_RA_SIZE,
       "feed: takes as much as there is room for");
    struct pollfd p = {.fd = sv[1], .events = POLLIN | POLLOUT};
    int r1 = sc_ra_poll(&p, 1, 0);
    int out1 = p.revents & POLLOUT;
    p.revents = 0;
    int r2 = sc_ra_poll(&p, 1, 0);
    ok(r1 == 1 && !out1 && r2 == 1 && (p.revents & (POLLIN | POLLOUT)) == (POLLIN | POLLOUT),
       "feed: a poll not followed by a read asks the kernel the next time");
    size_t have = 0;
    int room_early = 0;
    while (have < sizeof data) {
        ssize_t n = sc_ra_recv(sv[1], got + have, 4096, 0);
        if (n <= 0)
            break;
        have += (size_t)n;
        if (n_room && (size_t)put < sizeof data) {
            room_early |= sc_readahead_held(sv[1]) > SC_RA_SIZE / 2;
            long more = sc_readahead_feed(sv[1], &owner, data + put, sizeof data - (size_t)put);
            put += more > 0 ? more : 0;
        }
    }
    ok(n_room == 1 && !room_early, "feed: the feeder hears once half the room is back");
    ok(have == sizeof data && memcmp(got, data, sizeof data) == 0,
       "feed: every byte fed comes out, in order, across the ring's end");
    sc_readahead_feed(sv[1], &owner, data, 5000);
    shutdown(sv[0], SHUT_WR);
    char buf[4096];
    ssize_t a = sc_ra_recv(sv[1], buf, sizeof buf, 0), b = sc_ra_recv(sv[1], buf, sizeof buf, 0),
            c = sc_ra_recv(sv[1], buf, sizeof buf, 0);
    ok(a == 4096 && b == 5000 - 4096 && c == 0, "feed: the kernel's end of file after them");
    sc_readahead_detach(sv[1], &owner);
    close(sv[0]);
    close(sv[1]);
}

static int n_news;
static void count_news(void *arg) { (*(int *)arg)++; }

/* the other way: libssh's sends go into a ring the feeder takes them from; POLLOUT is the
 * ring's room, not the socket's; a full ring wakes its owner once half of it is free; stopping
 * (or a close) sends what was not taken through the socket, before the end of file */
static void test_readahead_out(void)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) != 0) {
        ok(0, "out: socketpair");
        return;
    }
    static unsigned char data[SC_RA_SIZE + 70000], got[sizeof data];
    pattern(data, sizeof data, 11);
    int wakes = 0;
    n_news = 0;
    sc_readahead_attach(sv[1], count_wake, &wakes);
    ok(sc_readahead_out_room(sv[1], &wakes) == -1, "out: sends go to the kernel until asked");
    sc_readahead_out_feed(sv[1], &wakes, count_news, &n_news);
    ssize_t w = sc_ra_send(sv[1], data, sizeof data, MSG_NOSIGNAL);
    struct pollfd p = {.fd = sv[1], .events = POLLOUT};
    ok(w == SC_RA_SIZE && n_news == 1 && sc_ra_poll(&p, 1, 0) == 0 && p.revents == 0,
       "out: a send takes what the ring has room for; full, it is not writable (whatever the "
       "socket says)");
    ok(sc_ra_send(sv[1], data, 100, MSG_NOSIGNAL) == 0, "out: full, a send takes nothing (no -1)");
    size_t have = 0;
    size_t put = (size_t)w;
    int woke_early = 0;
    while (have < sizeof data) {
        const char *d;
        long n = sc_readahead_out_peek(sv[1], &wakes, &d);
        if (n <= 0) {
            if (put < sizeof data) {
                ssize_t more = sc_ra_send(sv[1], data + put, sizeof data - put, MSG_NOSIGNAL);
                put += more > 0 ? (size_t)more : 0;
                continue;
            }
            break;
        }
        if (n > 5000)
            n = 5000;
        memcpy(got + have, d, (size_t)n);
        have += (size_t)n;
        if (!wakes)
            woke_early |= have >= SC_RA_SIZE / 2 + 5000;
        sc_readahead_out_consume(sv[1], &wakes, (size_t)n);
        if (wakes && put < sizeof data) {
            ssize_t more = sc_ra_send(sv[1], data + put, sizeof data - put, MSG_NOSIGNAL);
            put += more > 0 ? (size_t)more : 0;
        }
    }
    ok(have == sizeof data && memcmp(got, data, sizeof data) == 0,
       "out: every byte sent comes out of the ring, in order, across its end");
    ok(wakes >= 1 && !woke_early, "out: the owner is woken once half the ring is free");
    p.revents = 0;
    ok(sc_ra_poll(&p, 1, 0) == 1 && p.revents == POLLOUT, "out: room again, writable");
    /* untaken bytes go through the socket when it stops, then the end of file */
    sc_ra_send(sv[1], data, 3000, MSG_NOSIGNAL);
    sc_readahead_out_feed(sv[1], &wakes, NULL, NULL);
    ok(sc_readahead_out_room(sv[1], &wakes) == -1, "out: stopped, sends go to the kernel");
    sc_ra_send(sv[1], data + 3000, 1000, MSG_NOSIGNAL);
    sc_readahead_detach(sv[1], &wakes);
    close(sv[1]);
    char buf[8192];
    ssize_t a = recv(sv[0], buf, sizeof buf, 0), b = recv(sv[0], buf + (a > 0 ? a : 0), 100, 0);
    ok(a == 4000 && memcmp(buf, data, 4000) == 0 && b == 0,
       "out: what was not taken, then later sends, reach the socket before its end of file");
    close(sv[0]);
    /* a send that fills the ring exactly: the owner is still woken when room comes back */
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) != 0)
        return;
    wakes = 0;
    sc_readahead_attach(sv[1], count_wake, &wakes);
    sc_readahead_out_feed(sv[1], &wakes, count_news, &n_news);
    w = sc_ra_send(sv[1], data, SC_RA_SIZE, MSG_NOSIGNAL);
    p.fd = sv[1];
    p.revents = 0;
    int full = sc_ra_poll(&p, 1, 0) == 0;
    const char *d;
    long n = sc_readahead_out_peek(sv[1], &wakes, &d);
    sc_readahead_out_consume(sv[1], &wakes, (size_t)n);
    ok(w == SC_RA_SIZE && full && n == SC_RA_SIZE && wakes == 1,
       "out: a send that fills the ring exactly, then a drain, wakes the owner");
    sc_readahead_detach(sv[1], &wakes);
    close(sv[0]);
    close(sv[1]);
}

/* libssh's own entry to its random bytes (exported, not in its public headers) */
int ssh_get_random(void *where, int len, int strong);

static EVP_PKEY *x25519_new(void)
{
    EVP_PKEY *k = NULL;
    EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_id(EVP_PKEY_X25519, NULL);
    if (c && EVP_PKEY_keygen_init(c) == 1)
        EVP_PKEY_keygen(c, &k);
    EVP_PKEY_CTX_free(c);
    return k;
}

static int same_public(EVP_PKEY *a, EVP_PKEY *b)
{
    unsigned char pa[32], pb[32];
    size_t la = sizeof pa, lb = sizeof pb;
    return a && b && EVP_PKEY_get_raw_public_key(a, pa, &la) == 1 &&
           EVP_PKEY_get_raw_public_key(b, pb, &lb) == 1 && la == lb && memcmp(pa, pb, la) == 0;
}

/* libssh's raw private key imports: an ephemeral X25519 key whose bytes were taken out is given
 * back once, an Ed25519 identity each time (and signs as itself), the oldest waiting key goes
 * when 64 wait, and a clear empties the cache */
static void test_pkeycache(void)
{
    ok(sc_pkeycache_install() == 1, "pkeycache: libssh's import slots patched");
    sc_pkeycache_clear();
    unsigned long h0, m0, h1, m1;
    EVP_PKEY *made = x25519_new();
    unsigned char raw[32];
    size_t len = sizeof raw;
    int got = sc_pkeycache_get_raw_private_key(made, raw, &len);
    sc_pkeycache_counts(&h0, &m0);
    EVP_PKEY *back = sc_pkeycache_new_raw_private_key(EVP_PKEY_X25519, NULL, raw, len);
    EVP_PKEY *again = sc_pkeycache_new_raw_private_key(EVP_PKEY_X25519, NULL, raw, len);
    sc_pkeycache_counts(&h1, &m1);
    ok(got == 1 && len == 32 && back == made && again && again != made &&
           same_public(made, again) && h1 - h0 == 1 && m1 - m0 == 1,
       "pkeycache: an ephemeral key is given back once, then imported as before");
    EVP_PKEY_free(back);
    EVP_PKEY_free(again);
    EVP_PKEY_free(made);
    /* the oldest of 65 waiting keys went */
    EVP_PKEY *keys[65];
    unsigned char raws[65][32];
    for (int i = 0; i < 65; i++) {
        keys[i] = x25519_new();
        size_t l = 32;
        sc_pkeycache_get_raw_private_key(keys[i], raws[i], &l);
    }
    EVP_PKEY *last = sc_pkeycache_new_raw_private_key(EVP_PKEY_X25519, NULL, raws[64], 32);
    EVP_PKEY *first = sc_pkeycache_new_raw_private_key(EVP_PKEY_X25519, NULL, raws[0], 32);
    EVP_PKEY *second = sc_pkeycache_new_raw_private_key(EVP_PKEY_X25519, NULL, raws[1], 32);
    ok(last == keys[64] && first != keys[0] && same_public(first, keys[0]) && second == keys[1],
       "pkeycache: 64 ephemeral keys wait at most, the oldest goes first");
    EVP_PKEY_free(last);
    EVP_PKEY_free(first);
    EVP_PKEY_free(second);
    for (int i = 0; i < 65; i++)
        EVP_PKEY_free(keys[i]);
    /* an identity: imported once, then the same key each time; it signs as itself */
    unsigned char seed[32];
    for (int i = 0; i < 32; i++)
        seed[i] = (unsigned char)(i * 7 + 1);
    EVP_PKEY *id1 = sc_pkeycache_new_raw_private_key(EVP_PKEY_ED25519, NULL, seed, 32);
    EVP_PKEY *id2 = sc_pkeycache_new_raw_private_key(EVP_PKEY_ED25519, NULL, seed, 32);
    EVP_PKEY *plain = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, seed, 32);
    unsigned char sig[64], msg[] = "exchange hash";
    size_t siglen = sizeof sig;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int signed_ok = md && EVP_DigestSignInit(md, NULL, NULL, NULL, id2) == 1 &&
                    EVP_DigestSign(md, sig, &siglen, msg, sizeof msg) == 1;
    EVP_MD_CTX_free(md);
    md = EVP_MD_CTX_new();
    int verified = md && EVP_DigestVerifyInit(md, NULL, NULL, NULL, plain) == 1 &&
                   EVP_DigestVerify(md, sig, siglen, msg, sizeof msg) == 1;
    EVP_MD_CTX_free(md);
    ok(id1 && id1 == id2 && signed_ok && verified && same_public(id1, plain),
       "pkeycache: an identity is imported once and signs as itself");
    EVP_PKEY_free(id1);
    EVP_PKEY_free(id2);
    sc_pkeycache_clear();
    sc_pkeycache_counts(&h0, &m0);
    EVP_PKEY *id3 = sc_pkeycache_new_raw_private_key(EVP_PKEY_ED25519, NULL, seed, 32);
    EVP_PKEY *other = sc_pkeycache_new_raw_private_key(EVP_PKEY_X448, NULL, seed, 32);
    sc_pkeycache_counts(&h1, &m1);
    ok(id3 && same_public(id3, plain) && h1 == h0 && m1 - m0 == 1,
       "pkeycache: after a clear the identity is imported again; other types are not looked up");
    EVP_PKEY_free(id3);
    EVP_PKEY_free(other);
    EVP_PKEY_free(plain);
    sc_pkeycache_clear();
}

/* libssh's random bytes through randbuf.c: its requests are served from the pool, a large one is
 * not, no byte is given twice (two draws differ), and a forked child does not give out the bytes
 * its parent will */
static void test_randbuf(void)
{
    ok(sc_randbuf_install() == 1, "randbuf: libssh's RAND_bytes slot patched");
    unsigned long given0, fills0, given1, fills1;
    unsigned char a[32], b[32], big[1000];
    sc_randbuf_counts(&given0, &fills0);
    ok(ssh_get_random(a, sizeof a, 0) == 1 && ssh_get_random(b, sizeof b, 0) == 1,
       "randbuf: libssh's requests succeed");
    sc_randbuf_counts(&given1, &fills1);
    ok(given1 - given0 == 2 * sizeof a && fills1 - fills0 <= 1,
       "randbuf: libssh's small requests are served from a pool");
    ok(memcmp(a, b, sizeof a) != 0, "randbuf: two draws differ");
    ok(ssh_get_random(big, sizeof big, 0) == 1, "randbuf: a large request succeeds");
    sc_randbuf_counts(&given0, &fills0);
    ok(given0 == given1, "randbuf: a large request goes to libcrypto itself");
    for (int i = 0; i < 300; i++) /* more than a pool's worth: it is filled again */
        ssh_get_random(a, sizeof a, 0);
    sc_randbuf_counts(&given1, &fills1);
    ok(fills1 > fills0, "randbuf: an exhausted pool is filled again");
    int fds[2];
    if (pipe(fds) != 0) {
        ok(0, "randbuf: pipe");
        return;
    }
    ssh_get_random(a, 1, 0); /* the pool has bytes now */
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        int good = ssh_get_random(a, sizeof a, 0) == 1 && write(fds[1], a, sizeof a) == sizeof a;
        _exit(good ? 0 : 1);
    }
    ssh_get_random(b, sizeof b, 0);
    int st = 0;
    ssize_t n = pid > 0 ? read(fds[0], a, sizeof a) : -1;
    if (pid > 0)
        waitpid(pid, &st, 0);
    close(fds[0]);
    close(fds[1]);
    ok(n == sizeof a && WIFEXITED(st) && WEXITSTATUS(st) == 0 && memcmp(a, b, sizeof a) != 0,
       "randbuf: a forked child's bytes are not its parent's");
}

static void test_connect_failures(sc_loop *loop)
{
    sc_err e = connect_and_wait(loop, "127.0.0.1", 1, 5);
    ok(e.code == SC_ECONNECT && e.hop == 1 && strcmp(e.stage, "connect") == 0 &&
           strcmp(e.reason, "refused") == 0 && strstr(e.msg, "hop 1 nobody@127.0.0.1:1: connect:"),
       "refused port: ECONNECT at stage connect, naming the hop");
    e = connect_and_wait(loop, "no-such-host.invalid", 22, 5);
    ok(e.code == SC_ECONNECT && strcmp(e.stage, "resolve") == 0,
       "unresolvable name: ECONNECT at resolve");
    ok(loop->live_sessions == 0 && loop->n_live_ops == 0, "nothing left alive");
}

int main(void)
{
    ssh_init();
    sc_loop *loop = sc_loop_new();
    test_buf();
    test_err();
    test_names();
    test_quoting();
    test_scp_records();
    test_sftp_wire();
    test_socks5();
    test_known_hosts();
    test_readahead();
    test_readahead_quiet();
    test_readahead_probe();
    test_readahead_feed();
    test_readahead_out();
    test_randbuf();
    test_pkeycache();
    test_sleep(loop);
    test_block_hooks(loop);
    test_connect_failures(loop);
    sc_loop_free(loop);
    ssh_finalize();
    printf("1..%d\n", n_test);
    return n_fail ? 1 : 0;
}
